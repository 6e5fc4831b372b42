"""Prefill and decode latency of chosen artifacts, measured interleaved in one run: ``slimpack bench ART …``
(`TimingConfig`, `time_paths`; its result `TimingReport`). An ART is an artifact of ``slimpack export``, a model
directory (torch eager), or a directory / file holding a KV-cache ``model.onnx`` in optimum's layout (e.g.
optimum-onnx's own export), given as ``PATH`` (labelled by its directory) or ``NAME=PATH`` (`labelled_paths`).

The timing discipline (interleaved rounds, warm-up, medians and quartiles) is `runtime_bench.harness`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from export.artifact import Artifact
from prune.errors import SlimpackError
from prune.io import from_known, read_json_record
from prune.paths import labelled_path
from runtime_bench.engines import engine_of, unavailable
from runtime_bench.engines.base import ENGINES
from runtime_bench.harness import BenchSpec, CpuInfo, EngineTiming, Quartiles, cpu_info, measure, vocab_size

log = logging.getLogger(__name__)


def prompt_vocab(paths: list[Path]) -> int:
    """The smallest vocabulary among the engines' ``config.json`` files (prompt ids must fit every model)."""
    dirs = [path.parent if path.suffix == ".onnx" else path for path in paths]
    sizes = [vocab_size(d) for d in dirs if (d / "config.json").is_file()]
    if not sizes:
        raise SlimpackError("no config.json beside any engine path; cannot tell the vocabulary size")
    return min(sizes)


def path_labels(paths: list[Path]) -> dict[str, Path]:
    """Each path labelled by its directory name, with as many parents prepended as tell apart two that share one
    (``a/onnx``, ``b/onnx``); one line for a path given twice."""
    full = [Path(os.path.abspath(p)) for p in paths]
    for i, path in enumerate(full):
        twin = next((paths[j] for j in range(i) if os.path.realpath(full[j]) == os.path.realpath(path)), None)
        if twin is not None:
            raise SlimpackError(f"{str(paths[i])!r} and {str(twin)!r} are the same artifact; name each ART once")
    depth = [1] * len(paths)
    while True:
        labels = [str(Path(*p.parts[-d:])) for p, d in zip(full, depth)]
        clashing = [i for i, lab in enumerate(labels) if labels.count(lab) > 1]
        if not clashing:
            return dict(zip(labels, paths))
        for i in clashing:
            depth[i] += 1


def labelled_paths(items: list[str]) -> dict[str, Path]:
    """``slimpack bench``'s ARTs labelled: ``NAME=PATH`` by its NAME (the same path may come twice under two names,
    e.g. to see the noise), a plain path as `path_labels` labels it; one line for a label given twice."""
    split = [labelled_path(item) for item in items]
    derived = iter(path_labels([path for name, path in split if name is None]))
    out: dict[str, Path] = {}
    for name, path in split:
        label = name if name is not None else next(derived)
        if label in out:
            raise SlimpackError(f"two ARTs are labelled {label!r}; name each once (NAME=PATH)")
        out[label] = path
    return out


@dataclass(frozen=True)
class TimingConfig:
    """``slimpack bench ART …``: ``paths`` (label → artifact, model directory or optimum-layout ONNX model) timed
    interleaved, one run per thread count; with ``engines``, every path must run in one of them."""

    paths: dict[str, Path]
    threads: tuple[int, ...] = (2,)
    bench: BenchSpec = field(default_factory=BenchSpec)
    engines: tuple[str, ...] = ()

    def check(self) -> dict[str, str]:
        """Before any work: the spec, the thread counts and each path's engine (label → engine: known, one of
        ``engines`` when given, and able to time here); one line otherwise."""
        self.bench.check()
        if not self.paths or not self.threads:
            raise SlimpackError("pass at least one artifact and one thread count (--threads)")
        for t in self.threads:
            if t < 1:
                raise SlimpackError(f"threads {t} must be ≥ 1; pass e.g. --threads 1,2")
        for name in self.engines:
            if name not in ENGINES:
                raise SlimpackError(f"unknown --engine {name!r}; choose from: {', '.join(ENGINES.names())}")
        found = {lab: engine_of(Path(path)) for lab, path in self.paths.items()}
        for lab, engine in found.items():
            path, how = str(self.paths[lab]), "its export.json" if Artifact.exists(self.paths[lab]) else "its files"
            if self.engines and engine not in self.engines:
                raise SlimpackError(
                    f"{path!r} runs in {engine} ({how}), not in --engine {','.join(self.engines)}; drop it or add "
                    f"{engine} to --engine"
                )
            reason = unavailable(engine, timing=True)
            if reason is not None:
                raise SlimpackError(f"{path!r} runs in {engine}, which cannot be timed here: {reason}")
        return found


