"""Layerwise sparsity allocation: a pre-pass that returns a sparsity plan ``{module_name: ratio}``.

Every allocator returns an `Allocation`: the plan for every prunable linear (its parameter-weighted
mean equals the target, every ratio in [0, 1)), the per-block ratios, and — where the method has one —
the per-block importance it was derived from. The walker only ever sees the plan.

For an N:M base pattern (fixed M) a plan is quantized to multiples of 1/M per block with the total
number of pruned weights kept (`quantize_nm`): that is mixed N:M (DLP, Appendix E.2).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from prune.errors import SlimpackError
from prune.io import read_text_file
from prune.ranks import Ranks
from prune.registry import Registry

SparsityPlan = dict[str, float]


@dataclass
class AllocationContext:
    """What an allocator may use: the model, its linears per block, and the calibration batches."""

    block_linears: Sequence[Sequence[str]]
    numel: dict[str, int] = field(default_factory=dict)
    model: nn.Module | None = None
    adapter: Any = None
    batches: Sequence[torch.Tensor] | None = None
    device: str = "cpu"
    progress: bool = False
    heldout: Callable[[int], Sequence[torch.Tensor]] | None = None  # n → held-out calibration windows
    kind: str = "unstructured"  # "structured": the names are units (`{block}.self_attn`, `{block}.mlp`)
    blocks: Callable[[], Any] | None = None  # a fresh read-only `prune.walker.BlockStore` (streamed models)
    ranks: Ranks = field(default_factory=Ranks)  # under torchrun: the statistics walks split their calibration

    def block_numel(self) -> list[int]:
        return [sum(self.numel.get(n, 1) for n in names) for names in self.block_linears]


@dataclass
class Allocation:
    plan: SparsityPlan
    block_ratios: list[float]
    importance: list[float] | None = None
    importance_label: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Callable[[Path], None]] = field(default_factory=dict)  # file name → writer (not in JSON)

    def write_artifacts(self, base: Path) -> None:
        """Write each artifact to ``base / name`` (a prune's output directory)."""
        for name, write in self.artifacts.items():
            write(base / name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "block_ratios": self.block_ratios,
            "importance": self.importance,
            "importance_label": self.importance_label,
            "options": self.options,
            "plan": self.plan,
        }


class Allocator(Protocol):
    """A sparsity plan maker. Declares whether it runs a calibration pre-pass (``needs_calibration``: the
    stage then prepares calibration batches) and whether it can allocate structured units (``structured``:
    attention / FFN units of `prune.structured` instead of weight matrices), and whether it runs on a streamed
    model (``streams``: its passes use only the walker and ``AllocationContext.blocks``, never the whole model)."""

    name: str
    needs_calibration: bool
    structured: bool
    streams: bool

    def allocate(self, sparsity: float, ctx: AllocationContext) -> Allocation: ...


ALLOCATORS: Registry[Callable[..., Allocator]] = Registry("allocator")


def block_plan(block_ratios: Sequence[float], ctx: AllocationContext) -> SparsityPlan:
    """Every linear of block ``l`` gets ``block_ratios[l]``."""
    if len(block_ratios) != len(ctx.block_linears):
        raise ValueError(f"{len(block_ratios)} ratios for {len(ctx.block_linears)} blocks")
    return {name: float(r) for r, names in zip(block_ratios, ctx.block_linears) for name in names}


def weighted_mean(plan: SparsityPlan, numel: dict[str, int]) -> float:
    total = sum(numel.get(n, 1) for n in plan)
    return sum(r * numel.get(n, 1) for n, r in plan.items()) / total


def validate_plan(plan: SparsityPlan, ctx: AllocationContext, sparsity: float | None = None, tol: float = 1e-4) -> None:
    """Every prunable linear once, every ratio in [0, 1), and (if given) the weighted mean on target."""
    expected = {n for names in ctx.block_linears for n in names}
    unknown = sorted(set(plan) - expected)
    if unknown:
        raise SlimpackError(
            f"plan names {len(unknown)} module(s) the model lacks, e.g. {unknown[0]!r}; write the plan for this model"
        )
    missing = sorted(expected - set(plan))
    if missing:
        raise SlimpackError(
            f"plan misses {len(missing)} prunable module(s), e.g. {missing[0]!r}; give every linear a ratio"
        )
    bad = {n: r for n, r in plan.items() if not (isinstance(r, (int, float)) and 0.0 <= r < 1.0 and math.isfinite(r))}
    if bad:
        name, ratio = next(iter(bad.items()))
        raise SlimpackError(
            f"plan ratio {ratio} for {name!r} is outside [0, 1); lower the allocation's spread (alpha / lambda / delta) "
            "or the target sparsity"
        )
    if sparsity is not None:
        mean = weighted_mean(plan, ctx.numel)
        if abs(mean - sparsity) > tol:
            raise SlimpackError(f"plan's parameter-weighted mean {mean:.4f} misses the target sparsity {sparsity:.4f}")


def quantize_nm(block_ratios: Sequence[float], m: int, n_base: int, weights: Sequence[int] | None = None) -> list[int]:
    """Mixed N:M: per block an integer N (zeros per group of M) near ``ratio · M`` with
    ``Σ_l w_l·N_l = N_base · Σ_l w_l`` (equal weights: the same total of kept parameters as uniform
    ``N_base:M``). Largest-remainder rounding, N kept in [0, M−1]."""
    w = list(weights) if weights is not None else [1] * len(block_ratios)
    if len(set(w)) != 1:
        raise SlimpackError("mixed N:M needs blocks of equal size; use an unstructured pattern for this model")
    ideal = [min(max(r * m, 0.0), m - 1.0) for r in block_ratios]
    n = [math.floor(x) for x in ideal]
    budget = n_base * len(n) - sum(n)
    order = sorted(range(len(n)), key=lambda i: ideal[i] - n[i], reverse=True)
    step = 1 if budget > 0 else -1
    i = 0
    while budget != 0:
        j = order[i % len(order)] if step > 0 else order[::-1][i % len(order)]
        if 0 <= n[j] + step <= m - 1:
            n[j] += step
            budget -= step
        i += 1
        if i > 4 * m * len(n):  # pragma: no cover - only if the budget is infeasible
            raise SlimpackError(f"cannot reach {n_base}:{m} on average with N in [0, {m - 1}]")
    return n


@dataclass
class PlanRecord:
    """``slimpack plan``'s JSON (a plan file `read_plan_file` reads back): the model, the allocation's name, its
    target and base pattern, the calibration (the `prune.data.DataSpec` and whether it was used), the
    `Allocation` (per-block ratios, importance, options, the ratio of every linear), the machine."""

    model: str
    allocation: str
    sparsity: float
    pattern: str
    calibration: dict[str, Any]
    block_ratios: list[float]
    importance: list[float] | None
    importance_label: str
    options: dict[str, Any]
    plan: SparsityPlan
    environment: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_plan_file(path: Path) -> tuple[SparsityPlan, str]:
    """A plan JSON: ``{module: ratio}`` or the ``slimpack plan`` output (``{"plan": {...}, ...}``); returns the
    plan and the name of the allocation that wrote it."""
    text = read_text_file(Path(path), "plan file", "write one with `slimpack plan`")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SlimpackError(f"plan file {str(path)!r} is not valid JSON ({err.msg}, line {err.lineno})") from None
    plan = data.get("plan", data) if isinstance(data, dict) else None
    if not isinstance(plan, dict):
        raise SlimpackError(f"plan file {str(path)!r} holds no {{module: ratio}} mapping")
    return plan, str(data.get("allocation", "file"))


def allocate(
    allocator: Allocator | None,
    plan_file: tuple[SparsityPlan, str] | None,
    sparsity: float,
    pattern: Any,
    ctx: AllocationContext,
) -> tuple[Allocation, float]:
    """The validated plan (from ``allocator``, or as read by `read_plan_file`) and its target; for an N:M
    ``pattern`` (a `prune.masks.Pattern`) the plan becomes mixed N:M."""
    if plan_file is not None:
        plan, source = plan_file
        validate_plan(plan, ctx)
        sparsity = weighted_mean(plan, ctx.numel)
        ratios = [sum(plan[n] for n in names) / len(names) for names in ctx.block_linears]
        allocation = Allocation(plan, ratios, options={"allocation": source})
    else:
        assert allocator is not None
        allocation = allocator.allocate(sparsity, ctx)
    if pattern.is_nm:  # mixed N:M: an integer N per block, same kept-parameter total as uniform
        ns = quantize_nm(allocation.block_ratios, pattern.m, pattern.n, ctx.block_numel())
        allocation.block_ratios = [n / pattern.m for n in ns]
        allocation.plan = block_plan(allocation.block_ratios, ctx)
        allocation.options["block_n"] = ns
    validate_plan(allocation.plan, ctx, sparsity)
    return allocation, sparsity
