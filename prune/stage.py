"""The one template of every model-writing stage (prune, structured prune, quantize), and what they share.

`run_stage(job, stage)`: check the job (data, output) → open its store (`prune.store.open_job`: the model
resident, or a skeleton streamed from its shards, as `prune.store.settle` chose) → ``stage.check_model``
(layer fits) → inside a temporary output directory: ``stage.apply(store, …)`` (calibrate, allocate, walk the
store's blocks; timed) → the model's files (``store.save``) → the `Manifest` (its peak RSS read after their
write) → evaluate (if asked: perplexity, then ``job.evaluations``, through the same store) → the allocation's
artifacts and the manifest → renamed into place. A stage only says what is its own (`Stage`) and never which
store it has; the order, the timing, the evaluation and the atomic output are here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from prune.allocation import Allocation, AllocationContext, allocate
from prune.data import Calibration
from prune.errors import SlimpackError
from prune.io import atomic_output_dir
from prune.manifest import (
    MANIFEST,
    AllocationRecord,
    EvaluationRecord,
    Manifest,
    MethodRecord,
    QuantizationRecord,
    StructureRecord,
    Timing,
    peak_rss_mib,
)
from prune.models import LoadedModel
from prune.sparsity import SparsityRecord
from prune.spec import Job, Resolved
from prune.stats import gradient_norms
from prune.store import ModelStore, open_job, output_size
from prune.walker import BlockStore, Keep

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What a stage's ``apply`` produced: the manifest's stage-specific fields and the writer of its files."""

    stage: str
    method: MethodRecord
    pattern: str
    target_sparsity: float
    sparsity: SparsityRecord
    save: Callable[[Path], None]  # writes the model files into the (temporary) output directory
    allocation: Allocation | None = None
    allocation_record: AllocationRecord | None = None
    true_sequential: bool = False
    compress_seconds: float | None = None
    structure: StructureRecord | None = None
    quantization: QuantizationRecord | None = None


class Stage(Protocol):
    """One model-writing stage. Everything is checked before any work: the stage's settings when it is built,
    the model's layers in `check_model` (right after loading)."""

    linear_bytes: float | None  # bytes the output stores per block linear weight (None: as a float, like the rest)

    def check_model(self, loaded: LoadedModel) -> None: ...

    def apply(self, store: ModelStore, calibration: Calibration, job: Job, out: Path) -> Outcome:
        """Compress the model ``store`` holds; ``out`` is the (temporary) output directory, where the store
        writes each finished block as the walk leaves it (`prune.store.ModelStore.blocks`)."""
        ...


def check_layers(loaded: LoadedModel, *checks: Callable[[int, str], None]) -> None:
    """Run every ``check(in_features, module_name)`` on each prunable linear (pattern and group-size fit), so
    that bad settings fail before any calibration."""
    for name, lin in loaded.adapter.named_linears(loaded.model).items():  # type: ignore[union-attr]
        for check in checks:
            check(lin.in_features, name)


def allocation_record(resolved: Resolved, allocation: Allocation) -> AllocationRecord:
    """The manifest's ``allocation``: the allocator's name (or the plan file's), the plan file, the plan."""
    spec = resolved.spec
    name = allocation.options.get("allocation", spec.allocation_name) if resolved.plan else spec.allocation_name
    return AllocationRecord(name, str(spec.plan) if spec.plan else None, **allocation.to_dict())


