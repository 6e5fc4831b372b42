"""The steps ``slimpack bench sweep`` and ``slimpack run`` are built from, each resumable through
`runtime_bench.pipeline.steps.StepCache`: evaluate, prune or quantize (one `stage_step`), export (one
`artifact_step` for any `ArtifactSpec`) and the memory probe. The timed measurement is the benchmark's own
(`runtime_bench.harness.measure`, never cached: it is what a rerun is for).

A step's configuration holds its parameters and the key of the step whose output it reads, so a changed
upstream step reruns everything downstream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from export.api import ExportConfig, export_model
from export.graph_cache import default_root
from prune.api import evaluate, prune
from prune.io import directory_bytes, sha256_file
from prune.manifest import Manifest
from prune.spec import EvalSpec, Job, PruneSpec
from quant.api import quantize
from runtime_bench.harness import BenchSpec
from runtime_bench.memory import peak_rss
from runtime_bench.pipeline.steps import StepCache, StepResult
from runtime_bench.pipeline.targets import ArtifactSpec

log = logging.getLogger(__name__)


def stage_step(
    cache: StepCache, name: str, job: Job, settings: dict[str, Any], source_key: str,
    produce: Callable[[], Manifest | None],
) -> StepResult:  # fmt: skip
    """A model-writing stage (``produce`` writes ``job.out`` and returns its manifest) as a resumable step;
    the result holds the figures the reports read."""

    def run() -> dict[str, Any]:
        m = produce()
        if m is None:  # a rank that does not write (under torchrun): rank 0's result is the step's
            return {}
        alloc = m.allocation
        return {
            "outputs": [str(job.out)],
            "path": str(job.out),
            "bytes": m.size_bytes,
            "perplexity": m.perplexity,
            "sparsity": m.sparsity.overall,
            "seconds": m.timing.seconds,
            "block_ratios": alloc.block_ratios if alloc is not None else None,
            "importance": alloc.importance if alloc is not None else None,
            "importance_label": alloc.importance_label if alloc is not None else "",
        }

    return cache.run(name, {**settings, "job": job.settings(), "source": source_key}, run, everywhere=True)


def spec_settings(spec: PruneSpec) -> dict[str, Any]:
    """A pruning spec as step settings: a plan file counts by its content, not only its path."""
    plan = {"plan_sha256": sha256_file(spec.plan) if spec.plan is not None and spec.plan.is_file() else None}
    return {**spec.to_dict(), **plan}


def prune_step(cache: StepCache, name: str, config: Any, source_key: str) -> StepResult:
    """Prune (``config``: a `prune.api.PruneConfig`) as a resumable step."""
    return stage_step(cache, name, config.job, {"prune": spec_settings(config.spec)}, source_key, lambda: prune(config))


def quantize_step(cache: StepCache, name: str, config: Any, source_key: str) -> StepResult:
    """Quantize (``config``: a `quant.api.QuantizeConfig`), jointly pruning or not, as a resumable step."""
    settings = {"quantize": asdict(config.quant), "joint": spec_settings(config.joint) if config.joint else None}
    return stage_step(cache, name, config.job, settings, source_key, lambda: quantize(config))


def eval_step(
    cache: StepCache,
    name: str,
    model: Path,
    spec: EvalSpec,
    source_key: str,
    progress: bool = True,
    stream: bool | None = None,
) -> StepResult:
    """Perplexity of ``model`` (``stream``: block-major, one block in memory; the same number)."""

    def run() -> dict[str, Any]:
        return {"perplexity": evaluate(str(model), spec, progress=progress, stream=stream, ranks=cache.ranks).perplexity}

    return cache.run(name, {"eval": asdict(spec), "model": str(model), "source": source_key}, run, everywhere=True)


def artifact_step(
    cache: StepCache,
    name: str,
    spec: ArtifactSpec,
    source: Path,
    source_key: str,
    out: Path,
    stream: bool | None = None,
) -> StepResult:
    """The artifact of ``spec`` made from the model directory ``source`` (``source_key``: its step key); a
    spec without a format is the model directory itself. ``stream``: written from the shards, tensor by tensor."""
    if spec.format is None:
        return StepResult(source_key, {"path": str(source), "bytes": directory_bytes(source)}, True, 0.0)

    def run() -> dict[str, Any]:
        config = ExportConfig(str(source), spec.format, out, True, spec.options, graph_cache=default_root(),
                              stream=stream)  # fmt: skip
        record = export_model(config)
        return {"outputs": [str(out)], "path": str(out), "bytes": record.bytes, "export_seconds": record.export_seconds}

    settings = {"format": spec.format, "options": spec.options, "source": source_key, "out": str(out)}
    return cache.run(name, {**settings, **({"stream": True} if stream else {})}, run)


def memory_step(cache: StepCache, name: str, path: Path, key: str, bench: BenchSpec, vocab: int) -> StepResult:

    def run() -> dict[str, Any]:
        return peak_rss(path, None, bench.prompt, bench.tokens, vocab).to_dict()

    return cache.run(name, {"artifact": key, "prompt": bench.prompt, "tokens": bench.tokens, "probe": 2}, run)
