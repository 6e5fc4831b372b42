"""The ``slimpack.json`` manifest every model-writing stage (prune, structured prune, quantize) writes beside
its model directory: one typed class, one writer (`Manifest.write`), one reader (`Manifest.read`).

Layout (JSON keys = field names): ``stage``, ``source_model``, ``method`` {name, options}, ``pattern``,
``target_sparsity``, ``allocation`` (name, plan_file, block_ratios, importance, options, plan; None when
nothing was allocated), ``true_sequential``, ``calibration`` (the `DataSpec`, used, tokens), ``sparsity``
(measured: overall, zeros, numel, modules), ``timing`` {seconds, compress_seconds, peak_rss_mib},
``environment``, and where they apply ``evaluation`` (the `EvalSpec` + perplexity; further evaluations by
name, e.g. ``zeroshot``: the tasks' accuracies and per-example results), ``structure``
(structured pruning: parameters before/after, units, reconstruct, keep_heads) and ``quantization`` (grid,
checkpoint format, the source's pruning, sparsity before, pruned zeros kept); ``size_bytes`` and ``files``
(the sha256 of every other file of the directory).
"""

from __future__ import annotations

import platform
import resource
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar

from prune.errors import SlimpackError
from prune.io import compare_files, directory_bytes, from_known, hash_files, read_json_record, write_json_atomic
from prune.sparsity import SparsityRecord
from prune.spec import StreamSpec

MANIFEST = "slimpack.json"


def slimpack_version() -> str:
    try:
        return version("slimpack")
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "0+unknown"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_device_mib(device: str) -> float | None:
    """Peak memory torch allocated on a CUDA ``device`` so far (None on the CPU)."""
    import torch

    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20


