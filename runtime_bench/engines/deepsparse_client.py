"""The DeepSparse engine: runs an `export.deepsparse` artifact in DeepSparse 1.8.0, out of process.

DeepSparse 1.8.0 needs Python ≤ 3.11, onnx < 1.15 and numpy < 2, so it lives in ``.venv-deepsparse``
(``bash scripts/setup-deepsparse.sh``) and runs `deepsparse_worker.py` there as a subprocess; this class
speaks the worker's stdin/stdout protocol (JSON header line + ``.npy`` payload, see the worker's docstring).

- interpreter: ``$SLIMPACK_DEEPSPARSE_PYTHON``, default ``.venv-deepsparse/bin/python`` beside the environment
  slimpack runs in (``scripts/setup-deepsparse.sh`` makes it there)
- cores: the ``threads`` argument, else ``$SLIMPACK_DEEPSPARSE_THREADS``, else DeepSparse's default (all)
- ``kv_cache``: ``internal`` (DeepSparse keeps the cache; fastest decode), ``external`` (through numpy), or
  ``decode-only`` (internal, one compiled graph: prompts go through the decode graph token by token — the mode
  for a model whose weights fit memory once, the worker's ``--decode-only``)
- ``lazy``: compile each graph on first use instead of in `load`

A DeepSparse abort (it asserts on graphs it cannot compile and kills the process) becomes a one-line
`SlimpackError` with its ``Assertion at …`` line. Per-request timings of the last response (``prefill_s``,
``decode_s`` of ``generate``) are in ``last``; compile times and supported-op fractions in ``info``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Any, NoReturn

import numpy as np

from export.deepsparse import CONFIG_FILE
from prune.errors import SlimpackError
from prune.io import die_with_parent, external_python
from runtime_bench.engines.base import Artifact, EngineBase

WORKER = Path(__file__).with_name("deepsparse_worker.py")


def deepsparse_python() -> Path:
    """The interpreter of the DeepSparse environment, or a one-line `SlimpackError` when it is missing."""
    return external_python("DeepSparse", "SLIMPACK_DEEPSPARSE_PYTHON", ".venv-deepsparse")


def check_graphs(artifact: Artifact) -> None:
    """One line unless the graphs that the worker compiles, as the artifact's ``deepsparse.json`` names them, lie
    inside the artifact (`Artifact.file`): the worker opens them without asking."""
    try:
        config = json.loads(artifact.file(CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SlimpackError(
            f"{str(artifact.path / CONFIG_FILE)!r} cannot be read ({type(err).__name__}); export the artifact again"
        ) from None
    for graph in ("prefill", "prompt", "decode"):
        artifact.file(config.get(graph) if isinstance(config, dict) else None, CONFIG_FILE)


KV_CACHES: dict[str, list[str]] = {"internal": [], "external": ["--external-cache"], "decode-only": ["--decode-only"]}


class DeepSparseEngine(EngineBase):
    """`Engine` for ``format: deepsparse`` artifacts (prefill, prompt and decode graphs: `export.deepsparse`)."""

    name = "deepsparse"
    max_batch = 1
    batch_note = "the exported graphs have a static batch of 1"

    def __init__(self, threads: int | None = None, kv_cache: str = "internal", lazy: bool = False) -> None:
        if kv_cache not in KV_CACHES:
            raise SlimpackError(f"kv_cache must be one of {', '.join(KV_CACHES)}, not {kv_cache!r}")
        env_threads = os.environ.get("SLIMPACK_DEEPSPARSE_THREADS")
        self.threads = threads if threads is not None else (int(env_threads) if env_threads else None)
        self.kv_cache = kv_cache
        self.lazy = lazy
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr: IO[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.last: dict[str, Any] = {}  # header of the last response (timings of generate / prefill)

    @classmethod
    def unavailable(cls) -> str | None:
        """Why DeepSparse cannot run here (its environment is missing), or None."""
        try:
            deepsparse_python()
        except SlimpackError as err:
            return str(err)
        return None

    # --- lifecycle --------------------------------------------------------------------------------

    def load(self, artifact: Artifact) -> None:
        python = deepsparse_python()
        check_graphs(artifact)
        self.close()
        cmd = [str(python), str(WORKER), str(artifact.path)]
        if self.threads is not None:
            cmd += ["--threads", str(self.threads)]
        cmd += KV_CACHES[self.kv_cache]
        if self.lazy:
            cmd.append("--lazy")
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     preexec_fn=die_with_parent())  # no worker outlives a killed run  # fmt: skip
        header, _ = self._receive()
        self.info = header

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                if proc.poll() is None:
                    self._send(proc, {"op": "close"})
                    proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None

    def __del__(self) -> None:  # a forgotten close() must not leave the worker running
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # --- Engine -------------------------------------------------------------------------------------

    def context_limit(self) -> int | None:
        """The compiled KV cache's length (a longer sequence does not fit)."""
        return int(self.info["cache_len"]) if "cache_len" in self.info else None

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(input_ids, dtype=np.int64)
        if ids.ndim != 2:
            raise SlimpackError(f"input_ids must be int64 [B, T], got shape {list(ids.shape)}")
        rows = [self.request({"op": "logits"}, ids[b : b + 1])[1] for b in range(ids.shape[0])]
        return np.concatenate(rows).astype(np.float32, copy=False)

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> np.ndarray:
        ids = np.asarray(input_ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[0] != 1:
            raise SlimpackError(f"generate takes input_ids int64 [1, T], got shape {list(ids.shape)}")
        _, tokens = self.request({"op": "generate", "max_new_tokens": int(max_new_tokens)}, ids)
        return np.asarray(tokens, dtype=np.int64)

    def time_generation(self, input_ids: np.ndarray, tokens: int) -> tuple[float, list[float]]:
        """Seconds of the prompt (``prompt.onnx`` chunks) and of each of ``tokens`` decode steps, timed in the
        worker (for `runtime_bench.latency`)."""
        self.generate(input_ids, tokens + 1)
        return float(self.last["prefill_s"]), [float(s) for s in self.last["decode_s"]]

    def prefill_seconds(self, input_ids: np.ndarray) -> float:
        """Seconds of one run of the prefill graph (measured in the worker, no logits transferred)."""
        header, _ = self.request({"op": "prefill"}, np.asarray(input_ids, dtype=np.int64))
        return float(header["seconds"])

    # --- protocol -----------------------------------------------------------------------------------

    def request(self, header: dict[str, Any], payload: np.ndarray | None = None) -> tuple[dict[str, Any], Any]:
        if self.proc is None:
            raise SlimpackError("the DeepSparse engine is not loaded; call load(artifact) first")
        try:
            self._send(self.proc, header, payload)
        except OSError:
            self._died()
        response, data = self._receive()
        self.last = response
        return response, data

    @staticmethod
    def _send(proc: subprocess.Popen[bytes], header: dict[str, Any], payload: np.ndarray | None = None) -> None:
        data = b""
        if payload is not None:
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(payload), allow_pickle=False)
            data = buf.getvalue()
        assert proc.stdin is not None
        proc.stdin.write(
            json.dumps({**header, "payload": payload is not None, "npy_bytes": len(data)}).encode() + b"\n"
        )
        proc.stdin.write(data)
        proc.stdin.flush()

    def _receive(self) -> tuple[dict[str, Any], np.ndarray | None]:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self._died()
        header = json.loads(line)
        data = None
        size = int(header.get("npy_bytes", 0))
        if size:
            raw = self.proc.stdout.read(size)
            if len(raw) != size:
                self._died()
            data = np.load(io.BytesIO(raw), allow_pickle=False)
        if not header.get("ok"):
            if header.get("op") == "ready":
                self._died(header.get("error"))
            raise SlimpackError(f"DeepSparse worker: {header.get('error', 'unknown error')}")
        return header, data

    def _died(self, error: str | None = None) -> NoReturn:
        """The worker exited (or cannot start): raise with the last line it printed (DeepSparse aborts print
        'Assertion at ...' and a backtrace)."""
        proc, self.proc = self.proc, None
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        lines: list[str] = []
        if self.stderr is not None:
            self.stderr.seek(0)
            lines = [ln.strip() for ln in self.stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        reason = (
            error
            or next((ln for ln in lines if ln.startswith("Assertion at")), None)
            or (lines[-1] if lines else "no output")
        )
        raise SlimpackError(f"DeepSparse worker exited (code {code}): {reason}")
