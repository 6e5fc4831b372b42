"""Layerwise sparsity allocation: a pre-pass that returns ``{module_name: sparsity}``.

`uniform` gives every prunable linear the target. Later allocators (OWL, DLP, PI, SlimGPT's log
increase, SparsitySolver's search) register here with the same interface; the walker only sees the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from prune.registry import Registry

SparsityPlan = dict[str, float]


@dataclass
class AllocationContext:
    """What an allocator may use: the prunable linear names per block, and (later) calibration data."""

    block_linears: Sequence[Sequence[str]]
    extras: dict[str, Any] = field(default_factory=dict)


class Allocator(Protocol):
    def allocate(self, target: float, model: nn.Module, ctx: AllocationContext) -> SparsityPlan: ...


ALLOCATORS: Registry[Callable[..., Allocator]] = Registry("allocator")


@ALLOCATORS.register("uniform")
class Uniform:
    """Every prunable linear gets the target sparsity."""

    def allocate(self, target: float, model: nn.Module, ctx: AllocationContext) -> SparsityPlan:
        return {name: target for block in ctx.block_linears for name in block}
