"""Magnitude pruning (Han et al. 2015; the LLM baseline of SparseGPT/Wanda): ``S = |W|``.

``W: [out, in]`` → ``S: [out, in]``. Compared over the whole layer, as the papers' baseline does.
"""

from __future__ import annotations

import torch

from prune.metrics.base import register_metric
from prune.stats import Stats


@register_metric("magnitude", default_scope="layer")
def magnitude(W: torch.Tensor, stats: Stats) -> torch.Tensor:
    return W.abs()
