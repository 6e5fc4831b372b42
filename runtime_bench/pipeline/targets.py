"""How an artifact is made — one description for the recipe's exports and the sweep's engines.

An `ArtifactSpec` names the export ``format`` (None: the model directory itself, run by eager torch) and the
``source`` model it is made from: ``dense``, ``prune`` (the pruned model) or ``quantize`` (the GPTQ checkpoint
of the run's quantize settings). The engine that runs it is the one its exporter declares (`engine_of`).
``slimpack bench sweep --engines`` names the `TARGETS` below; a recipe's ``stages.export`` lists its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from export.base import EXPORTERS, StreamingExporter, TensorwiseExporter
from prune.registry import Registry

SOURCES = ("dense", "prune", "quantize")


@dataclass(frozen=True)
class ArtifactSpec:
    format: str | None  # an export format (`export.base.EXPORTERS`); None: the model directory (torch)
    source: str = "prune"  # dense | prune | quantize
    options: dict[str, Any] = field(default_factory=dict)  # export options


def engine_of(spec: ArtifactSpec) -> str:
    """The engine that runs the artifact of ``spec``: its exporter's, or eager torch for a model directory."""
    if spec.format is None:
        return "torch"

    return str(EXPORTERS.get(spec.format).engine)


def streams(spec: ArtifactSpec) -> bool:
    """Whether the artifact of ``spec`` can be written from a streamed model (`export.base.StreamingExporter`);
    a model directory run by eager torch cannot (torch loads it whole)."""
    if spec.format is None:
        return False

    return isinstance(EXPORTERS.build(spec.format, {}), StreamingExporter | TensorwiseExporter)


# The sweep's engines: each sparsity's pruned model (or its GPTQ checkpoint) made into one artifact.
TARGETS: Registry[ArtifactSpec] = Registry("bench engine")
TARGETS.register("onnxruntime")(ArtifactSpec("onnx"))
TARGETS.register("deepsparse")(ArtifactSpec("deepsparse"))
TARGETS.register("onnxruntime-int4")(ArtifactSpec("onnx-int4", source="quantize"))
TARGETS.register("torch")(ArtifactSpec(None))
TARGETS.register("sparse")(ArtifactSpec("sparse"))  # slimpack's own kernels (`runtime_bench.kernels`)
TARGETS.register("sparse-gptq")(ArtifactSpec("sparse", source="quantize", options={"values": "gptq"}))
