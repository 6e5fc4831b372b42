"""Pruner-Zero's searched metric (Dong et al., "Pruner-Zero: Evolving Symbolic Pruning Metric from
Scratch for LLMs", 2024; the metric the PI-based layerwise paper `000_*` builds on):

``S = |W ⊙ W| · mms(G)``, with ``mms(G) = (G − min G) / (max G − min G)`` (min-max scaling over the layer)
and ``G`` the gradient magnitudes of the dense model's LM loss accumulated over the calibration set
(`prune.stats.gradient_norms`). Compared per output row like Wanda.
``W, G: [out, in]`` → ``S: [out, in]``.
"""

from __future__ import annotations

import torch

from prune.metrics.base import register_metric
from prune.stats import Stats


def min_max_scale(x: torch.Tensor) -> torch.Tensor:
    """``(x − min) / (max − min)``; a constant tensor maps to ones (every weight equally important)."""
    lo, hi = x.min(), x.max()
    if hi <= lo:
        return torch.ones_like(x)
    return (x - lo) / (hi - lo)


@register_metric("pruner-zero", needs_gradients=True, default_scope="row")
def pruner_zero(W: torch.Tensor, stats: Stats) -> torch.Tensor:
    G = stats["grad"].to(W.device, W.dtype)
    return (W * W).abs() * min_max_scale(G)
