"""Bench targets: an engine and how its artifact is made from a (pruned) model directory.

``slimpack bench sweep --engines`` and the ``bench`` stage of ``slimpack run`` name these. A target with a
``format`` is exported (`export.api.export_model`); ``quantize`` adds a 4-bit GPTQ checkpoint step first
(the ``onnx-int4`` graph needs one); ``torch`` runs the model directory as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prune.registry import Registry


@dataclass(frozen=True)
class Target:
    engine: str
    format: str | None = None
    quantize: dict[str, Any] | None = None  # quant.grid.QuantSpec fields, e.g. {"bits": 4, "group_size": 64}
    options: dict[str, Any] = field(default_factory=dict)  # export options


TARGETS: Registry[Target] = Registry("bench engine")
TARGETS.register("onnxruntime")(Target("onnxruntime", "onnx"))
TARGETS.register("deepsparse")(Target("deepsparse", "deepsparse"))
TARGETS.register("onnxruntime-int4")(Target("onnxruntime", "onnx-int4", quantize={"bits": 4, "group_size": 64}))
TARGETS.register("torch")(Target("torch"))

# Engine constructor options for benchmarks: DeepSparse compiles only the graphs generation uses.
BENCH_ENGINE_OPTIONS: dict[str, dict[str, Any]] = {"deepsparse": {"lazy": True}}
