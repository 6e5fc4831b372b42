"""Wanda (Sun et al., "A Simple and Effective Pruning Approach for LLMs", 2024), Eq. 1:

``S_ij = |W_ij| · ‖X_j‖₂``, compared per output row (§3, "per-output" comparison group).
``W: [out, in]``, ``‖X‖: [in]`` (from `InputNormAccumulator`) → ``S: [out, in]``.
"""

from __future__ import annotations

import torch

from prune.metrics.base import register_metric
from prune.stats import Stats


@register_metric("wanda", needs=("input_norm",), default_scope="row")
def wanda(W: torch.Tensor, stats: Stats) -> torch.Tensor:
    return W.abs() * stats["input_norm"].to(W.device, W.dtype).unsqueeze(0)
