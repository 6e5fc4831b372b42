"""Structured pruning: whole attention heads and FFN channels, so the model itself gets smaller.

A `StructuredMethod` picks what goes from one unit's last linear (``o_proj`` for heads, ``down_proj`` for
channels) and may compensate that linear in place; the walk (`prune.structured.walk`) then cuts the rows and
columns out (`prune.structured.shapes`) and, with ``reconstruct``, folds the pruned channels into the kept ones
(`prune.structured.reconstruct`). Methods are built by name from `STRUCTURED`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from prune.registry import Registry
from prune.stats import Stats
from prune.structured.activation import lowest_channels, lowest_heads
from prune.structured.slimgpt import prune_channels, prune_heads


class StructuredMethod(Protocol):
    name: str
    needs: tuple[str, ...]  # accumulators on the unit's last linear
    needs_gradients: bool  # (as `prune.methods.LayerMethod`'s: whether the walk needs whole-model gradients)

    def heads(self, W: torch.Tensor, stats: Stats, n_remove: int, head_dim: int, kv_heads: int) -> list[int]:
        """Query heads to remove from ``o_proj.weight W: [hidden, n·d]`` (compensating ``W`` in place if it can)."""
        ...

    def channels(self, W: torch.Tensor, stats: Stats, n_remove: int) -> list[int]:
        """FFN channels to remove from ``down_proj.weight W: [hidden, I]``."""
        ...

    def options(self) -> dict[str, Any]: ...


STRUCTURED: Registry[Callable[..., StructuredMethod]] = Registry("structured method")


@STRUCTURED.register("slimgpt")
class SlimGPT:
    """SlimGPT's Batched Greedy Pruning (`prune.structured.slimgpt`)."""

    name = "slimgpt"
    needs = ("hessian",)
    needs_gradients = False

    def __init__(
        self,
        grouped_cholesky: bool = True,
        percdamp: float = 0.01,
        ffn_group: int = 0,
        first: int = 1024,
        floor: int = 8,
    ) -> None:
        self.grouped_cholesky, self.percdamp = bool(grouped_cholesky), float(percdamp)
        self.ffn_group, self.first, self.floor = int(ffn_group), int(first), int(floor)

    def heads(self, W: torch.Tensor, stats: Stats, n_remove: int, head_dim: int, kv_heads: int) -> list[int]:

        return prune_heads(W, stats["hessian"], n_remove, head_dim, kv_heads, self.grouped_cholesky, self.percdamp)

    def channels(self, W: torch.Tensor, stats: Stats, n_remove: int) -> list[int]:

        fixed = self.ffn_group or None
        return prune_channels(W, stats["hessian"], n_remove, self.percdamp, self.first, self.floor, fixed)

    def options(self) -> dict[str, Any]:
        return {
            "grouped_cholesky": self.grouped_cholesky,
            "percdamp": self.percdamp,
            "ffn_group": self.ffn_group or "dynamic",
            "first": self.first,
            "floor": self.floor,
        }


@STRUCTURED.register("activation-l2")
class ActivationL2:
    """SparsitySolver's structured criterion: least activation ℓ2 norm (`prune.structured.activation`)."""

    name = "activation-l2"
    needs = ("input_norm",)
    needs_gradients = False

    def heads(self, W: torch.Tensor, stats: Stats, n_remove: int, head_dim: int, kv_heads: int) -> list[int]:

        return lowest_heads(stats["input_norm"], n_remove, head_dim, kv_heads)

    def channels(self, W: torch.Tensor, stats: Stats, n_remove: int) -> list[int]:

        return lowest_channels(stats["input_norm"], n_remove)

    def options(self) -> dict[str, Any]:
        return {}
