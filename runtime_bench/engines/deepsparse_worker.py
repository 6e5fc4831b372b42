"""DeepSparse worker: compiles an artifact of `export.deepsparse` and serves requests over stdin/stdout.

Run by `runtime_bench.engines.deepsparse_client` with the python of ``.venv-deepsparse`` (DeepSparse 1.8.0 needs
Python ≤ 3.11, onnx < 1.15 and numpy < 2, so it cannot live in the main environment):

    .venv-deepsparse/bin/python runtime_bench/engines/deepsparse_worker.py ARTIFACT_DIR [--threads N]

Imports only numpy, deepsparse and the standard library.

Protocol (binary, on the process's original stdout; whatever DeepSparse prints goes to stderr): a message
is one JSON header line, then, when the header has ``"payload": true``, one ``.npy`` payload (``np.save``;
read with ``allow_pickle=False``) of ``npy_bytes`` bytes. The worker compiles the graphs (``--lazy``: on
first use), sends ``{"ok": true, "op": "ready", ...}`` (compile seconds, fraction of supported ops, shapes),
then answers each request with exactly one response:

- ``{"op": "logits"}`` + int64 [1, T] → float32 [1, T, V]: ``prefill.onnx`` on the right-padded ids when
  T ≤ prefill_len (the attention is causal: padding after the last token changes nothing before it), else
  ``prompt.onnx`` chunks through the KV cache (T ≤ cache_len).
- ``{"op": "generate", "max_new_tokens": N}`` + int64 [1, T] → int64 [N]: greedy (plain argmax, no stop
  token); the prompt in ``prompt.onnx`` chunks, then one ``decode.onnx`` run per token. The header reports
  ``prefill_s`` (the prompt) and ``decode_s`` (one entry per decode step).
- ``{"op": "prefill"}`` + int64 [1, T ≤ prefill_len] → no payload; ``seconds`` of one ``prefill.onnx`` run.
- ``{"op": "info"}`` → the ready header again; ``{"op": "close"}`` → ``{"ok": true}``, then the worker exits.

A failed request is answered with ``{"ok": false, "error": "..."}`` and the worker keeps serving.

KV cache (DeepSparse's TextGeneration layout): a cached graph with t new tokens reads the last L-t cache
entries (blank ones first while there are fewer) as ``past_key_values``, and ``attention_mask`` [1, L] marks
the valid ones; the t new entries are appended. Right-padding a prompt chunk appends padding entries too;
they stay masked out. Keys are cached after rope, so an entry's position never changes. By default DeepSparse
keeps the cache itself (``cached_outputs``, the past inputs are empty batch-0 arrays, as its own text
pipeline does); ``--external-cache`` passes it through numpy instead (``present`` → next ``past``).

``--decode-only`` compiles ``decode.onnx`` alone and feeds every prompt through it, one token at a time, with
the internal cache. DeepSparse holds each compiled graph's own copy of the weights, so this is the one mode in
which a model whose sparse weights fit memory only once (a 50 % LLaMA-2-7B on 24 GB: docs/results/scale.md)
runs at all; ``logits`` and ``prefill`` use the same path.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

CONFIG_FILE = "deepsparse.json"


def read_message(stream: BinaryIO) -> tuple[dict[str, Any], np.ndarray | None] | None:
    """One message, or None at end of stream. The header's ``npy_bytes`` sizes the payload, so that it is
    read exactly (np.load cannot read from a pipe: it seeks)."""
    line = stream.readline()
    if not line:
        return None
    header = json.loads(line)
    size = int(header.get("npy_bytes", 0))
    if not size:
        return header, None
    data = stream.read(size)
    if len(data) != size:
        raise EOFError(f"payload cut short: {len(data)} of {size} bytes")
    return header, np.load(io.BytesIO(data), allow_pickle=False)


def write_message(stream: BinaryIO, header: dict[str, Any], payload: np.ndarray | None = None) -> None:
    data = b""
    if payload is not None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(payload), allow_pickle=False)
        data = buf.getvalue()
    stream.write(json.dumps({**header, "payload": payload is not None, "npy_bytes": len(data)}).encode() + b"\n")
    stream.write(data)
    stream.flush()


class Sequence:
    """One sequence's KV cache: which cache entries are valid (oldest first, the last ``cache_len`` kept), and
    either DeepSparse's internal cache object or (external) the entries themselves as numpy arrays."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv
        self.valid = np.zeros(0, np.int64)
        self.window: list[np.ndarray] | None = None  # external: [1, Hkv, len(valid), D] per cache tensor