def environment() -> dict[str, str]:
    import torch
    import transformers

    return {
        "slimpack": slimpack_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": str(torch.get_num_threads()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def without_examples(data: Any) -> Any:
    """``data`` without its per-example results (every ``examples`` key, at any depth)."""
    if isinstance(data, dict):
        return {k: without_examples(v) for k, v in data.items() if k != "examples"}
    return data


def setting_label(pattern: str, target: float) -> str:
    """``"50 %"`` for an unstructured target, ``"2:4"`` for N:M."""
    return pattern if ":" in pattern else f"{100 * target:.0f} %"


def pruning_label(method: str, pattern: str, target: float, allocation: str | None) -> str:
    """``"sparsegpt 50 % dlp"`` / ``"wanda 2:4"``: how a model was pruned, in one phrase."""
    alloc = allocation or "uniform"
    return f"{method} {setting_label(pattern, target)}" + ("" if alloc == "uniform" else f" {alloc}")


def brief_pruning(brief: dict[str, Any] | None) -> str:
    """`pruning_label` of a `Manifest.brief` (``"dense"`` when it is not a prune's)."""
    if not brief or brief.get("stage") != "prune":
        return "dense"
    alloc = (brief.get("allocation") or {}).get("name")
    return pruning_label(brief["method"]["name"], brief["pattern"], brief["target_sparsity"], alloc)


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A manifest written before the typed layout (issue #14) in today's layout: stage-named timing keys, the
    structured fields and the quantize fields at the top level."""
    data = dict(data)
    timing = data.get("timing", {})
    if "seconds" not in timing:
        stage = data.get("stage", "prune")
        data["timing"] = {
            "seconds": timing.get(f"{stage}_seconds", 0.0),
            "peak_rss_mib": timing.get(f"peak_rss_mib_after_{stage}", 0.0),
            "compress_seconds": timing.get("compress_seconds"),
        }
    if data.pop("structured", False):
        data["structure"] = {k: data.pop(k, None) for k in ("reconstruct", "keep_heads", "parameters", "units")}
    if "pruned_zeros" in data:
        data["quantization"] = {**data.get("quantization", {}), "source": data.pop("source_manifest", None),
                                "sparsity_before": data.pop("sparsity_before", None),
                                "pruned_zeros": data.pop("pruned_zeros")}  # fmt: skip
    return data


@dataclass
class MethodRecord:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timing:
    """``seconds``: the stage's own work (calibration data, gradients, allocation, the walk) — loading, saving and
    evaluation excluded; ``compress_seconds``: the methods' solves alone; ``peak_rss_mib``: read after it and the
    write of the model's files (their buffers count), before any evaluation."""

    seconds: float
    peak_rss_mib: float
    compress_seconds: float | None = None
    peak_device_mib: float | None = None  # on --device cuda: the GPU memory torch allocated at most


@dataclass
class AllocationRecord:
    """The manifest's ``allocation``: the allocator's name (or the plan file's), the plan file, and the plan
    (`prune.allocation.base.Allocation`: per-block ratios, importance scores, the allocator's options, the
    ratio of every linear or unit)."""

    name: str
    plan_file: str | None = None
    block_ratios: list[float] = field(default_factory=list)
    importance: list[float] | None = None
    importance_label: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AllocationRecord:
        return from_known(cls, data)


@dataclass
class ParameterCount:
    """A model's parameters: all of them (a tied embedding once), and those inside the decoder blocks."""

    total: int
    blocks: int


@dataclass
class Parameters:
    before: ParameterCount
    after: ParameterCount


@dataclass
class UnitRecord:
    """One structured unit (a block's attention heads, or its FFN channels) as the walk cut it: its ratio, the
    heads / channels removed, the count before and after, the seconds."""

    name: str
    ratio: float
    removed: list[int]
    before: int
    after: int
    seconds: float


@dataclass
class StructureRecord:
    """The manifest's ``structure`` (a structured prune): the reconstruction (``{"enabled", "lambda"}``: the
    ridge's λ, a key Python cannot name), ``--keep-heads``, the parameters before and after, every unit."""

    reconstruct: dict[str, Any]
    keep_heads: int | None
    parameters: Parameters
    units: list[UnitRecord]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StructureRecord:
        parameters = data["parameters"]
        return cls(
            reconstruct=data["reconstruct"],
            keep_heads=data["keep_heads"],
            parameters=Parameters(ParameterCount(**parameters["before"]), ParameterCount(**parameters["after"])),
            units=[UnitRecord(**unit) for unit in data["units"]],
        )

    def heads(self) -> list[int]:
        """The attention heads each block keeps."""
        return [u.after for u in self.units if u.name.endswith("self_attn")]


@dataclass
class PrunedZeros:
    """A quantized model's pruned weights, and how many of them its grid keeps exactly zero."""

    pruned: int
    kept: int
    fraction_kept: float


@dataclass
class QuantizationRecord:
    """The manifest's ``quantization``: the grid (`quant.spec.QuantSpec`'s fields), the checkpoint format, the
    source's `Manifest.brief` (None: an unpruned source without a manifest), its sparsity, the pruned zeros."""

    bits: int
    group_size: int
    sym: bool
    act_order: bool
    static_groups: bool
    checkpoint_format: str
    source: dict[str, Any] | None
    sparsity_before: float | None
    pruned_zeros: PrunedZeros

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantizationRecord:
        """Older manifests: the grid's later options at their defaults; the first layout's ``format`` dropped."""
        data = {"sym": True, "act_order": False, "static_groups": False, "checkpoint_format": "gptq", **data}
        return from_known(cls, data, pruned_zeros=PrunedZeros(**data["pruned_zeros"]))

    def source_pruning(self) -> str:
        """`brief_pruning` of the source (``"dense"``: it was not pruned by slimpack)."""
        return brief_pruning(self.source)


@dataclass
class EvalRecord:
    """``slimpack eval``'s perplexity (its ``--json``; the dense row of the results tables): the model, the
    protocol (`prune.spec.EvalSpec`), the result (`prune.eval.PerplexityResult`), the peak RSS, the machine."""

    model: str
    dataset: str
    seqlen: int
    windows: int
    batch_size: int
    perplexity: float
    nll: float
    tokens: int
    seconds: float
    peak_rss_mib: float
    environment: dict[str, str] = field(default_factory=environment)
    stage: ClassVar[str] = "eval"  # what a results table tells it from a `Manifest` by

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, path: Path) -> EvalRecord:
        """One line when ``path`` is not an eval result."""
        return read_json_record(path, partial(from_known, cls), "a slimpack eval result")


@dataclass
class EvaluationRecord:
    """The manifest's ``evaluation``: the perplexity protocol (`prune.spec.EvalSpec`) and its result
    (`prune.eval.PerplexityResult`) when ``--eval`` asked for it (None each otherwise), and ``further``: the
    results of the further evaluations (`prune.spec.Evaluation`, e.g. ``zeroshot``), each the JSON its own
    evaluation writes and reads, under its name. JSON: the protocol's and the result's keys, then each further
    result by name, at one level."""

    dataset: str | None = None
    seqlen: int | None = None
    windows: int | None = None
    batch_size: int | None = None
    perplexity: float | None = None
    nll: float | None = None
    tokens: int | None = None
    seconds: float | None = None
    further: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "further"}
        return {k: v for k, v in own.items() if v is not None} | dict(self.further)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationRecord:
        own = {f.name for f in fields(cls)} - {"further"}
        further = {k: v for k, v in data.items() if k not in own and isinstance(v, dict)}
        return cls(**{k: v for k, v in data.items() if k in own}, further=further)

    def summaries(self) -> list[str]:
        """The one-line summaries the further evaluations gave (`prune.spec.Evaluation.run`)."""
        return [str(r["summary"]) for r in self.further.values() if "summary" in r]


@dataclass
class RankReport:
    """One rank of a torchrun launch: its peak RSS, the bytes it sent by kind of collective (``sum``: statistics
    all-reduced, ``broadcast``: the weights of the linears it owned, ``send``: their codes to rank 0), how many
    collectives it ran and their seconds (transfer and wait), and the seconds of its own solves."""

    rank: int
    peak_rss_mib: float
    sent_bytes: dict[str, int]
    collectives: int
    collective_seconds: float
    solve_seconds: float | None = None


