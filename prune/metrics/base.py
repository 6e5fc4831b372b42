"""Pruning metrics: pure functions ``score(W [out, in], stats) → [out, in]``; higher = keep.

Each metric is registered with the statistics it needs (see `prune.stats`) and the comparison scope
its paper uses for unstructured sparsity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from prune.registry import Registry
from prune.stats import Stats


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[torch.Tensor, Stats], torch.Tensor]
    needs: tuple[str, ...] = ()
    needs_gradients: bool = False
    default_scope: str = "row"


METRICS: Registry[Metric] = Registry("metric")


def register_metric(
    name: str, *, needs: tuple[str, ...] = (), needs_gradients: bool = False, default_scope: str = "row"
) -> Callable[[Callable[[torch.Tensor, Stats], torch.Tensor]], Callable[[torch.Tensor, Stats], torch.Tensor]]:
    def deco(fn: Callable[[torch.Tensor, Stats], torch.Tensor]) -> Callable[[torch.Tensor, Stats], torch.Tensor]:
        METRICS.register(name)(Metric(name, fn, needs, needs_gradients, default_scope))
        return fn

    return deco
