"""The steps ``slimpack bench sweep`` and ``slimpack run`` are built from, each resumable through
`runtime_bench.steps.StepCache`: evaluate, prune, quantize, export, probe memory, and the timed measurement
(`measure`, not cached: it is what a rerun is for), plus the checks both run before any work.

A step's configuration holds its parameters and the key of the step whose output it reads, so a changed
upstream step reruns everything downstream.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prune.api import EvalSpec
from prune.data import DataSpec
from prune.errors import SlimpackError
from prune.io import directory_bytes
from runtime_bench.harness import compare, speedup
from runtime_bench.steps import StepCache, StepResult
from runtime_bench.targets import BENCH_ENGINE_OPTIONS, Target

log = logging.getLogger(__name__)


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

    return cache.run(name, {"artifact": key, "prompt": bench.prompt, "tokens": bench.tokens, "probe": 2}, run)


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
        return StepResult(source_key, {"path": str(source), "bytes": directory_bytes(source)}, True, 0.0)
    out = root / "artifacts" / target_name / lab
    return export_step(cache, f"{target_name}-{lab}", source, source_key, target.format, out, target.options)


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
