"""Uniform allocation: every prunable linear gets the target (SparseGPT, Wanda)."""

from __future__ import annotations

from prune.allocation.base import ALLOCATORS, Allocation, AllocationContext, block_plan


@ALLOCATORS.register("uniform")
class Uniform:
    name = "uniform"
    needs_calibration = False
    structured = True  # block ratios apply to structured units too
    streams = True  # its passes go through the walker's block store

    def allocate(self, sparsity: float, ctx: AllocationContext) -> Allocation:
        ratios = [sparsity] * len(ctx.block_linears)
        return Allocation(block_plan(ratios, ctx), ratios)
