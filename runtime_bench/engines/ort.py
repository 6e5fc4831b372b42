"""onnxruntime (CPU) engine for the KV-cache ONNX layout of `export.onnx_kv` (fp32 ``onnx`` and ``onnx-int4``).

Prefill and decode run the same graph: prefill with an empty past (``[batch, kv_heads, 0, head_dim]``), then
one token per step with the ``present`` tensors of the last step fed back as ``past_key_values``.

Weights (``weights``): onnxruntime memory-maps an external data file (``model.onnx.data``) and, by default, copies
every fp32 MatMul weight into its own prepacked layout — a second copy of the weights in private memory. ``mapped``
turns prepacking off: the weights are read in place from the mapped file, whose pages the kernel may drop and read
again, so the process's own memory stays small, and it runs slower (SmolLM2 fp32 on an AVX-512 EPYC, 2 threads:
prefill of 256 tokens 0.46 s against 0.40 s; one token 30 ms against 19 ms). ``packed`` keeps prepacking: the
benchmarks' setting (`runtime_bench.engines.BENCH_ENGINE_OPTIONS`). ``auto`` (the default) maps an fp32 export
(``export.json``'s ``weights``) whose data file holds at least `prune.store.STREAM_SAVING` (1 GiB) — the rule by
which a stage streams its blocks — and packs otherwise: a model without a data file is in memory either way, and
``MatMulNBits`` (``onnx-int4``) needs its prepacked layout (unpacked: one token 15× slower).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from export.onnx_kv import data_file
from prune.errors import SlimpackError
from prune.store import STREAM_SAVING, gib
from runtime_bench.engines.base import Artifact, EngineBase, greedy_decode

log = logging.getLogger(__name__)

WEIGHTS = ("auto", "packed", "mapped")


def session_options(threads: int | None, mapped: bool = False) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if mapped:
        options.add_session_config_entry("session.disable_prepacking", "1")
    options.log_severity_level = 3
    return options


def maps_weights(path: Path, weights: str, fp32: bool) -> bool:
    """Whether the session of ``path`` reads its weights in place (see the module docstring); ``fp32``: its linears
    are fp32 MatMuls. Logged when ``auto`` maps."""
    if weights != "auto":
        return weights == "mapped"
    data = data_file(path)
    size = data.stat().st_size if fp32 and data.is_file() else 0
    if size >= STREAM_SAVING:
        log.info("onnxruntime: %s of fp32 weights read in place from %s (no prepacked copy)", gib(size), data.name)
    return size >= STREAM_SAVING


class OnnxRuntimeEngine(EngineBase):
    """Runs ``model.onnx`` (optimum's ``ORTModelForCausalLM`` layout) in an onnxruntime CPU session."""

    name = "onnxruntime"

    def __init__(self, threads: int | None = None, model_file: str = "model.onnx", weights: str = "auto") -> None:
        if weights not in WEIGHTS:
            raise SlimpackError(
                f"onnxruntime weights {weights!r} is not one of {', '.join(WEIGHTS)}; "
                "pass e.g. --engine-option onnxruntime.weights=mapped"
            )
        self.threads = threads
        self.model_file = model_file
        self.weights = weights
        self.session: Any = None

    def load(self, artifact: Artifact) -> None:
        fp32 = bool(artifact.details.get("weights"))  # the fp32 MatMul weights by linear; none in onnx-int4
        self.load_file(artifact.file(artifact.details.get("file", self.model_file)), fp32)

    def load_file(self, path: Path, fp32: bool = False) -> None:
        """Open ``path``; ``fp32``: its linears are fp32 MatMuls (``auto`` may map them)."""
        import onnxruntime as ort

        if not path.is_file():
            raise SlimpackError(f"ONNX file {str(path)!r} is missing; re-export the artifact with `slimpack export`")
        try:
            self.session = ort.InferenceSession(
                str(path), session_options(self.threads, maps_weights(path, self.weights, fp32)),
                providers=["CPUExecutionProvider"],
            )
        except Exception as err:  # onnxruntime raises its own exception types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SlimpackError(f"onnxruntime cannot load {str(path)!r}: {first}") from None
        past = [i for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        self.past_names = [i.name for i in past]
        self.past_shapes = [(int(i.shape[1]), int(i.shape[3])) for i in past]  # (KV heads, head_dim): per layer
        self.present_names = [o.name for o in self.session.get_outputs() if o.name.startswith("present.")]

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, heads, 0, dim), np.float32) for heads, dim in self.past_shapes]

    def run(self, input_ids: np.ndarray, past: list[np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """One forward pass of ``input_ids: [B, T]`` after ``past`` (length P): ``[logits, *present]``."""
        batch, seq = input_ids.shape
        start = past[0].shape[2]
        feed = {
            "input_ids": input_ids.astype(np.int64, copy=False),
            "attention_mask": np.ones((batch, start + seq), np.int64),
            "position_ids": np.broadcast_to(np.arange(start, start + seq, dtype=np.int64), (batch, seq)).copy(),
            **dict(zip(self.past_names, past)),
        }
        return self.session.run(outputs, feed)

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        return self.run(input_ids, self.empty_past(input_ids.shape[0]), ["logits"])[0]

    def prefill(self, input_ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Last-position logits ``[B, V]`` and the cache after the prompt."""
        logits, *present = self.run(input_ids, self.empty_past(input_ids.shape[0]))
        return logits[:, -1], present

    def step(self, token: np.ndarray, past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One decode step of ``token: [B, 1]``: its logits ``[B, V]`` and the grown cache."""
        logits, *present = self.run(token, past)
        return logits[:, -1], present

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> np.ndarray:
        return greedy_decode(self, input_ids, max_new_tokens)

    def close(self) -> None:
        self.session = None
