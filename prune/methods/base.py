"""Layer methods: what the walker runs on each ``nn.Linear`` of a block.

A `LayerMethod` declares the statistics it needs (accumulator names from `prune.stats.ACCUMULATORS`,
plus ``needs_gradients`` for a full-model backward pass), whether it changes weights (``modifies_weights``:
a statistics collector does not, so the walker hands on its calibration outputs), whether its compression is a
solve worth one owner rank (``solver``: an OBS sweep; under torchrun the walker runs it on one rank and
broadcasts the weights, `prune.walker.compress_group`) and compresses one weight in place. A solver that returns
something (a quantizer's codes) says how it travels to the writing rank (`SendsOutput`). Two optional capabilities are declared as protocols, so that a joint quantizer (`quant.methods`)
asks ``isinstance`` instead of probing attributes:
- `MaskPruner`: gives its prune mask for the current weights (metric pruners: magnitude, Wanda, Pruner-Zero);
- `JointPruner`: prunes and quantizes in one pass of its own (SparseGPT's and PGZ's joint modes).
Methods are built by name from `METHODS` with keyword options, never by an if/elif chain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

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
    modifies_weights: bool
    solver: bool

    def compress(self, layer: nn.Linear, stats: Stats, sparsity: float, pattern: Pattern) -> Any:
        """Compress ``layer.weight`` in place to ``sparsity`` (for N:M, the module's N/M).
        Pruners return None; quantizers return the layer's integer codes and grid."""
        ...

    def options(self) -> dict[str, Any]:
        """The method's parameters, for the manifest."""
        ...


@runtime_checkable
class MaskPruner(Protocol):
    """A pruner whose mask can be taken alone (a joint quantizer then compensates the pruning itself)."""

    def prune_mask(self, layer: nn.Linear, stats: Stats, sparsity: float, pattern: Pattern) -> torch.Tensor:
        """The prune mask ``[out, in]`` (True = pruned) for the current weights; the weights are not changed."""
        ...


@runtime_checkable
class JointPruner(Protocol):
    """A pruner with its own joint sparsification + quantization pass."""

    def compress_joint(
        self, layer: nn.Linear, stats: Stats, sparsity: float, pattern: Pattern, quantizer: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W' [out, in] on the quantizer's grid, prune mask [out, in])``; ``layer`` is not changed."""
        ...


@runtime_checkable
class SendsOutput(Protocol):
    """A method whose ``compress`` returns a record of tensors, sent from an owner rank to the writing rank as
    plain tensors (never pickled)."""

    def output_tensors(self, output: Any) -> dict[str, torch.Tensor]:
        """The tensors of ``output``, by name (fixed shapes and dtypes for the layer)."""
        ...

    def output_like(self, layer: nn.Linear) -> dict[str, torch.Tensor]:
        """Empty tensors shaped as `output_tensors` gives for ``layer`` (what a receiver fills)."""
        ...

    def output_from(self, tensors: dict[str, torch.Tensor]) -> Any:
        """The record again, from its tensors."""
        ...


METHODS: Registry[Callable[..., LayerMethod]] = Registry("method")


class MetricPruner:
    """Score with a metric, select the mask with the shared selector, zero the pruned weights."""

    modifies_weights = True
    solver = False  # a score and a selection: every rank computes it on the same statistics

    def __init__(self, metric: Metric) -> None:
        self.metric = metric
        self.name = metric.name
        self.needs = metric.needs
        self.needs_gradients = metric.needs_gradients
        self.default_scope = metric.default_scope

    def prune_mask(self, layer: nn.Linear, stats: Stats, sparsity: float, pattern: Pattern) -> torch.Tensor:
        """The metric's prune mask ``[out, in]`` (True = pruned) for the current weights."""
        return select_prune_mask(self.metric.fn(layer.weight.data.float(), stats), sparsity, pattern)

    def compress(self, layer: nn.Linear, stats: Stats, sparsity: float, pattern: Pattern) -> None:
        layer.weight.data.masked_fill_(self.prune_mask(layer, stats, sparsity, pattern), 0.0)

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
