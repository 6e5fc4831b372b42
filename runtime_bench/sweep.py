"""``slimpack bench sweep``: prune one model at many sparsities, export each for every engine, and measure
speed against the dense model — the CPU speedup-vs-sparsity table of DLP (`001_0da1aa919c7f675c.txt`,
Table 5) for any model on any machine.

Steps (each resumable through `runtime_bench.steps.StepCache`, so a rerun only measures):

1. ``prune-<s>``: prune at sparsity s (default Wanda with DLP allocation), evaluated under the protocol;
   ``eval-dense``: the dense model's perplexity.
2. ``<target>-<label>``: the artifact of each bench target (`runtime_bench.targets`) for dense and every s
   (``quantize-<label>`` first for int4 targets).
3. ``memory-<target>-<label>``: peak RSS of one generation in a fresh process (`runtime_bench.memory`).
4. Measurement (never cached): per thread count and target, every artifact (dense and all sparsities) is
   loaded and timed in interleaved rounds (`runtime_bench.harness.compare`); speedups are dense / sparse
   round by round.

Outputs in ``--out``: ``sweep.json`` (everything), ``sweep.md`` (Table 5 layout per engine and thread count,
then the full figures), ``sweep.png`` (speedup vs sparsity beside the paper's). A target whose runtime is not
installed (DeepSparse's environment) is skipped, and the skip is recorded in all three.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prune.api import EvalSpec
from prune.data import DataSpec
from prune.errors import SlimpackError
from prune.io import write_json_atomic
from runtime_bench.harness import compare, cpu_info, speedup
from runtime_bench.steps import StepCache, StepResult
from runtime_bench.targets import BENCH_ENGINE_OPTIONS, TARGETS, Target

log = logging.getLogger(__name__)

DENSE = "dense"


@dataclass(frozen=True)
class BenchSpec:
    """What one timed round does: a P-token prompt, then ``tokens`` decode steps (batch 1 and ``batch``)."""

    prompt: int = 128
    tokens: int = 32
    rounds: int = 5
    warmup: int = 1
    batch: int = 4  # 0 or 1: no batch throughput
    seed: int = 0

    def check(self) -> None:
        for name in ("prompt", "tokens", "rounds"):
            if getattr(self, name) < 1:
                raise SlimpackError(f"bench {name} {getattr(self, name)} must be ≥ 1")
        if self.warmup < 0 or self.batch < 0:
            raise SlimpackError(f"bench warmup {self.warmup} and batch {self.batch} must be ≥ 0")


@dataclass(frozen=True)
class SweepConfig:
    model: str = "smollm2-135m"
    out: Path = Path("runs/sweep")
    sparsities: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    engines: tuple[str, ...] = ("deepsparse", "onnxruntime")
    threads: tuple[int, ...] = (1, 2)
    method: str = "wanda"
    allocation: str = "dlp"
    pattern: str = "unstructured"
    method_options: dict[str, Any] = field(default_factory=dict)
    allocation_options: dict[str, Any] = field(default_factory=dict)
    data: DataSpec = field(default_factory=DataSpec)
    evaluate: EvalSpec | None = field(default_factory=EvalSpec)
    bench: BenchSpec = field(default_factory=BenchSpec)
    progress: bool = True

    def check(self) -> list[tuple[str, Target]]:
        """Validate everything before any work; returns the targets."""
        if not self.sparsities:
            raise SlimpackError("no sparsities given; pass e.g. --sparsities 0.1,0.5,0.9")
        for s in self.sparsities:
            if not 0 < s < 1:
                raise SlimpackError(f"sparsity {s} is outside (0, 1); pass e.g. --sparsities 0.1,0.2,…,0.9")
        if len(set(self.sparsities)) != len(self.sparsities):
            raise SlimpackError(f"sparsities {list(self.sparsities)} repeat a value")
        for t in self.threads:
            if t < 1:
                raise SlimpackError(f"threads {t} must be ≥ 1; pass e.g. --threads 1,2")
        if not self.engines or not self.threads:
            raise SlimpackError("pass at least one engine (--engines) and one thread count (--threads)")
        self.bench.check()
        self.data.check()
        check_pruning(self.method, self.method_options, self.allocation, self.allocation_options, self.pattern)
        return [(name, TARGETS.get(name)) for name in self.engines]


def check_pruning(
    method: str, method_options: dict[str, Any], allocation: str, allocation_options: dict[str, Any], pattern: str
) -> None:
    """Unknown methods, allocations, options or patterns fail here, before any model is loaded."""
    import prune.api  # noqa: F401  (registers every method and allocator)
    from prune.allocation import ALLOCATORS
    from prune.masks import Pattern
    from prune.methods import METHODS

    METHODS.build(method, method_options)
    ALLOCATORS.build(allocation, allocation_options)
    Pattern.parse(pattern)


def label(sparsity: float) -> str:
    return DENSE if sparsity == 0 else f"s{sparsity:.2f}"


def model_dir(spec: str) -> Path:
    """A local model directory for ``spec`` (an alias is materialized into the cache)."""
    from prune.models import ALIASES, materialize_alias

    if spec in ALIASES:
        return materialize_alias(spec)
    path = Path(spec)
    if not (path / "config.json").is_file():
        raise SlimpackError(
            f"model {spec!r} is not a local model directory with config.json; pass one or an alias (smollm2-135m)"
        )
    return path


# --- building steps (shared with `runtime_bench.pipeline`) ----------------------------------------------


def prune_step(cache: StepCache, name: str, config: Any, out: Path, source_key: str) -> StepResult:
    """Prune (``config``: a `prune.api.PruneConfig` whose ``out`` is ``out``) as a resumable step."""
    from prune.api import prune

    def run() -> dict[str, Any]:
        manifest = prune(config)
        return {
            "outputs": [str(out)],
            "path": str(out),
            "sparsity": manifest["sparsity"]["overall"],
            "perplexity": manifest.get("evaluation", {}).get("perplexity"),
            "prune_seconds": manifest["timing"]["prune_seconds"],
            "block_ratios": manifest["allocation"]["block_ratios"],
            "importance": manifest["allocation"].get("importance"),
            "importance_label": manifest["allocation"].get("importance_label", ""),
        }

    settings = {k: v for k, v in asdict(config).items() if k not in ("progress", "overwrite")}
    return cache.run(name, {"prune": settings, "source": source_key}, run)


def eval_step(
    cache: StepCache, name: str, model: Path, spec: EvalSpec, source_key: str, progress: bool = True
) -> StepResult:
    from prune.api import evaluate

    def run() -> dict[str, Any]:
        return {"perplexity": evaluate(str(model), spec, progress=progress)["perplexity"]}

    return cache.run(name, {"eval": asdict(spec), "model": str(model), "source": source_key}, run)


def quantize_step(cache: StepCache, name: str, config: Any, source_key: str) -> StepResult:
    """Quantize (``config``: a `quant.api.QuantizeConfig`, written to ``config.out``) as a resumable step."""
    from quant.api import quantize

    def run() -> dict[str, Any]:
        m = quantize(config)
        return {
            "outputs": [str(config.out)],
            "path": str(config.out),
            "bytes": m["size_bytes"],
            "perplexity": m.get("evaluation", {}).get("perplexity"),
            "sparsity": m["sparsity"]["overall"],
            "quantize_seconds": m["timing"]["quantize_seconds"],
        }

    settings = {k: v for k, v in asdict(config).items() if k not in ("progress", "overwrite")}
    return cache.run(name, {"quantize": settings, "source": source_key}, run)


def export_step(
    cache: StepCache, name: str, source: Path, source_key: str, fmt: str, out: Path, options: dict[str, Any]
) -> StepResult:
    from export.api import ExportConfig, export_model

    def run() -> dict[str, Any]:
        m = export_model(ExportConfig(str(source), fmt, out, overwrite=True, options=options))
        return {"outputs": [str(out)], "path": str(out), "bytes": m["bytes"], "export_seconds": m["export_seconds"]}

    return cache.run(name, {"format": fmt, "options": options, "source": source_key, "out": str(out)}, run)


def memory_step(cache: StepCache, name: str, path: Path, key: str, bench: BenchSpec, vocab: int) -> StepResult:
    from runtime_bench.memory import peak_rss

    def run() -> dict[str, Any]:
        return peak_rss(path, None, bench.prompt, bench.tokens, vocab)

    return cache.run(name, {"artifact": key, "prompt": bench.prompt, "tokens": bench.tokens}, run)


def build_target(
    cache: StepCache,
    target_name: str,
    target: Target,
    lab: str,
    source: Path,
    source_key: str,
    root: Path,
    data: DataSpec,
) -> StepResult:
    """The artifact of ``target`` for the model ``source`` (directory; ``source_key``: its step key)."""
    if target.quantize is not None:
        from quant.api import QuantizeConfig
        from quant.grid import QuantSpec

        out = root / "quantized" / lab
        qconfig = QuantizeConfig(str(source), out, spec=QuantSpec(**target.quantize), data=data, overwrite=True)
        q = quantize_step(cache, f"quantize-{lab}", qconfig, source_key)
        source, source_key = Path(q.result["path"]), q.key
    if target.format is None:  # the model directory itself
        return StepResult(source_key, {"path": str(source), "bytes": _dir_bytes(source)}, True, 0.0)
    out = root / "artifacts" / target_name / lab
    return export_step(cache, f"{target_name}-{lab}", source, source_key, target.format, out, target.options)


def _dir_bytes(path: Path) -> int:
    from prune.io import directory_bytes

    return directory_bytes(path)


def vocab_size(model: Path) -> int:
    return int(json.loads((model / "config.json").read_text())["vocab_size"])


def measure(paths: dict[str, Path], threads: int, bench: BenchSpec, vocab: int, engine_name: str) -> dict[str, Any]:
    """Load every artifact of ``paths`` (label → artifact) with ``threads`` and time them interleaved."""
    import torch

    from runtime_bench.engines import open_engine

    torch.set_num_threads(threads)
    rng = np.random.RandomState(bench.seed)
    prompt = rng.randint(0, vocab, (1, bench.prompt)).astype(np.int64)
    batch_prompt = rng.randint(0, vocab, (bench.batch, bench.prompt)).astype(np.int64) if bench.batch > 1 else None
    engines: dict[str, Any] = {}
    try:
        for lab, path in paths.items():
            log.info("loading %s %s (%d threads)", engine_name, lab, threads)
            engines[lab] = open_engine(path, threads, BENCH_ENGINE_OPTIONS)
        return compare(engines, prompt, bench.tokens, bench.rounds, bench.warmup, batch_prompt)
    finally:
        for engine in engines.values():
            engine.close()


def add_speedups(results: dict[str, Any], bases: dict[str, str]) -> None:
    """Decode and prefill speedups of each entry over its base (``bases``: entry → base entry), round by
    round (in place); entries without a base get none."""
    for lab, base in bases.items():
        results[lab]["speedup"] = {
            "decode": speedup(results, base, lab, "decode_ms"),
            "prefill": speedup(results, base, lab, "prefill_ms"),
        }


# --- the sweep ----------------------------------------------------------------------------------------


def sweep(config: SweepConfig) -> dict[str, Any]:
    """Run the sweep of the module docstring; returns what ``sweep.json`` holds."""
    from prune.api import PruneConfig
    from runtime_bench.engines import unavailable
    from runtime_bench.report import write_sweep_report

    targets = config.check()
    skipped = {name: reason for name, t in targets if (reason := unavailable(t.engine))}
    for name, reason in skipped.items():
        log.warning("skipping %s: %s", name, reason)
    active = [(name, t) for name, t in targets if name not in skipped]
    cache = StepCache(config.out)
    dense = model_dir(config.model)
    dense_key = f"model:{dense.resolve()}"
    vocab = vocab_size(dense)

    models: dict[str, tuple[Path, str]] = {DENSE: (dense, dense_key)}
    quality: dict[str, dict[str, Any]] = {DENSE: {"sparsity": 0.0}}
    if config.evaluate is not None:
        quality[DENSE]["perplexity"] = eval_step(
            cache, "eval-dense", dense, config.evaluate, dense_key, config.progress
        ).result["perplexity"]
    for s in config.sparsities:
        lab = label(s)
        out = config.out / "models" / f"{config.method}-{config.allocation}-{lab}"
        prune_config = PruneConfig(
            model=str(dense),
            out=out,
            method=config.method,
            sparsity=s,
            pattern=config.pattern,
            allocation=config.allocation,
            allocation_options=config.allocation_options,
            method_options=config.method_options,
            data=config.data,
            overwrite=True,
            evaluate=config.evaluate,
            progress=config.progress,
        )
        step = prune_step(cache, f"prune-{lab}", prune_config, out, dense_key)
        models[lab] = (out, step.key)
        quality[lab] = {k: step.result[k] for k in ("sparsity", "perplexity", "prune_seconds")}

    artifacts: dict[str, dict[str, dict[str, Any]]] = {}
    for name, target in active:
        artifacts[name] = {}
        for lab, (path, key) in models.items():
            built = build_target(cache, name, target, lab, path, key, config.out, config.data)
            mem = memory_step(cache, f"memory-{name}-{lab}", Path(built.result["path"]), built.key, config.bench, vocab)
            artifacts[name][lab] = {"path": built.result["path"], "bytes": built.result["bytes"], "memory": mem.result}

    measurements: list[dict[str, Any]] = []
    for threads in config.threads:
        for name, target in active:
            paths = {lab: Path(a["path"]) for lab, a in artifacts[name].items()}
            results = measure(paths, threads, config.bench, vocab, name)
            add_speedups(results, {lab: DENSE for lab in results})
            measurements.append({"engine": name, "threads": threads, "results": results})
    report = {
        "config": {**asdict(config), "out": str(config.out)},
        "model": str(dense),
        "cpu": cpu_info(),
        "quality": quality,
        "artifacts": artifacts,
        "skipped": skipped,
        "measurements": measurements,
    }
    write_json_atomic(config.out / "sweep.json", report)
    write_sweep_report(report, config.out)
    return report
