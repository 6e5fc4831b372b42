"""The pipeline's records: ``summary.json`` of ``slimpack run`` (`RunSummary`, written by
`runtime_bench.pipeline.run`) and ``sweep.json`` of ``slimpack bench sweep`` (`SweepReport`, written by
`runtime_bench.pipeline.sweep`); their reports (`runtime_bench.pipeline.report`) read them through these types.

Layout (JSON keys = field names): ``recipe``, ``model``, ``models`` (dense / prune / quantize: `ModelFigures`),
``artifacts`` (name → `ArtifactEntry`), ``verify`` (name → `VerifyBrief`, or `Skipped`), ``zeroshot``
(`RunZeroShot`: per model and artifact a `ZeroShotEntry` or `Skipped`), ``bench`` (`RunBench`), ``steps``
(`StepNote` each), ``wall_seconds``, ``passed``; a field that does not apply is null.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prune.data import DataSpec
from prune.io import from_known, read_json_record
from runtime_bench.harness import BenchSpec, CpuInfo
from runtime_bench.memory import MemoryProbe
from runtime_bench.verify import VerifyBrief

T = TypeVar("T")


@dataclass
class StepNote:
    """One step of the run as the report lists it: ran, cached, skipped or FAILED, its seconds and detail."""

    stage: str
    step: str
    status: str
    seconds: float
    detail: str = ""


@dataclass
class Skipped:
    """A verify, zero-shot or bench entry whose runtime is missing here; ``source``: an artifact's source."""

    skipped: str
    source: str | None = None


@dataclass
class ModelFigures:
    """A model of the run (dense, prune, quantize): perplexity, measured sparsity, bytes; for a stage's output
    also its directory, the stage's seconds and its allocation (per-block ratios and importance)."""

    perplexity: float | None
    sparsity: float
    bytes: int | None = None
    path: str | None = None
    seconds: float | None = None
    block_ratios: list[float] | None = None
    importance: list[float] | None = None
    importance_label: str = ""


@dataclass
class ArtifactEntry:
    """An exported artifact of the run: where it is, its step key, the model it came from, format, engine, bytes."""

    path: str
    key: str
    source: str
    format: str | None
    engine: str
    bytes: int | None


@dataclass
class ZeroShotEntry:
    """A model's or artifact's zero-shot figures: runtime, headline metric per task, the mean of those that are
    accuracies (None: none is), seconds; for an artifact its source model and ``equal_examples`` ([equal,
    compared] per-example results)."""

    runtime: str
    mean: float | None
    seconds: float
    accuracy: dict[str, float]
    source: str | None = None
    equal_examples: list[int] | None = None


@dataclass
class RunZeroShot:
    """The run's zero-shot stage: the tasks, their headline metrics, the protocol, and per model and artifact."""

    tasks: list[str]
    headline: dict[str, str]
    task_data: str
    limit: int | None
    num_fewshot: int
    model: dict[str, ZeroShotEntry | Skipped] = field(default_factory=dict)
    artifact: dict[str, ZeroShotEntry | Skipped] = field(default_factory=dict)


@dataclass
class Measurement:
    """One timed measurement (`runtime_bench.harness.measure`: its JSON layout, read by
    `runtime_bench.harness.timings`) at a thread count; a sweep's names its engine."""

    threads: int
    results: dict[str, Any]
    engine: str | None = None


@dataclass
class RunBench:
    """The run's timed measurement (`runtime_bench.harness.measure` per thread count, results in its own JSON
    layout: `runtime_bench.harness.timings` reads them), the memory probe per entry, what was skipped."""

    spec: dict[str, Any]
    threads: list[int]
    cpu: CpuInfo
    entries: dict[str, dict[str, Any]]
    bases: dict[str, str]
    memory: dict[str, MemoryProbe]
    measurements: list[Measurement]
    skipped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunBench:
        return from_known(
            cls, data, cpu=CpuInfo.from_dict(data["cpu"]),
            memory={n: MemoryProbe.from_dict(m) for n, m in data["memory"].items()},
            measurements=[from_known(Measurement, m) for m in data["measurements"]],
        )  # fmt: skip

    def peak_rss_mib(self, name: str) -> float | None:
        """The memory probe's peak RSS of entry ``name`` (`runtime_bench.memory.peak_rss`)."""
        probe = self.memory.get(name)
        return None if probe is None else probe.peak_rss_mib


