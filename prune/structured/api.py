"""``slimpack prune --structured``: allocate per-unit ratios, walk, save the smaller model with its record."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from prune.allocation import ALLOCATORS, AllocationContext
from prune.api import EvalSpec, allocate, allocation_context, finish_prune, read_plan_file
from prune.data import DataSpec, calibration_batches
from prune.errors import SlimpackError
from prune.io import check_output_dir
from prune.manifest import environment, peak_rss_mib
from prune.masks import Pattern, check_sparsity
from prune.models import LoadedModel, adapter_for, load_model
from prune.structured import STRUCTURED
from prune.structured.reconstruct import RIDGE_LAMBDA
from prune.structured.shapes import (
    block_shape,
    check_keep_heads,
    parameter_count,
    record_structure,
    unit_names,
    unit_numel,
)
from prune.structured.walk import structured_walk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StructuredConfig:
    model: str
    out: Path
    method: str = "slimgpt"
    sparsity: float = 0.2
    allocation: str = "log-increase"
    allocation_options: dict[str, Any] = field(default_factory=dict)
    plan_file: Path | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    reconstruct: bool = False
    ridge_lambda: float = RIDGE_LAMBDA
    keep_heads: int | None = None
    data: DataSpec = field(default_factory=DataSpec)
    device: str = "cpu"
    overwrite: bool = False
    evaluate: EvalSpec | None = None
    progress: bool = True


def unit_context(
    loaded: LoadedModel, batches: list | None, data: DataSpec | None, device: str = "cpu", progress: bool = True
) -> AllocationContext:
    """The allocation context of structured pruning: two units per block, weighted by removable parameters."""
    ctx = allocation_context(loaded, batches, device, progress, data)
    names, numel = [], {}
    for i, block in enumerate(ctx.adapter.blocks(loaded.model)):
        units = unit_names(ctx.adapter.block_prefix(i))
        names.append(list(units))
        numel.update(zip(units, unit_numel(block_shape(block))))
    return replace(ctx, block_linears=names, numel=numel, kind="structured")


def prune_structured(config: StructuredConfig) -> dict[str, Any]:
    """Structured-prune ``config.model`` into ``config.out`` (a model directory `load_model` reads back)."""
    method = STRUCTURED.build(config.method, config.method_options)
    target = check_sparsity(config.sparsity)
    if not config.ridge_lambda >= 0:
        raise SlimpackError(f"--ridge-lambda {config.ridge_lambda} must be ≥ 0 (the paper uses 0.9)")
    allocator = None if config.plan_file else ALLOCATORS.build(config.allocation, config.allocation_options)
    if allocator is not None and not getattr(allocator, "structured", False):
        usable = [n for n in ALLOCATORS.names() if getattr(ALLOCATORS.get(n), "structured", False)]
        raise SlimpackError(
            f"allocation {config.allocation!r} works on weight matrices only; for --structured choose one of: "
            f"{', '.join(usable)}"
        )
    plan_file = read_plan_file(config.plan_file) if config.plan_file else None
    config.data.check()
    check_output_dir(config.out, config.overwrite)

    loaded = load_model(config.model, device="cpu")
    model, adapter = loaded.model, adapter_for(loaded.model)
    blocks = adapter.blocks(model)
    if config.keep_heads is not None:
        for i, b in enumerate(blocks):
            check_keep_heads(config.keep_heads, block_shape(b), unit_names(adapter.block_prefix(i))[0])
    before = parameter_count(model)

    start = time.perf_counter()
    batches = calibration_batches(loaded.tokenizer, config.data)
    ctx = unit_context(loaded, batches, config.data, config.device, config.progress)
    allocation, target = allocate(allocator, plan_file, target, Pattern.parse("unstructured"), ctx)
    records = structured_walk(
        model, adapter, method, allocation.plan, batches, config.device, config.reconstruct, config.keep_heads,
        config.ridge_lambda, config.progress,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    record_structure(model.config, blocks)
    after = parameter_count(model)
    removed = 1 - after["blocks"] / before["blocks"]
    log.info("structured %s: %d → %d parameters (%.1f %% of the blocks) in %.1f s", method.name, before["total"],
             after["total"], 100 * removed, seconds)  # fmt: skip

    body: dict[str, Any] = {
        "stage": "prune",
        "structured": True,
        "source_model": config.model,
        "method": {"name": method.name, "options": method.options()},
        "reconstruct": {"enabled": config.reconstruct, "lambda": config.ridge_lambda},
        "keep_heads": config.keep_heads,
        "pattern": "structured",
        "target_sparsity": target,
        "allocation": {
            "name": allocation.options.get("allocation", config.allocation) if plan_file else config.allocation,
            "plan_file": str(config.plan_file) if config.plan_file else None,
            **allocation.to_dict(),
        },
        "calibration": {**config.data.to_dict(), "used": True, "tokens": sum(b.numel() for b in batches)},
        "parameters": {"before": before, "after": after},
        "sparsity": {"overall": removed, "parameters_removed": before["total"] - after["total"]},
        "units": [asdict(r) for r in records],
        "timing": {"prune_seconds": seconds, "peak_rss_mib_after_prune": peak_rss_mib()},
        "environment": environment(),
    }
    return finish_prune(loaded, body, allocation, config.out, config.overwrite, config.evaluate, config.device,
                        config.progress)  # fmt: skip
