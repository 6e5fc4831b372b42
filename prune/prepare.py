"""What a walk needs before it starts, one copy for every stage (`prune.unstructured`, `prune.structured.api`,
`quant.stage`): the layers checked against the settings (`check_layers`), calibration batches, gradients, and the
allocated plan (`prepare_walk`: the allocators get an `AllocationContext`, `allocation_context`), recorded for the
manifest (`allocation_record`). ``sparsity`` is the one name of ``--sparsity`` from the CLI to the mask
(`prune.spec.Resolved.sparsity` → `prune.allocation.allocate` → each linear's in the plan → the walk's
``compress(…, sparsity, …)`` → `prune.masks.select_prune_mask`); the manifest's ``target_sparsity`` is the file
format's name for it, beside the measured ``sparsity``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prune.allocation import Allocation, AllocationContext, allocate
from prune.data import Calibration
from prune.errors import SlimpackError
from prune.manifest import AllocationRecord
from prune.models import LoadedModel
from prune.ranks import Ranks
from prune.spec import Resolved
from prune.stats import gradient_norms
from prune.store import ModelStore
from prune.walker import BlockStore, Keep


def check_layers(loaded: LoadedModel, *checks: Callable[[int, str], None]) -> None:
    """Run every ``check(in_features, module_name)`` on each prunable linear (pattern and group-size fit), so
    that bad settings fail before any calibration."""
    for name, lin in loaded.adapter.named_linears(loaded.model).items():  # type: ignore[union-attr]
        for check in checks:
            check(lin.in_features, name)


def allocation_record(resolved: Resolved, allocation: Allocation) -> AllocationRecord:
    """The manifest's ``allocation``: the allocator's name (or the plan file's), the plan file, the plan."""
    spec, a = resolved.spec, allocation
    name = a.options.get("allocation", resolved.allocation_name) if resolved.plan else resolved.allocation_name
    return AllocationRecord(name, str(spec.plan) if spec.plan else None, a.block_ratios, a.importance,
                            a.importance_label, a.options, a.plan)  # fmt: skip


def allocation_context(
    loaded: LoadedModel, calibration: Calibration | None, device: str = "cpu", progress: bool = True,
    batches: list | None = None, blocks: Callable[[], BlockStore] | None = None, ranks: Ranks | None = None,
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
        ranks=ranks if ranks is not None else Ranks(),
    )


@dataclass
class Prepared:
    """What a walk needs besides the model: calibration batches, gradients, the validated plan."""

    batches: list | None
    grads: dict | None
    allocation: Allocation
    sparsity: float  # the plan's parameter-weighted mean (--sparsity, or a plan file's)
    record: AllocationRecord | None = None


def prepare_walk(
    store: ModelStore, resolved: Resolved, method: Any, calibration: Calibration, keep: Keep, device: str = "cpu",
    progress: bool = True, ranks: Ranks | None = None,
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
    ctx = allocation_context(loaded, calibration, device, progress, batches, store.reader(keep), ranks)
    allocation, sparsity = allocate(allocator, resolved.plan, resolved.sparsity, resolved.pattern, ctx)
    return Prepared(batches, grads, allocation, sparsity, allocation_record(resolved, allocation))
