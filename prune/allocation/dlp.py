"""DLP — Dynamic Layerwise Pruning (`001_0da1aa919c7f675c.txt`), Algorithm 1, Eq. 5–6.

Per transformer block l (all its linears together):
- Eq. 3: Wanda scores ``A_ij = |W_ij| · ‖X_j‖₂`` (``[out, in]`` per linear, dense model);
- Eq. 5: unimportance ``S_l = median(A over every weight of the block)``;
- Eq. 6: relative importance ``I_l = 1 − S_l / Σ_k S_k``;
- Alg. 1 lines 8–14: ``d_l = (I_l − min I) / (max I − min I) · 2α`` and ``R_l = p + mean(d) − d_l``.
Ratios are per block and shared by the block's linears (Appendix C); pruning inside a linear stays
per-output (Appendix D), which is the method's own default scope.
α defaults to Table 19 for the target sparsity (nearest listed target). Table 19 stops at 80 %: where the
table's α would give some block a ratio ≥ 1 (e.g. 0.12 at a 90 % target), the default α is scaled down until
the largest ratio is `MAX_DEFAULT_RATIO` (ratios are linear in α: ``max R − p = 2α·(mean(u) − min(u))`` with
``u`` the min-max-scaled importance); the manifest records both values. An α given explicitly is never changed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prune.allocation.base import ALLOCATORS, Allocation, AllocationContext, block_plan
from prune.allocation.scores import block_reductions, median, spread

log = logging.getLogger(__name__)

MAX_DEFAULT_RATIO = 0.99  # the largest block ratio a default α may give

# Table 19: α per target sparsity.
ALPHA_TABLE_19 = {0.1: 0.06, 0.2: 0.02, 0.3: 0.04, 0.4: 0.02, 0.5: 0.04, 0.6: 0.1, 0.7: 0.15, 0.8: 0.12}


def default_alpha(sparsity: float) -> float:
    return ALPHA_TABLE_19[min(ALPHA_TABLE_19, key=lambda s: abs(s - sparsity))]


def dlp_importance(medians: Sequence[float]) -> list[float]:
    """Eq. 6: ``I_l = 1 − S_l / Σ S``."""
    total = sum(medians)
    return [1.0 - s / total for s in medians]


def dlp_ratios(medians: Sequence[float], sparsity: float, alpha: float) -> list[float]:
    """Algorithm 1 from the per-block medians ``S_l``."""
    return spread(dlp_importance(medians), sparsity, alpha)


def fit_alpha(medians: Sequence[float], sparsity: float, alpha: float) -> float:
    """``alpha``, or the smaller α whose largest ratio is `MAX_DEFAULT_RATIO` if ``alpha`` reaches 1."""
    top = max(dlp_ratios(medians, sparsity, alpha))
    return alpha if top < 1.0 else alpha * (MAX_DEFAULT_RATIO - sparsity) / (top - sparsity)


@ALLOCATORS.register("dlp")
class DLP:
    name = "dlp"
    needs_calibration = True
    structured = False  # per-matrix statistics: weight matrices only
    streams = True  # its passes go through the walker's block store

    def __init__(self, alpha: float | None = None) -> None:
        self.alpha = alpha

    def allocate(self, sparsity: float, ctx: AllocationContext) -> Allocation:
        alpha = self.alpha if self.alpha is not None else default_alpha(sparsity)
        medians = block_reductions(ctx, {"median": median})["median"]
        ratios = dlp_ratios(medians, sparsity, alpha)
        options: dict[str, object] = {"alpha": alpha, "medians": medians}
        if self.alpha is None and (fitted := fit_alpha(medians, sparsity, alpha)) != alpha:
            log.warning(
                "DLP: Table 19's α %.3g gives a block ratio ≥ 1 at target %.2f; using %.4g", alpha, sparsity, fitted
            )
            options.update(alpha=fitted, alpha_table_19=alpha)
            ratios = dlp_ratios(medians, sparsity, fitted)
        return Allocation(
            block_plan(ratios, ctx),
            ratios,
            importance=dlp_importance(medians),
            importance_label="DLP importance I = 1 − S/ΣS",
            options=options,
        )
