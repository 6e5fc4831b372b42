"""SparsitySolver's action constraints (`003_f48065355bfe72a6.txt`, §3.1, Algorithm 1).

The agent's raw action ``A ∈ ℝ^N`` (one entry per prunable unit) becomes *preserved* ratios ``ã`` whose kept
parameters meet the budget ``(1 − P)·W_all``:

1. ``a ← (tanh(A) + 1)/2`` — the paper prints ``tanh(A + 1)/2``, which is not in [0, 1]; we read it as the usual
   squashing to (0, 1);
2. ``a ← a·(a_max − a_min + 0.1) + a_min``;  3. ``a ← clip(a, 0, a_max)``;
4. round each unit to its granularity (``Round(a_i·w_i)/w_i``; here a unit's step is a GQA round of query heads
   for attention; matrices and FFNs take any ratio — the pruner rounds rows/channels as for every allocator);
5. in order, ``ã_i = min(a_i, ((1 − P)·W_all − W_other)/w_i)`` with ``W_other = Σ_{k<i} ã_k w_k + Σ_{k>i} a_min w_k``.

Step 5 only caps, so a timid action would prune *more* than P. We add a fill (ours): the shortfall is spread
over the units' headroom up to ``a_max`` in proportion, in whole steps, the last steps one by one — so the
kept total meets the budget exactly when a continuous unit has room, else within one step below (tests: any action meets P).
Shapes: ``A, w, step, ã: [N]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from prune.errors import SlimpackError


def check_bounds(sparsity: float, a_min: float, a_max: float, weights: Sequence[int], steps: Sequence[int]) -> None:
    if not 0.0 <= a_min <= 1.0 - sparsity <= a_max <= 1.0:
        raise SlimpackError(
            f"rl-search bounds must satisfy 0 ≤ a_min ≤ 1 − target ≤ a_max ≤ 1 (preserved ratios); got a_min={a_min}, "
            f"a_max={a_max} at sparsity {sparsity}: widen them with -A a_min=… -A a_max=…"
        )
    low = [i for i, (w, s) in enumerate(zip(weights, steps)) if s and a_min * w < s - 1e-9]
    if low:
        raise SlimpackError(
            f"rl-search a_min={a_min} keeps less than one prunable step of unit {low[0]} (it would lose every head); "
            "raise -A a_min="
        )


def _snap(x: torch.Tensor, step: torch.Tensor, how: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``x`` (parameters) to whole steps with ``how`` (floor / ceil / round); a zero step is continuous."""
    safe = torch.where(step > 0, step, torch.ones_like(step))
    return torch.where(step > 0, how(x / safe) * safe, x)


def constrain(
    raw: torch.Tensor, sparsity: float, weights: Sequence[int], steps: Sequence[int], a_min: float, a_max: float
) -> list[float]:
    """Preserved ratio per unit from the raw action (Algorithm 1 + the fill). ``steps[i]`` is unit i's
    granularity in parameters (0: any ratio)."""
    w = torch.tensor(weights, dtype=torch.float64)
    step = torch.tensor(steps, dtype=torch.float64)
    eps = 1e-9

    def floor(x: torch.Tensor) -> torch.Tensor:
        return torch.floor(x + eps)

    def ceil(x: torch.Tensor) -> torch.Tensor:
        return torch.ceil(x - eps)

    a = (torch.tanh(raw.double()) + 1) / 2
    a = a * (a_max - a_min + 0.1) + a_min
    a = a.clamp(0.0, a_max)
    lo = _snap(a_min * w, step, ceil)
    hi = _snap(a_max * w, step, floor)
    kept = torch.minimum(torch.maximum(_snap(a * w, step, torch.round), lo), hi)  # parameters kept
    budget = (1.0 - sparsity) * w.sum()
    n = len(weights)
    for i in range(n):
        other = kept[:i].sum() + lo[i + 1 :].sum()
        cap = _snap((budget - other).reshape(1), step[i : i + 1], floor)[0]
        kept[i] = torch.maximum(torch.minimum(kept[i], cap), lo[i])
    deficit = budget - kept.sum()
    room = hi - kept
    if deficit > 0 and room.sum() > 0:
        share = _snap(room * min(1.0, float(deficit / room.sum())), step, floor)
        kept += share
        deficit -= share.sum()
        for i in sorted(range(n), key=lambda i: steps[i], reverse=True):  # the rest, coarse units first
            add = torch.minimum(hi[i] - kept[i], _snap(deficit.reshape(1), step[i : i + 1], floor)[0]).clamp(min=0)
            kept[i] += add
            deficit -= add
    return (kept / w).tolist()
