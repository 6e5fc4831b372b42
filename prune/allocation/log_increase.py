"""SlimGPT's Incremental Pruning Ratio (`004_f713cb29baee6c3d.txt`, §4.3, Eq. 6):

``r_i = r_0 + (r_{n−1} − r_0) · log(i + 1) / log(n)``, ``0 ≤ i < n`` blocks — low ratios in shallow
blocks (their errors accumulate through the rest of the network), rising quickly then slowly.
With ``c = mean_i log(i+1)/log(n)`` the mean is ``r_0 + s·c`` for the span ``s = r_{n−1} − r_0``, so the
target T fixes one end from the other: give ``first`` (r_0), ``last`` (r_{n−1}) or ``span`` (s).
Default: half of the largest span that keeps both ends in [0, 1): ``s = ½·min(T/c, (1 − T)/(1 − c))``
(at T = 0.5 and 30 blocks: r_0 = 0.25, r_29 ≈ 0.59).
"""

from __future__ import annotations

import math

from prune.allocation.base import ALLOCATORS, Allocation, AllocationContext, block_plan
from prune.errors import SlimpackError


def log_ratios(n: int, first: float, last: float) -> list[float]:
    if n == 1:
        return [first]
    return [first + (last - first) * math.log(i + 1) / math.log(n) for i in range(n)]


def solve_ends(
    n: int, sparsity: float, first: float | None = None, last: float | None = None, span: float | None = None
) -> tuple[float, float]:
    """``(r_0, r_{n−1})`` with mean ``target`` from at most one of first / last / span."""
    if n == 1:
        return sparsity, sparsity
    if sum(x is not None for x in (first, last, span)) > 1:
        raise SlimpackError("give log-increase at most one of first=, last=, span=: the target fixes the rest")
    c = sum(math.log(i + 1) for i in range(n)) / n / math.log(n)
    if first is not None:
        return first, first + (sparsity - first) / c
    if last is not None:
        return (sparsity - last * c) / (1 - c), last
    if span is None:
        span = 0.5 * min(sparsity / c, (1 - sparsity) / (1 - c))
    return sparsity - span * c, sparsity - span * c + span


@ALLOCATORS.register("log-increase")
class LogIncrease:
    name = "log-increase"
    needs_calibration = False
    structured = True  # block ratios apply to structured units too
    streams = True  # its passes go through the walker's block store

    def __init__(self, first: float | None = None, last: float | None = None, span: float | None = None) -> None:
        self.first, self.last, self.span = first, last, span

    def allocate(self, sparsity: float, ctx: AllocationContext) -> Allocation:
        n = len(ctx.block_linears)
        r0, rn = solve_ends(n, sparsity, self.first, self.last, self.span)
        ratios = log_ratios(n, r0, rn)
        return Allocation(block_plan(ratios, ctx), ratios, options={"first": r0, "last": rn})