def _entry(data: dict[str, Any], cls: type[T]) -> T | Skipped:
    return from_known(Skipped, data) if "skipped" in data else from_known(cls, data)


@dataclass
class RunSummary:
    recipe: str
    model: str
    models: dict[str, ModelFigures]
    artifacts: dict[str, ArtifactEntry]
    verify: dict[str, VerifyBrief | Skipped]
    zeroshot: RunZeroShot | None
    bench: RunBench | None
    steps: list[StepNote]
    wall_seconds: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        z, b = data.get("zeroshot"), data.get("bench")
        zeroshot = None
        if z:
            zeroshot = from_known(
                RunZeroShot, z, model={n: _entry(e, ZeroShotEntry) for n, e in z.get("model", {}).items()},
                artifact={n: _entry(e, ZeroShotEntry) for n, e in z.get("artifact", {}).items()},
            )  # fmt: skip
        bench = RunBench.from_dict(b) if b else None
        return cls(
            recipe=data["recipe"],
            model=data["model"],
            models={n: from_known(ModelFigures, m) for n, m in data["models"].items()},
            artifacts={n: from_known(ArtifactEntry, a) for n, a in data["artifacts"].items()},
            verify={n: _entry(v, VerifyBrief) for n, v in data["verify"].items()},
            zeroshot=zeroshot,
            bench=bench,
            steps=[from_known(StepNote, s) for s in data["steps"]],
            wall_seconds=float(data["wall_seconds"]),
            passed=bool(data["passed"]),
        )

    @classmethod
    def read(cls, path: Path) -> RunSummary:
        """One line when ``path`` is not a run's summary."""
        return read_json_record(path, cls.from_dict, "a slimpack run summary")


@dataclass
class SweepQuality:
    """A sweep's model at one sparsity: measured sparsity, perplexity (None: ``--no-eval``), prune seconds."""

    sparsity: float
    perplexity: float | None = None
    prune_seconds: float | None = None


@dataclass
class SweepArtifact:
    """A sweep's artifact: where, its bytes, its memory probe."""

    path: str
    bytes: int | None
    memory: MemoryProbe


@dataclass
class SweepReport:
    """``sweep.json``: the sweep's settings (``config``: `runtime_bench.pipeline.sweep.SweepConfig` as JSON, with
    the pruning spec's names), the model and its shape, the CPU, per sparsity label its `SweepQuality`, per engine
    and label its `SweepArtifact`, the engines skipped, and the measurements (one per engine and thread count)."""

    config: dict[str, Any]
    model: str
    model_shape: dict[str, Any] | None
    cpu: CpuInfo
    quality: dict[str, SweepQuality]
    artifacts: dict[str, dict[str, SweepArtifact]]
    skipped: dict[str, str]
    measurements: list[Measurement]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepReport:
        """Sweeps before issue #15 recorded no model shape."""
        return cls(
            config=data["config"],
            model=data["model"],
            model_shape=data.get("model_shape"),
            cpu=CpuInfo.from_dict(data["cpu"]),
            quality={lab: from_known(SweepQuality, q) for lab, q in data["quality"].items()},
            artifacts={
                engine: {
                    lab: SweepArtifact(a["path"], a.get("bytes"), MemoryProbe.from_dict(a["memory"]))
                    for lab, a in labels.items()
                }
                for engine, labels in data["artifacts"].items()
            },  # fmt: skip
            skipped=dict(data.get("skipped", {})),
            measurements=[from_known(Measurement, m) for m in data["measurements"]],
        )

    @classmethod
    def read(cls, path: Path) -> SweepReport:
        """One line when ``path`` is not a sweep's report."""
        return read_json_record(path, cls.from_dict, "a slimpack sweep report")

    def pruning(self) -> dict[str, Any]:
        """The pruning settings (method, allocation, pattern, …); sweeps before issue #14 kept them at the top."""
        return dict(self.config.get("prune", self.config))

    def data(self) -> DataSpec:
        return from_known(DataSpec, self.config["data"])

    def bench(self) -> BenchSpec:
        return from_known(BenchSpec, self.config["bench"])
