"""``slimpack prune --structured``: allocate per-unit ratios, walk, save the smaller model with its record."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

from prune.allocation import AllocationContext, allocate
from prune.data import Calibration
from prune.manifest import MethodRecord, ParameterCount, Parameters, StructureRecord
from prune.masks import Pattern
from prune.models import LoadedModel
from prune.prepare import allocation_context, allocation_record
from prune.sparsity import SparsityRecord
from prune.spec import Job, Resolved
from prune.stage import Outcome
from prune.store import ModelStore, PlainOutput
from prune.structured.shapes import (
    block_shape,
    check_keep_heads,
    parameter_count,
    record_structure,
    unit_names,
    unit_numel,
)
from prune.structured.walk import structured_walk
from prune.walker import BlockStore

log = logging.getLogger(__name__)

OUTPUT = PlainOutput()  # a structured model is a plain model directory (its config records the structure)


def unit_context(
    loaded: LoadedModel, batches: list | None, calibration: Calibration | None, device: str = "cpu",
    progress: bool = True, blocks: Callable[[], BlockStore] | None = None,
) -> AllocationContext:  # fmt: skip
    """The allocation context of structured pruning: two units per block, weighted by removable parameters
    (``blocks``: the store's read-only passes, `prune.store.ModelStore.reader`)."""
    ctx = allocation_context(loaded, calibration, device, progress, batches, blocks)
    names, numel = [], {}
    for i, block in enumerate(ctx.adapter.blocks(loaded.model)):
        units = unit_names(ctx.adapter.block_prefix(i))
        names.append(list(units))
        numel.update(zip(units, unit_numel(block_shape(block))))
    return replace(ctx, block_linears=names, numel=numel, kind="structured")


class StructuredPrune:
    """The structured prune stage: allocate per-unit ratios, walk, save the smaller model with its record (a
    model directory `prune.models.load_model` reads back)."""

    linear_bytes = None

    def __init__(self, resolved: Resolved) -> None:
        self.resolved = resolved
        assert resolved.spec.structured is not None
        self.options = resolved.spec.structured

    def check_model(self, loaded: LoadedModel) -> None:
        adapter = loaded.adapter
        assert adapter is not None
        if self.options.keep_heads is not None:
            for i, b in enumerate(adapter.blocks(loaded.model)):
                check_keep_heads(self.options.keep_heads, block_shape(b), unit_names(adapter.block_prefix(i))[0])

    def apply(self, store: ModelStore, calibration: Calibration, job: Job, out: Path) -> Outcome:
        r, opts = self.resolved, self.options
        loaded = store.loaded
        model, adapter = loaded.model, loaded.adapter
        assert adapter is not None
        before = parameter_count(model)  # a streamed skeleton's shapes count the same
        needs = tuple(sorted(set(r.method.needs) | ({"hessian"} if opts.reconstruct else set())))
        walked = store.blocks(needs, True, job.rank_data(), OUTPUT, out)  # reruns every block: an upper bound
        batches = calibration.batches()
        ctx = replace(unit_context(loaded, batches, calibration, job.device, job.progress, store.reader(walked.keep)),
                      ranks=job.ranks)  # fmt: skip
        allocation, sparsity = allocate(r.allocator, r.plan, r.sparsity, Pattern.parse("unstructured"), ctx)
        records = structured_walk(
            model, adapter, r.method, allocation.plan, batches, job.device, opts.reconstruct, opts.keep_heads,
            opts.ridge_lambda, job.progress, walked, job.ranks,
        )  # fmt: skip
        blocks = adapter.blocks(model)
        record_structure(model.config, blocks)
        after = parameter_count(model)
        removed = 1 - after["blocks"] / before["blocks"]
        log.info("structured %s: %d → %d parameters (%.1f %% of the blocks)", r.method.name, before["total"],
                 after["total"], 100 * removed)  # fmt: skip
        return Outcome(
            stage="prune",
            method=MethodRecord(r.method.name, r.method.options()),
            pattern="structured",
            target_sparsity=sparsity,
            sparsity=SparsityRecord.structured(removed, before["total"] - after["total"]),
            save=partial(store.save, OUTPUT, {}),  # config.json carries the structure record
            allocation=allocation,
            allocation_record=allocation_record(r, allocation),
            structure=StructureRecord(
                reconstruct={"enabled": opts.reconstruct, "lambda": opts.ridge_lambda},
                keep_heads=opts.keep_heads,
                parameters=Parameters(ParameterCount(**before), ParameterCount(**after)),
                units=records,
            ),
        )