def run_stage(job: Job, stage: Stage) -> Manifest:
    """Run ``stage`` on ``job`` (a `prune.store.settle`d one; see the module docstring); returns the manifest
    written with the model."""
    need = output_size(job, stage.linear_bytes)
    job.check(need, MANIFEST)
    store = open_job(job)
    stage.check_model(store.loaded)
    calibration = Calibration(store.loaded.tokenizer, job.data)
    source = [store.loaded.path] if store.loaded.path else []
    with atomic_output_dir(job.out, job.overwrite, source, need, MANIFEST) as tmp:
        start = time.perf_counter()
        outcome = stage.apply(store, calibration, job, tmp)
        seconds = time.perf_counter() - start
        outcome.save(tmp)  # every weight file before the peak RSS is read: a write's buffers count in it
        manifest = Manifest(
            stage=outcome.stage,
            source_model=job.model,
            method=outcome.method,
            pattern=outcome.pattern,
            target_sparsity=outcome.target_sparsity,
            allocation=outcome.allocation_record,
            calibration={**job.data.to_dict(), "used": calibration.used, "tokens": calibration.tokens},
            sparsity=outcome.sparsity,
            timing=Timing(seconds, peak_rss_mib(), outcome.compress_seconds),
            true_sequential=outcome.true_sequential,
            structure=outcome.structure,
            quantization=outcome.quantization,
            stream=store.settings,
        )
        log.info("%s %s of %s: sparsity %.2f %% in %.1f s", outcome.stage, outcome.method.name, job.model,
                 100 * outcome.sparsity.overall, seconds)  # fmt: skip
        evaluation = EvaluationRecord()
        if job.evaluate is not None:  # the model as the stage left it: in memory, or as written (streamed)
            protocol = asdict(job.evaluate) | store.perplexity(job.evaluate, tmp).to_dict()
            evaluation = EvaluationRecord.from_dict(protocol)
        for extra in job.evaluations:  # e.g. zero-shot tasks, through the same store
            evaluation.further[extra.name] = extra.run(store, tmp)
        manifest.evaluation = evaluation if evaluation.to_dict() else None
        if outcome.allocation is not None:
            outcome.allocation.write_artifacts(tmp)
        return manifest.write(tmp)


def allocation_context(
    loaded: LoadedModel, calibration: Calibration | None, device: str = "cpu", progress: bool = True,
    batches: list | None = None, blocks: Callable[[], BlockStore] | None = None,
) -> AllocationContext:  # fmt: skip
    """What an allocator may use: the model's linears per block, the calibration batches (``batches``, when
    drawn) and held-out windows of the calibration split. ``blocks``: fresh read-only passes over the blocks
    (`prune.store.ModelStore.reader`; None: the model's own, in memory)."""
    adapter = loaded.adapter
    assert adapter is not None

    def heldout(n: int) -> list:
        if calibration is None:
            raise SlimpackError("this allocation needs held-out calibration text; run it through slimpack prune/plan")
        return calibration.heldout(n)

    return AllocationContext(
        blocks=blocks,
        heldout=heldout,
        block_linears=adapter.block_linear_names(loaded.model),
        numel={n: lin.weight.numel() for n, lin in adapter.named_linears(loaded.model).items()},
        model=loaded.model,
        adapter=adapter,
        batches=batches,
        device=device,
        progress=progress,
    )


@dataclass
class Prepared:
    """What a walk needs besides the model: calibration batches, gradients, the validated plan."""

    batches: list | None
    grads: dict | None
    allocation: Allocation
    target: float
    record: AllocationRecord | None = None


def prepare_walk(
    store: ModelStore, resolved: Resolved, method: Any, calibration: Calibration, keep: Keep, device: str = "cpu",
    progress: bool = True,
) -> Prepared:  # fmt: skip
    """Calibration batches (only if ``method`` — the walked layer method — or the allocator needs data),
    gradients (only if the method needs them) and the plan of ``resolved``; one copy for every stage.
    ``keep``: where the allocators' passes keep their activations (the walk's, `prune.walker.BlockStore.keep`)."""
    loaded = store.loaded
    allocator = resolved.allocator
    calibrated = bool(method.needs) or method.needs_gradients or (allocator is not None and allocator.needs_calibration)
    batches = calibration.batches() if calibrated else None
    grads = None
    if method.needs_gradients:  # the resident store's only (`prune.stream.stream_refusal`)
        linears = loaded.adapter.named_linears(loaded.model)  # type: ignore[union-attr]
        loaded.model.to(device)
        grads = gradient_norms(loaded.model, linears, batches or [], device, progress)
        loaded.model.to("cpu")
    ctx = allocation_context(loaded, calibration, device, progress, batches, store.reader(keep))
    allocation, target = allocate(allocator, resolved.plan, resolved.target, resolved.pattern, ctx)
    return Prepared(batches, grads, allocation, target, allocation_record(resolved, allocation))
