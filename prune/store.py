"""Which store a command holds a model in — resident (loaded whole, fp32) or streamed (a skeleton whose blocks
are read from the shards one at a time, `prune.stream`) — chosen from the model's sizes before any work, so
that no user has to remember a flag for a model larger than memory.

`choose_store(model, asked, budget)`: ``asked`` is ``"auto"`` (the default of every command), ``"stream"`` or
``"resident"`` (the ``--stream`` / ``--resident`` overrides). ``auto`` streams when the whole model in fp32
would not fit the budget (``--max-memory``, else 80 % of the memory available now) or when streaming saves at
least `STREAM_SAVING` (1 GiB) against it; otherwise it loads the model whole (small models: one pass, no
re-reads). A job that cannot stream (``refusal``: a method that needs whole-model gradients, an
allocator that runs the whole model, an output kind without a streamed writer) is resident, and refused in
one line when the resident model would not fit. Both stores give the same numbers: the streamed walk and the
block-major forward run the same operations in fp32 (tests compare them bit for bit).

The sizes come from the shards' headers and the config alone (the skeleton on the meta device):
- resident ≈ 4 bytes × every parameter (the fp32 model) — what loading it whole holds before any work;
- streamed ≈ 4 bytes × the parameters outside the blocks (embedding, final norm, lm_head) + 2 × the largest
  fp32 block (the block being worked on and the next one read) — `prune.stream.estimate_memory` adds the
  calibration's share once the walk is planned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from prune.architecture import adapter_for
from prune.errors import SlimpackError
from prune.lazy import LazyCheckpoint, output_bytes
from prune.model_config import read_config
from prune.models import checkpoint_kind, resolve_model_path
from prune.spec import STORES, Job, StreamSpec, asked_store
from prune.stream import refuse

log = logging.getLogger(__name__)

STREAM_SAVING = 2**30  # auto streams when that saves at least this much memory against loading the model whole
BUDGET_FRACTION = 0.8  # of the memory available now, when no --max-memory is given


@dataclass(frozen=True)
class ModelFootprint:
    """A model's memory in each store, in bytes (see the module docstring)."""

    resident: int
    streamed: int | None  # None: the checkpoint kind cannot be read block by block (it has no tensor codec)

    @classmethod
    def of(cls, path: Path) -> ModelFootprint:
        """From the config and the shards' headers (no weight is read): the skeleton's parameters, or — for a
        kind with no tensor codec — the stored tensors' elements, 4 bytes each."""
        codec = checkpoint_kind(path).codec(read_config(path))
        if codec is None:
            return cls(resident=output_bytes(path, 4), streamed=None)
        lazy = LazyCheckpoint.open(path, codec)
        model = lazy.model
        total = sum(p.numel() for p in model.parameters())
        sizes = [sum(p.numel() for p in block.parameters()) for block in adapter_for(model).blocks(model)]
        outside = total - sum(sizes)
        return cls(resident=4 * total, streamed=4 * outside + 2 * 4 * max(sizes, default=0))


@dataclass(frozen=True)
class StoreChoice:
    """The chosen store and why, in one line (logged at INFO, and in the error of a run that cannot fit)."""

    streamed: bool
    reason: str


def available_bytes() -> int:
    """Memory available to a new allocation now (page cache counts as available)."""
    return int(psutil.virtual_memory().available)


def process_bytes() -> int:
    """What this process holds now (its resident set)."""
    return int(psutil.Process().memory_info().rss)


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def choose_store(
    path: Path, asked: str = "auto", budget_bytes: int | None = None, refusal: str | None = None
) -> StoreChoice:
    """`decide`, logged with its reason (INFO)."""
    choice = decide(Path(path), asked, budget_bytes, refusal)
    log.info("store %s", choice.reason)
    return choice


def decide(path: Path, asked: str, budget_bytes: int | None, refusal: str | None) -> StoreChoice:
    """The store of the model directory ``path`` (see the module docstring). ``budget_bytes``: ``--max-memory``,
    the whole process's (None: `BUDGET_FRACTION` of `available_bytes` for the model); ``refusal``: why this job
    cannot stream (None: it can)."""
    if asked not in STORES:
        raise SlimpackError(f"store {asked!r} is not one of {', '.join(STORES)}")
    if asked == "stream":
        refuse(refusal)
        return StoreChoice(True, "streamed: --stream")
    if asked == "resident":
        return StoreChoice(False, "resident: --resident")
    footprint = ModelFootprint.of(path)
    if budget_bytes is not None:  # a budget for the whole process: what it holds already is spent
        budget, source = budget_bytes - process_bytes(), "--max-memory, less what the process holds"
    else:
        budget, source = int(BUDGET_FRACTION * available_bytes()), "the memory available now"
    if refusal is not None or footprint.streamed is None:  # it cannot stream: resident, if it fits
        resident = footprint.resident
        why = refusal or "this checkpoint kind cannot be read block by block"
        if resident > budget:
            raise SlimpackError(
                f"the whole model in fp32 needs ≈ {gib(resident)}, more than {gib(budget)} ({source}), and it cannot "
                f"stream: {why}"
            )
        return StoreChoice(False, f"resident: ≈ {gib(resident)} in fp32 fits {gib(budget)}; it cannot stream ({why})")
    if footprint.resident > budget:
        return StoreChoice(
            True,
            f"streamed: the whole model in fp32 would take ≈ {gib(footprint.resident)}, more than {gib(budget)} "
            f"({source}); streamed ≈ {gib(footprint.streamed)} plus calibration",
        )
    if footprint.resident - footprint.streamed >= STREAM_SAVING:
        return StoreChoice(
            True,
            f"streamed: ≈ {gib(footprint.streamed)} plus calibration against ≈ {gib(footprint.resident)} for the whole "
            "model in fp32 (--resident loads it whole)",
        )
    return StoreChoice(
        False,
        f"resident: the whole model in fp32 takes ≈ {gib(footprint.resident)}; streaming would save less than "
        f"{gib(STREAM_SAVING)}",
    )


def streamed(path: Path, stream: bool | None) -> bool:
    """Whether a read-only command (eval, verify's reference, zero-shot) streams the model at ``path``:
    ``stream`` True / False forces it (``--stream`` / ``--resident``), None chooses (`choose_store`)."""
    return choose_store(path, asked_store(stream)).streamed


def settle(job: Job, refusal: str | None = None) -> Job:
    """``job`` with its store chosen (`choose_store`; ``refusal``: why it cannot stream): streamed — ``stream``
    holds its settings (the defaults when none were given) — or resident (``stream`` None). Logged with the
    reason."""
    settings = job.stream or StreamSpec()
    budget = None if settings.max_memory_mib is None else int(settings.max_memory_mib * 2**20)
    choice = choose_store(resolve_model_path(job.model), job.store, budget, refusal)
    return replace(job, store="stream" if choice.streamed else "resident", stream=settings if choice.streamed else None)
