"""The unstructured / N:M prune stage (`UnstructuredPrune`, run by `prune.stage.run_stage` for `prune.api.prune`): a
layer method walked block by block over the allocated plan — each prunable linear pruned to its ``sparsity``."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from prune.data import Calibration
from prune.manifest import MethodRecord
from prune.models import LoadedModel
from prune.prepare import check_layers, prepare_walk
from prune.sparsity import SparsityRecord
from prune.spec import Job, Resolved
from prune.stage import Outcome
from prune.store import ModelStore, PlainOutput
from prune.walker import walk

OUTPUT = PlainOutput()  # a pruned model is a plain model directory


class UnstructuredPrune:
    """The unstructured / N:M prune stage: a layer method walked block by block over the allocated plan."""

    linear_bytes = None

    def __init__(self, resolved: Resolved) -> None:
        self.resolved = resolved

    def check_model(self, loaded: LoadedModel) -> None:
        check_layers(loaded, self.resolved.pattern.check_features)

    def apply(self, store: ModelStore, calibration: Calibration, job: Job, out: Path) -> Outcome:
        r = self.resolved
        blocks = store.blocks(r.method.needs, r.method.modifies_weights, job.rank_data(), OUTPUT, out)
        prep = prepare_walk(store, r, r.method, calibration, blocks.keep, job.device, job.progress, job.ranks)
        loaded = store.loaded
        assert loaded.adapter is not None
        result = walk(loaded.model, loaded.adapter, r.method, prep.allocation.plan, r.pattern, prep.batches,
                      prep.grads, job.device, r.spec.true_sequential, job.progress, store=blocks, ranks=job.ranks)  # fmt: skip
        return Outcome(
            stage="prune",
            method=MethodRecord(r.method.name, r.method.options()),
            pattern=str(r.pattern),
            target_sparsity=prep.sparsity,
            sparsity=SparsityRecord.of(blocks.sparsity),
            save=partial(store.save, OUTPUT, result.outputs),
            allocation=prep.allocation,
            allocation_record=prep.record,
            true_sequential=r.spec.true_sequential,
            compress_seconds=sum(rec.seconds for rec in result.records),
        )