def directory_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class TimedArtifact:
    """One timed ART: its path, engine and bytes on disk, and per thread count (a string key, as in JSON) the
    harness's figures in their JSON layout (`runtime_bench.harness.EngineTiming`: prefill ms, decode ms per token,
    tokens/s, batch throughput; median, quartiles, raw rounds)."""

    path: str
    engine: str
    bytes: int
    threads: dict[str, dict[str, Any]]

    def timing(self, threads: int) -> EngineTiming:
        return EngineTiming.of(self.threads[str(threads)])


@dataclass
class TimingReport:
    """``slimpack bench ART …``'s result (its ``--json``): the CPU, the spec, the thread counts, every ART."""

    cpu: CpuInfo
    spec: BenchSpec
    threads: list[int]
    artifacts: dict[str, TimedArtifact]

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu.to_dict(), "spec": asdict(self.spec), "threads": list(self.threads),
                "artifacts": {lab: asdict(a) for lab, a in self.artifacts.items()}}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimingReport:
        """Also the layout of the retired ``python -m runtime_bench.latency --json`` (one thread count, ``engines``
        NAME → PATH, ``results`` NAME → figures; no engine names or sizes: ``?`` and 0)."""
        if "results" in data:
            t = int(data["threads"])
            spec = BenchSpec(int(data["prompt"]), int(data["tokens"]), int(data["rounds"]), batch=0)
            artifacts = {name: TimedArtifact(str(data["engines"].get(name, "?")), "?", 0, {str(t): r})
                         for name, r in data["results"].items()}  # fmt: skip
            return cls(CpuInfo.from_dict(data["cpu"]), spec, [t], artifacts)
        return cls(
            CpuInfo.from_dict(data["cpu"]),
            from_known(BenchSpec, data["spec"]),
            [int(t) for t in data["threads"]],
            {lab: TimedArtifact(**a) for lab, a in data["artifacts"].items()},
        )

    @classmethod
    def read(cls, path: Path) -> TimingReport:
        """One line when ``path`` is not a timing report."""
        return read_json_record(path, cls.from_dict, "a slimpack timing report")

    def table(self) -> str:
        """One row per artifact and thread count."""
        batch = self.spec.batch
        head = ["artifact", "engine", "threads", "prefill ms (q1–q3)", "decode ms/token (q1–q3)"]
        head += [f"batch {batch} tokens/s (q1–q3)"] if batch > 1 else []
        rows = []
        for t in self.threads:
            for lab, a in self.artifacts.items():
                r = a.timing(t)
                row = [lab, a.engine, str(t), _spread(r.prefill_ms), _spread(r.decode_ms_per_token)]
                if batch > 1:
                    b = r.batch
                    row.append(_spread(b.tokens_per_s) if b is not None and b.tokens_per_s is not None else
                               (b.skipped or "") if b is not None else "")  # fmt: skip
                rows.append(row)
        lines = [head, ["---"] * len(head), *rows]
        return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _spread(q: Quartiles) -> str:
    """``median (q1–q3)``, the median to three significant digits and the quartiles to as many decimals."""
    d = max(0, 2 - math.floor(math.log10(q.median))) if q.median > 0 else 1
    return f"{q.median:.{d}f} ({q.q1:.{d}f}–{q.q3:.{d}f})"


def time_paths(config: TimingConfig) -> TimingReport:
    """Every path of ``config`` timed interleaved per thread count (`runtime_bench.harness.measure`)."""
    engines = config.check()
    vocab = prompt_vocab([Path(p) for p in config.paths.values()])
    paths = {lab: Path(p) for lab, p in config.paths.items()}
    runs = {t: measure(paths, t, config.bench, vocab, "bench") for t in config.threads}
    artifacts = {
        lab: TimedArtifact(
            str(path), engines[lab], directory_bytes(path), {str(t): runs[t][lab] for t in config.threads}
        )
        for lab, path in paths.items()
    }
    return TimingReport(cpu_info(), config.bench, list(config.threads), artifacts)