@dataclass
class RanksRecord:
    """The torchrun launch a stage ran under: how many ranks, on which backend (gloo, NCCL), and each rank's
    `RankReport`."""

    world_size: int
    backend: str
    per_rank: list[RankReport] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RanksRecord:
        return from_known(cls, data, per_rank=[from_known(RankReport, r) for r in data.get("per_rank", [])])


@dataclass
class Manifest:
    stage: str  # "prune" | "quantize"
    source_model: str
    method: MethodRecord
    pattern: str
    target_sparsity: float
    allocation: AllocationRecord | None
    calibration: dict[str, Any]
    sparsity: SparsityRecord
    timing: Timing
    true_sequential: bool = False
    environment: dict[str, str] = field(default_factory=environment)
    evaluation: EvaluationRecord | None = None
    structure: StructureRecord | None = None
    quantization: QuantizationRecord | None = None
    stream: StreamSpec | None = None  # the streamed store's settings, if streamed (`prune.store`)
    ranks: RanksRecord | None = None  # the torchrun launch that made it (None: one process)
    size_bytes: int | None = None  # the directory's files, the manifest excluded
    files: dict[str, str] = field(default_factory=dict)

    # --- what readers ask -----------------------------------------------------------------------------

    @property
    def perplexity(self) -> float | None:
        ppl = self.evaluation.perplexity if self.evaluation is not None else None
        return None if ppl is None else float(ppl)

    @property
    def allocation_name(self) -> str:
        return self.allocation.name if self.allocation is not None else "uniform"

    @property
    def setting(self) -> str:
        return setting_label(self.pattern, self.target_sparsity)

    def pruning(self) -> str:
        """`pruning_label` of a prune manifest; ``"dense"`` for anything else."""
        return brief_pruning(self.brief())

    def brief(self) -> dict[str, Any]:
        """How this model was made, without per-module detail (what a later stage records of its source)."""
        data = self.to_dict()
        keys = ("stage", "source_model", "method", "pattern", "target_sparsity", "allocation", "evaluation")
        brief = {k: data[k] for k in keys}
        brief["evaluation"] = without_examples(brief["evaluation"])  # the figures, not each example's result
        if isinstance(brief["allocation"], dict):
            brief["allocation"] = {k: v for k, v in brief["allocation"].items() if k not in ("plan", "block_ratios")}
        return brief

    # --- the one writer and reader ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.ranks is None:  # one process: the manifest an earlier release wrote, unchanged
            data.pop("ranks")
        if self.timing.peak_device_mib is None:
            data["timing"].pop("peak_device_mib")
        data["sparsity"] = self.sparsity.to_dict()
        data["evaluation"] = self.evaluation.to_dict() if self.evaluation is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = upgrade(data)

        def part(key: str, read: Callable[[Any], Any]) -> Any:
            return read(data[key]) if data.get(key) else None

        return from_known(
            cls, data, method=MethodRecord(**data["method"]), timing=Timing(**data["timing"]),
            sparsity=SparsityRecord.from_dict(data["sparsity"]), evaluation=part("evaluation", EvaluationRecord.from_dict),
            stream=part("stream", lambda s: StreamSpec(**s)), allocation=part("allocation", AllocationRecord.from_dict),
            structure=part("structure", StructureRecord.from_dict),
            quantization=part("quantization", QuantizationRecord.from_dict),
            ranks=part("ranks", RanksRecord.from_dict),
        )  # fmt: skip

    def write(self, directory: Path) -> Manifest:
        """Hash every other file of ``directory`` into ``files``, sum their sizes, and write the manifest there."""
        self.files = hash_files(Path(directory), exclude=(MANIFEST,))
        self.size_bytes = sum((Path(directory) / name).stat().st_size for name in self.files)
        write_json_atomic(Path(directory) / MANIFEST, self.to_dict())
        return self

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise SlimpackError(f"{str(directory)!r} has no {MANIFEST}; pass a directory written by slimpack")
        manifest = read_json_record(path, cls.from_dict, "a slimpack manifest")
        if manifest.size_bytes is None:  # written before size_bytes was recorded for every stage
            manifest.size_bytes = directory_bytes(Path(directory)) - path.stat().st_size
        return manifest

    @classmethod
    def read_if_any(cls, directory: Path) -> Manifest | None:
        return cls.read(directory) if (Path(directory) / MANIFEST).is_file() else None

    def check_files(self, directory: Path, progress: bool = False) -> dict[str, list[str]]:
        """The directory's files against the manifest's sha256: ``changed``, ``missing``, and ``unlisted``
        (present, not in the manifest). Hashes stream each file (`prune.io.hash_files`, with progress)."""
        return compare_files(Path(directory), self.files, (MANIFEST,), progress)
