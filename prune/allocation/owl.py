"""OWL — Outlier-Weighted Layerwise sparsity (Yin et al., ICML 2024), §3.

Per block l: the layerwise outlier distribution ``D_l`` = the fraction of the block's Wanda scores
``A_ij = |W_ij| · ‖X_j‖₂`` larger than ``M · mean(A)`` (the block's mean); blocks with more outliers
are pruned less: ``d_l = minmax(D)_l · 2λ`` and ``S_l = S + mean(d) − d_l ∈ [S − λ, S + λ]``.
Defaults: M = 5, λ = 0.08 (the paper's LLaMA settings).
"""

from __future__ import annotations

import torch

from prune.allocation.base import ALLOCATORS, Allocation, AllocationContext, block_plan
from prune.allocation.scores import block_reductions, spread


def outlier_ratio(scores: torch.Tensor, m: float) -> float:
    """Fraction of scores above ``m`` times their mean."""
    return (scores > m * scores.mean()).float().mean().item()


@ALLOCATORS.register("owl")
class OWL:
    name = "owl"
    needs_calibration = True
    structured = False  # per-matrix statistics: weight matrices only
    streams = True  # its passes go through the walker's block store

    def __init__(self, m: float = 5.0, lam: float = 0.08) -> None:
        self.m = m
        self.lam = lam

    def allocate(self, sparsity: float, ctx: AllocationContext) -> Allocation:
        ratios_d = block_reductions(ctx, {"outliers": lambda s: outlier_ratio(s, self.m)})["outliers"]
        ratios = spread(ratios_d, sparsity, self.lam)
        return Allocation(
            block_plan(ratios, ctx),
            ratios,
            importance=ratios_d,
            importance_label=f"outlier ratio D (A > {self.m:g}·mean)",
            options={"m": self.m, "lam": self.lam},
        )
