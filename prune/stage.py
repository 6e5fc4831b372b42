"""The one template of every model-writing stage (`prune.unstructured`, `prune.structured.api`, `quant.stage`);
what a walk needs before it starts is `prune.prepare`.

`run_stage(job, stage)`: check the job (data, output) → open its store (`prune.store.open_job`: the model
resident, or a skeleton streamed from its shards, as `prune.store.settle` chose) → ``stage.check_model``
(layer fits) → inside a temporary output directory: ``stage.apply(store, …)`` (calibrate, allocate, walk the
store's blocks; timed) → the model's files (``store.save``) → the `Manifest` (its peak RSS read after their
write) → evaluate (if asked: perplexity, then ``job.evaluations``, through the same store) → the allocation's
artifacts and the manifest → renamed into place. A stage only says what is its own (`Stage`) and never which
store it has; the order, the timing, the evaluation and the atomic output are here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from prune.allocation import Allocation
from prune.data import Calibration
from prune.io import atomic_output_dir
from prune.manifest import (
    MANIFEST,
    AllocationRecord,
    EvaluationRecord,
    Manifest,
    MethodRecord,
    QuantizationRecord,
    RankReport,
    RanksRecord,
    StructureRecord,
    Timing,
    peak_device_mib,
    peak_rss_mib,
)
from prune.models import LoadedModel
from prune.sparsity import SparsityRecord
from prune.spec import Job
from prune.store import ModelStore, open_job, output_size

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

    def apply(self, store: ModelStore, calibration: Calibration, job: Job, out: Path | None) -> Outcome:
        """Compress the model ``store`` holds; ``out`` is the (temporary) output directory, where the store
        writes each finished block as the walk leaves it (`prune.store.ModelStore.blocks`); None on a rank
        that does not write (under torchrun, every rank but 0)."""
        ...


def rank_reports(job: Job, solve_seconds: float | None) -> list[RankReport]:
    """Under torchrun, each rank's peak RSS, what it sent (`prune.ranks.Traffic`) and the seconds of its own
    solves, gathered on every rank (a collective: every rank calls it once, after its walk); empty for one
    process."""
    if job.ranks.world == 1:
        return []
    traffic = job.ranks.traffic
    mine = RankReport(job.ranks.rank, peak_rss_mib(), dict(traffic.sent), traffic.calls, round(traffic.seconds, 3),
                      solve_seconds)  # fmt: skip
    gathered = job.ranks.gather_text(json.dumps(asdict(mine)), "the ranks' reports")
    return [RankReport(**json.loads(text)) for text in gathered]


def ranks_record(job: Job, reports: list[RankReport]) -> RanksRecord | None:
    """What the manifest records of a torchrun launch (None for one process)."""
    ranks = job.ranks
    return None if ranks.world == 1 else RanksRecord(ranks.world, str(ranks.backend), reports)


def run_stage(job: Job, stage: Stage) -> Manifest | None:
    """Run ``stage`` on ``job`` (a `prune.store.settle`d one; see the module docstring); returns the manifest
    written with the model. Under torchrun (``job.ranks``) every rank walks; only rank 0 writes and evaluates,
    and the others return None once the walk is done."""
    need = output_size(job, stage.linear_bytes)
    job.check(need, MANIFEST)  # on every rank: all refuse together, before any work
    job.ranks.barrier("the output check")  # ... and before rank 0 can publish (a data-free walk sends nothing)
    store = open_job(job)
    stage.check_model(store.loaded)
    calibration = Calibration(store.loaded.tokenizer, job.data)
    if not job.ranks.writes:
        rank_reports(job, stage.apply(store, calibration, job, None).compress_seconds)
        return None
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
            timing=Timing(seconds, peak_rss_mib(), outcome.compress_seconds, peak_device_mib(job.device)),
            true_sequential=outcome.true_sequential,
            structure=outcome.structure,
            quantization=outcome.quantization,
            stream=store.settings,
            ranks=ranks_record(job, rank_reports(job, outcome.compress_seconds)),
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
