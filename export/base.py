"""What every export format implements (`Exporter`) and the registry of formats (``EXPORTERS``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from export.graph_cache import GraphCache
from prune.models import LoadedModel
from prune.registry import Registry

ZeroCounts = dict[str, dict[str, int]]  # module → {"zeros": n, "numel": n}


@dataclass(frozen=True)
class ZeroSummary:
    """The zeros of the prunable weights, source against export (``export.json``'s ``zeros``): totals, the
    modules missing from the export, those that lost zeros (``[source, exported]``) and the zeros gained."""

    source_zeros: int
    exported_zeros: int
    numel: int
    modules: int
    modules_missing: list[str] = field(default_factory=list)
    modules_losing_zeros: dict[str, list[int]] = field(default_factory=dict)
    extra_zeros: int = 0


def zero_summary(source: ZeroCounts, exported: ZeroCounts) -> ZeroSummary:
    """Totals, and the modules that lost zeros (fewer exported zeros than the source) or gained some.

    A format that rounds (fp16 in semi24) may turn a tiny weight into an extra zero; it must never lose one.
    """
    common = [m for m in source if m in exported]
    return ZeroSummary(
        source_zeros=sum(source[m]["zeros"] for m in source),
        exported_zeros=sum(exported[m]["zeros"] for m in common),
        numel=sum(v["numel"] for v in source.values()),
        modules=len(source),
        modules_missing=sorted(set(source) - set(exported)),
        modules_losing_zeros={
            m: [source[m]["zeros"], exported[m]["zeros"]] for m in common if exported[m]["zeros"] < source[m]["zeros"]
        },
        extra_zeros=sum(max(0, exported[m]["zeros"] - source[m]["zeros"]) for m in common),
    )


class Exporter(Protocol):
    """One artifact format: what it accepts, how it writes it, and how to count zeros in what it wrote.
    ``engine`` names the `runtime_bench` engine that runs the artifact (it is written into ``export.json``)."""

    engine: str
    per_layer_shapes: bool  # whether it exports models whose layers differ in shape (structured-pruned ones)
    model_directory: bool  # whether the artifact is also a model directory every command reads (`load_model`)

    def check_source(self, model_dir: Path) -> None:
        """Fail (one-line `SlimpackError`) before any work if ``model_dir`` cannot become this format."""

    def export(
        self, loaded: LoadedModel, model_dir: Path, out: Path, cache: GraphCache | None = None
    ) -> dict[str, Any]:
        """Write the artifact into the empty directory ``out``; returns format details for the manifest. Formats
        made by tracing may reuse a graph traced for a model of the same shape from ``cache``."""

    def count_zeros(self, out: Path, details: dict[str, Any]) -> ZeroCounts:
        """Zeros of each prunable weight, read back from the files in ``out``."""


EXPORTERS: Registry[type] = Registry("export format", "slimpack.formats")  # pyproject.toml lists them


@runtime_checkable
class StreamingExporter(Exporter, Protocol):
    """A format that can also be written from a streamed model (`prune.stream.open_streamed`: a skeleton whose
    weights stay in their shards), one tensor at a time (`export.onnx_stream`, `export.deepsparse`)."""

    def export_streamed(self, loaded: LoadedModel, out: Path, progress: bool = True) -> dict[str, Any]:
        """As `export`, never holding the whole model."""


@runtime_checkable
class TensorwiseExporter(Exporter, Protocol):
    """A format written tensor by tensor from the source's shards by the exporter itself, whatever the model's
    size (`export.sparse`): `export.api` never loads the model for it, and no flag is needed."""

    def export_from(self, model_dir: Path, out: Path) -> dict[str, Any]:
        """As `export`, reading ``model_dir`` one tensor at a time."""


def streaming_formats() -> list[str]:
    """The registered formats a streamed model can be exported to (`StreamingExporter`)."""
    return [n for n in EXPORTERS.names() if isinstance(EXPORTERS.build(n, {}), StreamingExporter)]