class Runner:
    """The compiled graphs (`compile_all` at start, or each on first use) and the greedy loop over them.

    Internal cache (default): ``logits`` runs ``prefill.onnx`` (T ≤ prefill_len) or ``prompt.onnx`` chunks;
    ``generate`` runs the prompt in ``prompt.onnx`` chunks, then ``decode.onnx``, both compiled with
    ``cached_outputs`` so that DeepSparse keeps the cache. ``--external-cache``: ``prefill.onnx`` then
    ``decode.onnx`` with the cache passed through numpy (the plain engine API; a cross-check).
    """

    def __init__(
        self, artifact: Path, threads: int | None, external_cache: bool = False, decode_only: bool = False
    ) -> None:
        self.artifact = artifact
        self.threads = threads
        self.config = json.loads((artifact / CONFIG_FILE).read_text())
        self.prefill_len = int(self.config["prefill_len"])
        self.prompt_len = int(self.config["prompt_len"])
        self.cache_len = int(self.config["cache_len"])
        self.kv_heads = int(self.config["kv_heads"])
        self.head_dim = int(self.config["head_dim"])
        self.n_cache = 2 * int(self.config["layers"])
        self.internal = not external_cache
        self.decode_only = decode_only and self.internal  # one compiled graph: prompts go through decode.onnx too
        self.chunk_graph, self.chunk = ("decode", 1) if self.decode_only else ("prompt", self.prompt_len)
        self.engines: dict[str, Any] = {}
        self.compile_s: dict[str, float] = {}
        self.supported: dict[str, float] = {}

    def engine(self, graph: str) -> Any:
        if graph not in self.engines:
            from deepsparse import Engine

            cached = None
            if self.internal and graph != "prefill":
                cached = [name.startswith("present.") for name in self.config["outputs"]]
            start = time.perf_counter()
            engine = Engine(
                str(self.artifact / self.config[graph]), batch_size=1, num_cores=self.threads, cached_outputs=cached
            )
            self.compile_s[graph] = time.perf_counter() - start
            self.supported[graph] = engine.fraction_of_supported_ops
            self.engines[graph] = engine
        return self.engines[graph]

    def compile_all(self) -> None:
        graphs = ("prefill", "prompt", "decode") if self.internal else ("prefill", "decode")
        for graph in ("decode",) if self.decode_only else graphs:
            self.engine(graph)

    def info(self) -> dict[str, Any]:
        cores = next(iter(self.engines.values())).num_cores if self.engines else self.threads
        return {
            "threads": cores,
            "prefill_len": self.prefill_len,
            "prompt_len": self.prompt_len,
            "cache_len": self.cache_len,
            "kv_cache": "decode-only" if self.decode_only else "internal" if self.internal else "external",
            "compile_s": self.compile_s,
            "fraction_of_supported_ops": self.supported,
        }

    # --- graph runs -------------------------------------------------------------------------------

    def new_sequence(self) -> Sequence:
        if not self.internal:
            return Sequence(None)
        from deepsparse.engine import LIB

        return Sequence(LIB.kv_cache(0, 0))  # no tokens yet, none frozen

    def _past(self, seq: Sequence, slots: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Validity and inputs of the last ``slots`` cache entries (blank ones first when there are fewer)."""
        if np.any(seq.valid[: max(0, seq.valid.size - slots)]):
            raise ValueError(f"the KV cache is full (cache length {self.cache_len})")
        valid = seq.valid[-slots:] if slots else seq.valid[:0]
        mask = np.concatenate([np.zeros(slots - valid.size, np.int64), valid])
        if self.internal:  # empty batch-0 inputs: the engine reads its own cache
            return mask, [np.zeros((0, self.kv_heads, slots, self.head_dim), np.float32)] * self.n_cache
        past = []
        for w in seq.window or [np.zeros((1, self.kv_heads, 0, self.head_dim), np.float32)] * self.n_cache:
            p = np.zeros((1, self.kv_heads, slots, self.head_dim), np.float32)
            n = min(slots, w.shape[2])
            if n:
                p[:, :, slots - n :] = w[:, :, w.shape[2] - n :]
            past.append(p)
        return mask, past

    def _cached_run(self, graph: str, seq: Sequence, ids: np.ndarray, start: int) -> np.ndarray:
        """``ids`` [n ≤ t] at positions start.. through a cached graph of t new tokens (right-padded; the padding
        entries stay masked out) → logits [n, V]; appends the t entries to ``seq``."""
        engine = self.engine(graph)
        t = self.prompt_len if graph == "prompt" else 1
        n = ids.shape[0]
        padded = np.zeros((1, t), np.int64)
        padded[0, :n] = ids
        positions = np.minimum(np.arange(start, start + t, dtype=np.int64), self.cache_len - 1)[None]
        mask, past = self._past(seq, self.cache_len - t)
        feed = [padded, np.concatenate([mask, np.ones(t, np.int64)])[None], positions, *past]
        if seq.kv is not None:
            logits, *_ = engine._eng_net.execute_list_out(feed, seq.kv)  # as DeepSparse's text pipeline does
        else:
            logits, *present = engine.run(feed, val_inp=False)
            seq.window = present  # [1, Hkv, L, D]: the past slots + the t new entries
        new = np.concatenate([np.ones(n, np.int64), np.zeros(t - n, np.int64)])
        seq.valid = np.concatenate([seq.valid, new])[-self.cache_len :]
        if not np.isfinite(logits[0, :n]).all():
            raise FloatingPointError(f"DeepSparse returned non-finite logits from {graph}.onnx")
        return logits[0, :n]

    def prefill(self, ids: np.ndarray, seq: Sequence | None = None) -> np.ndarray:
        """``prefill.onnx`` on ids [n ≤ prefill_len] (right-padded) → logits [n, V]; with ``seq`` (external
        cache), its n entries become the cache."""
        n = ids.shape[0]
        padded = np.zeros((1, self.prefill_len), np.int64)
        padded[0, :n] = ids
        logits, *present = self.engine("prefill").run([padded], val_inp=False)
        if seq is not None:
            seq.window = [np.ascontiguousarray(p[:, :, :n]) for p in present]
            seq.valid = np.ones(n, np.int64)
        return logits[0, :n]

    def decode_step(self, seq: Sequence, token: int, position: int) -> np.ndarray:
        return self._cached_run("decode", seq, np.array([token], np.int64), position)[0]

    def run_prompt(self, ids: np.ndarray) -> tuple[np.ndarray, Sequence, float]:
        """Every position's logits [n, V] of ``ids``, the cache after them, and the seconds it took."""
        n = ids.shape[0]
        seq = self.new_sequence()
        begin = time.perf_counter()
        if self.internal:
            size = self.chunk
            rows = [self._cached_run(self.chunk_graph, seq, ids[i : i + size], i) for i in range(0, n, size)]
        else:
            head = min(n, self.prefill_len)
            rows = [self.prefill(ids[:head], seq)]
            rows += [self.decode_step(seq, int(ids[pos]), pos)[None] for pos in range(head, n)]
        return np.concatenate(rows), seq, time.perf_counter() - begin

    def check_fits(self, n: int, steps: int) -> None:
        """Fail before any work if a prompt of n tokens and ``steps`` decode steps overflow the cache."""
        if self.internal:
            entries = -(-n // self.chunk) * self.chunk  # whole chunks
        else:
            entries = min(n, self.prefill_len) + max(0, n - self.prefill_len)
        # the last decode step must still see the first entry among its cache_len - 1 past slots
        if steps and entries + steps - 1 > self.cache_len - 1:
            raise ValueError(
                f"{n} prompt tokens + {steps} decode steps do not fit the artifact's KV cache "
                f"(cache_len {self.cache_len}, prompt chunks of {self.chunk})"
            )
        if not steps and n > self.prefill_len and entries > self.cache_len:
            raise ValueError(f"{n} tokens exceed the artifact's cache length {self.cache_len}")

    # --- ops ----------------------------------------------------------------------------------------

    def logits(self, ids: np.ndarray) -> np.ndarray:
        ids = _one_row(ids)
        if ids.shape[0] <= self.prefill_len and not self.decode_only:
            return self.prefill(ids)[None]
        self.check_fits(ids.shape[0], 0)
        return self.run_prompt(ids)[0][None]

    def generate(self, ids: np.ndarray, max_new_tokens: int) -> tuple[np.ndarray, dict[str, Any]]:
        ids = _one_row(ids)
        if max_new_tokens < 0:
            raise ValueError("max_new_tokens must be ≥ 0")
        if max_new_tokens == 0:
            return np.zeros(0, np.int64), {"prefill_s": 0.0, "decode_s": []}
        n = ids.shape[0]
        self.check_fits(n, max_new_tokens - 1)
        logits, seq, prompt_s = self.run_prompt(ids)
        tokens = [int(np.argmax(logits[-1]))]
        decode_s = []
        for pos in range(n, n + max_new_tokens - 1):
            start = time.perf_counter()
            row = self.decode_step(seq, tokens[-1], pos)
            tokens.append(int(np.argmax(row)))
            decode_s.append(time.perf_counter() - start)
        return np.array(tokens, np.int64), {"prefill_s": prompt_s, "decode_s": decode_s}

    def prefill_seconds(self, ids: np.ndarray) -> float:
        ids = _one_row(ids)
        if self.decode_only:  # the prompt through decode.onnx, token by token
            self.check_fits(ids.shape[0], 0)
            return self.run_prompt(ids)[2]
        if ids.shape[0] > self.prefill_len:
            raise ValueError(f"{ids.shape[0]} tokens exceed the prefill graph's {self.prefill_len}")
        self.engine("prefill")
        start = time.perf_counter()
        self.prefill(ids)
        return time.perf_counter() - start


def _one_row(ids: np.ndarray | None) -> np.ndarray:
    if ids is None:
        raise ValueError("this op needs an int64 [1, T] payload")
    ids = np.asarray(ids)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"input_ids must be an integer array [1, T], got {ids.dtype} {list(ids.shape)}")
    return ids.astype(np.int64)


def _generate(runner: Runner, header: dict[str, Any], payload: Any) -> tuple[dict[str, Any], Any]:
    tokens, timing = runner.generate(payload, int(header["max_new_tokens"]))
    return timing, tokens


# op → handler(runner, header, payload) -> (extra header fields, payload or None)
OPS: dict[str, Callable[[Runner, dict[str, Any], Any], tuple[dict[str, Any], Any]]] = {
    "logits": lambda runner, header, payload: ({}, runner.logits(payload)),
    "generate": _generate,
    "prefill": lambda runner, header, payload: ({"seconds": runner.prefill_seconds(payload)}, None),
    "info": lambda runner, header, payload: (runner.info(), None),
}


def serve(runner: Runner, inp: BinaryIO, out: BinaryIO) -> None:
    write_message(out, {"ok": True, "op": "ready", **runner.info()})
    while True:
        try:
            message = read_message(inp)
        except Exception as err:  # noqa: BLE001 - a bad message is answered, not fatal
            write_message(out, {"ok": False, "error": f"bad request: {type(err).__name__}: {err}"})
            continue
        if message is None:
            return
        header, payload = message
        op = header.get("op")
        if op == "close":
            write_message(out, {"ok": True, "op": "close"})
            return
        try:
            handler = OPS.get(op)
            if handler is None:
                raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}, close")
            fields, result = handler(runner, header, payload)
            write_message(out, {"ok": True, "op": op, **fields}, result)
        except Exception as err:  # noqa: BLE001 - reported to the client
            traceback.print_exc(file=sys.stderr)
            write_message(out, {"ok": False, "op": op, "error": f"{type(err).__name__}: {err}"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--threads", type=int, default=None, help="cores for DeepSparse (default: all)")
    parser.add_argument(
        "--external-cache", action="store_true", help="pass the KV cache through numpy instead of DeepSparse's own"
    )
    parser.add_argument("--lazy", action="store_true", help="compile each graph on first use, not at start")
    parser.add_argument(
        "--decode-only", action="store_true", help="compile decode.onnx alone; prompts go through it token by token"
    )
    args = parser.parse_args(argv)
    # the protocol owns the original stdout; everything printed later (DeepSparse's banner, C++ logs) → stderr
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    inp = sys.stdin.buffer
    try:
        runner = Runner(args.artifact, args.threads, args.external_cache, args.decode_only)
        if not args.lazy:
            runner.compile_all()
    except Exception as err:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        write_message(out, {"ok": False, "op": "ready", "error": f"{type(err).__name__}: {err}"})
        return 1
    serve(runner, inp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
