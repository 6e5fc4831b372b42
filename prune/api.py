"""The core's package API: ``prune`` (unstructured and structured), ``plan`` and ``evaluate`` — configs in,
manifests out. Every model-writing stage runs through `prune.stage.run_stage`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from prune.allocation import allocate
from prune.allocation.base import PlanRecord
from prune.data import Calibration, DataSpec
from prune.errors import SlimpackError
from prune.io import write_json_atomic
from prune.manifest import EvalRecord, Manifest, environment, peak_rss_mib
from prune.model_config import check_context
from prune.models import resolve_model_path
from prune.paths import Output, check_writes
from prune.plots import plan_figure
from prune.prepare import allocation_context
from prune.ranks import Ranks
from prune.spec import EvalSpec, Job, PruneSpec
from prune.stage import run_stage
from prune.store import open_chosen, settle
from prune.stream import allocation_refusal, stream_refusal
from prune.structured.api import StructuredPrune
from prune.unstructured import UnstructuredPrune
from prune.walker import in_memory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneConfig:
    job: Job
    spec: PruneSpec = field(default_factory=PruneSpec)


def prune(config: PruneConfig) -> Manifest | None:
    """Prune ``config.job.model`` as ``config.spec`` says and write it with its manifest to ``config.job.out``
    (under torchrun: rank 0 writes and returns the manifest; the others return None)."""
    resolved = config.spec.resolve()
    job = settle(config.job, stream_refusal(resolved))
    if config.spec.structured is not None:
        return run_stage(job, StructuredPrune(resolved))
    return run_stage(job, UnstructuredPrune(resolved))


def evaluate(
    model_spec: str, spec: EvalSpec, device: str = "cpu", progress: bool = True, stream: bool | None = None,
    ranks: Ranks | None = None,
) -> EvalRecord:  # fmt: skip
    """Perplexity of a model: loaded whole, or block-major from its shards (`prune.store`); ``stream``: None
    lets `prune.store.choose_store` pick (the same perplexity either way), True / False force it. ``ranks``
    (under torchrun): the windows are split across ranks, the same number on each (`prune.eval.nll_over_ranks`)."""
    spec.check()
    check_context(resolve_model_path(model_spec), {"--seqlen": spec.seqlen})
    result = open_chosen(model_spec, stream, device, progress).perplexity(spec, ranks=ranks)
    return EvalRecord(model_spec, spec.dataset, spec.seqlen, result.windows, spec.batch_size, result.perplexity,
                      result.nll, result.tokens, result.seconds, peak_rss_mib())  # fmt: skip


@dataclass(frozen=True)
class PlanConfig:
    """``slimpack plan``: ``out`` is the plan JSON (a PNG is written beside it)."""

    model: str
    out: Path
    spec: PruneSpec = field(default_factory=PruneSpec)
    data: DataSpec = field(default_factory=DataSpec)
    device: str = "cpu"
    overwrite: bool = False
    progress: bool = True
    stream: bool | None = None  # the store: None chooses by size (`prune.store.choose_store`), True / False force it


def plan(config: PlanConfig) -> PlanRecord:
    """Compute a sparsity plan for ``config.model`` and write it as JSON (+ a PNG beside it). The allocator's
    passes read the model through its store (`prune.store.open_chosen`: resident if it fits, else streamed)."""
    if config.spec.plan is not None or config.spec.structured is not None:
        raise SlimpackError("slimpack plan computes an unstructured plan; drop --plan / --structured")
    resolved = config.spec.resolve()
    config.data.check()
    if config.out.exists() and not config.overwrite:
        raise SlimpackError(f"output {str(config.out)!r} already exists; pass --overwrite or choose another --out")
    store = open_chosen(config.model, config.stream, config.device, config.progress, allocation_refusal(resolved))
    loaded = store.loaded
    calibration = Calibration(loaded.tokenizer, config.data)
    batches = calibration.batches() if resolved.allocator.needs_calibration else None
    ctx = allocation_context(loaded, calibration, config.device, config.progress, batches, store.reader(in_memory))
    allocation, sparsity = allocate(resolved.allocator, None, resolved.sparsity, resolved.pattern, ctx)
    name = config.spec.allocation_name
    record = PlanRecord(
        model=config.model,
        allocation=name,
        sparsity=sparsity,
        pattern=config.spec.pattern,
        calibration={**config.data.to_dict(), "used": batches is not None},
        block_ratios=allocation.block_ratios,
        importance=allocation.importance,
        importance_label=allocation.importance_label,
        options=allocation.options,
        plan=allocation.plan,
        environment=environment(),
    )
    plan_figure(allocation, config.out.with_suffix(".png"), f"{name} plan, sparsity {sparsity:.2f}")
    if allocation.artifacts:  # e.g. rl-search's agent and curves, in a folder named after the plan
        check_writes([Output("--out", config.out.with_suffix(""), "dir")], [loaded.path] if loaded.path else [])
        allocation.write_artifacts(config.out.with_suffix(""))
    write_json_atomic(config.out, record.to_dict())
    return record
