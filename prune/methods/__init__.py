"""Layer methods: what the walker runs on each ``nn.Linear`` of a block.

A `LayerMethod` declares the statistics it needs (accumulator names from `prune.stats.ACCUMULATORS`,
plus ``needs_gradients`` for a full-model backward pass) and compresses one weight in place.
Methods are built by name from `METHODS` with keyword options, never by an if/elif chain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from prune.masks import Pattern, select_prune_mask
from prune.metrics import METRICS, Metric
from prune.registry import Registry
from prune.stats import Stats


class LayerMethod(Protocol):
    name: str
    needs: tuple[str, ...]
    needs_gradients: bool
    default_scope: str

    def compress(self, layer: nn.Linear, stats: Stats, ratio: float, pattern: Pattern) -> Any:
        """Compress ``layer.weight`` in place to ``ratio`` (ignored for N:M, which fixes its own).
        Pruners return None; quantizers return the layer's integer codes and grid."""
        ...

    def options(self) -> dict[str, Any]:
        """The method's parameters, for the manifest."""
        ...


METHODS: Registry[Callable[..., LayerMethod]] = Registry("method")


class MetricPruner:
    """Score with a metric, select the mask with the shared selector, zero the pruned weights."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric
        self.name = metric.name
        self.needs = metric.needs
        self.needs_gradients = metric.needs_gradients
        self.default_scope = metric.default_scope

    def prune_mask(self, layer: nn.Linear, stats: Stats, ratio: float, pattern: Pattern) -> torch.Tensor:
        """The metric's prune mask ``[out, in]`` (True = pruned) for the current weights."""
        return select_prune_mask(self.metric.fn(layer.weight.data.float(), stats), ratio, pattern)

    def compress(self, layer: nn.Linear, stats: Stats, ratio: float, pattern: Pattern) -> None:
        layer.weight.data.masked_fill_(self.prune_mask(layer, stats, ratio, pattern), 0.0)

    def options(self) -> dict[str, Any]:
        return {}


def _metric_factory(name: str) -> Callable[..., LayerMethod]:
    def build(**options: Any) -> LayerMethod:
        if options:
            raise TypeError(f"method {name!r} takes no options, got {sorted(options)}")
        return MetricPruner(METRICS.get(name))

    return build


for _name in METRICS.names():
    METHODS.register(_name)(_metric_factory(_name))

from prune.methods import pgz, sparsegpt  # noqa: E402,F401
