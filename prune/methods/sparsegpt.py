"""SparseGPT (Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
One-Shot", ICML 2023), Algorithm 1 — run by the shared OBS sweep of `prune.obs`.

For a linear ``W: [out, in]`` with calibration Hessian ``H = 2XXᵀ/N: [in, in]`` (`HessianAccumulator`):
1. dead inputs (``H_jj = 0``) get ``H_jj = 1`` and ``W[:, j] = 0``; damping ``H += λ·mean(diag H)·I``;
2. ``U = chol(H⁻¹)ᵀ`` (upper Cholesky factor of the inverse Hessian, §3 "Hessian synchronisation");
3. columns are processed in blocks of ``B`` (lazy batch updates, §3): inside a block the mask is chosen
   by the OBS saliency ``w² / [U]_jj²`` (Eq. 3) — over the whole block (layer scope), per row of the
   block (row scope), or per group of M columns when the block reaches it (N:M, §3 "semi-structured");
4. each column's pruning error ``δ = (w − w·m) / U_jj`` is propagated to the remaining columns
   (Eq. 2 / OBS update ``W[:, j:] −= δ ⊗ U[j, j:]``) and, at the end of a block, to all later columns.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prune.errors import SlimpackError
from prune.masks import Pattern
from prune.methods.base import METHODS
from prune.obs import ColumnQuantizer, SweepPruning, obs_sweep
from prune.stats import Stats


def sparsegpt_prune(
    W: torch.Tensor,
    H: torch.Tensor,
    sparsity: float,
    pattern: Pattern,
    blocksize: int = 128,
    percdamp: float = 0.01,
    quantizer: ColumnQuantizer | None = None,
    consume_H: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(W_pruned [out, in] fp32, mask [out, in] bool, True = pruned)``; inputs are not modified
    (``H`` is consumed with ``consume_H``: `prune.obs.obs_sweep`).

    With a ``quantizer`` this is SparseGPT's joint mode: the kept weights of each column are rounded onto
    the grid in the same pass, and both errors are propagated together; the weight's exact zeros are then
    kept as pruned (they count towards the target), so a pruned source loses none of its zeros."""
    fixed = (W == 0) if quantizer is not None else None
    return obs_sweep(
        W,
        H,
        fixed_mask=fixed,
        prune=SweepPruning(sparsity, pattern),
        quantizer=quantizer,
        blocksize=blocksize,
        percdamp=percdamp,
        consume_H=consume_H,
    )


class SparseGPT:
    """`LayerMethod` wrapper around `sparsegpt_prune`."""

    name = "sparsegpt"
    needs: tuple[str, ...] = ("hessian",)
    needs_gradients = False
    default_scope = "layer"
    modifies_weights = True
    solver = True

    def __init__(self, blocksize: int = 128, percdamp: float = 0.01) -> None:
        if blocksize < 1:
            raise SlimpackError(f"blocksize {blocksize} must be ≥ 1; the paper uses 128")
        if not 0.0 <= percdamp:
            raise SlimpackError(f"percdamp {percdamp} must be ≥ 0; the paper uses 0.01")
        self.blocksize = blocksize
        self.percdamp = percdamp

    def compress(self, layer: nn.Linear, stats: Stats, sparsity: float, pattern: Pattern) -> None:
        W, _ = sparsegpt_prune(layer.weight.data, stats["hessian"], sparsity, pattern, self.blocksize, self.percdamp,
                               consume_H=stats.owned)  # fmt: skip
        layer.weight.data.copy_(W.to(layer.weight.dtype))

    def compress_joint(
        self, layer: nn.Linear, stats: Stats, sparsity: float, pattern: Pattern, quantizer: ColumnQuantizer
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SparseGPT's joint mode: prune and quantize in the same sweep; returns ``(W' [out, in], mask)``."""
        return sparsegpt_prune(
            layer.weight.data, stats["hessian"], sparsity, pattern, self.blocksize, self.percdamp, quantizer,
            consume_H=stats.owned,
        )

    def options(self) -> dict[str, Any]:
        return {"blocksize": self.blocksize, "percdamp": self.percdamp}


METHODS.register("sparsegpt")(SparseGPT)
