"""SparseGPT (Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
One-Shot", ICML 2023), Algorithm 1.

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
from prune.masks import Pattern, select_prune_mask
from prune.methods import METHODS
from prune.stats import Stats


def inverse_hessian_factor(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of the damped inverse Hessian, ``[in, in]`` fp32. Modifies ``H`` in place."""
    damp = percdamp * torch.mean(torch.diag(H))
    idx = torch.arange(H.shape[0], device=H.device)
    H[idx, idx] += damp
    try:
        L = torch.linalg.cholesky(H)
        Hinv = torch.cholesky_inverse(L)
        return torch.linalg.cholesky(Hinv, upper=True)
    except torch.linalg.LinAlgError as err:  # pragma: no cover - depends on data
        raise SlimpackError(
            f"Hessian is not positive definite even with damping {percdamp}; raise --percdamp "
            f"(e.g. 0.1) or use more calibration samples ({err})"
        ) from None


def sparsegpt_prune(
    W: torch.Tensor,
    H: torch.Tensor,
    sparsity: float,
    pattern: Pattern,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(W_pruned [out, in] fp32, mask [out, in] bool, True = pruned)``; inputs are not modified."""
    W = W.detach().clone().float()
    H = H.detach().clone().float()
    out_f, in_f = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    Hinv = inverse_hessian_factor(H, percdamp)
    mask = torch.zeros_like(W, dtype=torch.bool)
    if pattern.is_nm:
        blocksize = max(pattern.m, blocksize - blocksize % pattern.m)

    for i1 in range(0, in_f, blocksize):
        i2 = min(i1 + blocksize, in_f)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d = torch.diag(Hinv1)
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
        if not pattern.is_nm:
            mask1 = select_prune_mask(W1**2 / d.unsqueeze(0) ** 2, sparsity, pattern)
        for i in range(i2 - i1):
            if pattern.is_nm and i % pattern.m == 0:
                cols = slice(i, i + pattern.m)
                score = W1[:, cols] ** 2 / d[cols].unsqueeze(0) ** 2
                mask1[:, cols] = select_prune_mask(score, 0.0, pattern)
            w = W1[:, i]
            q = w.masked_fill(mask1[:, i], 0.0)
            err = (w - q) / d[i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        mask[:, i1:i2] = mask1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    W[mask] = 0.0
    return W, mask


class SparseGPT:
    """`LayerMethod` wrapper around `sparsegpt_prune`."""

    name = "sparsegpt"
    needs: tuple[str, ...] = ("hessian",)
    needs_gradients = False
    default_scope = "layer"

    def __init__(self, blocksize: int = 128, percdamp: float = 0.01) -> None:
        if blocksize < 1:
            raise SlimpackError(f"blocksize {blocksize} must be ≥ 1; the paper uses 128")
        if not 0.0 <= percdamp:
            raise SlimpackError(f"percdamp {percdamp} must be ≥ 0; the paper uses 0.01")
        self.blocksize = blocksize
        self.percdamp = percdamp

    def compress(self, layer: nn.Linear, stats: Stats, ratio: float, pattern: Pattern) -> None:
        W, _ = sparsegpt_prune(layer.weight.data, stats["hessian"], ratio, pattern, self.blocksize, self.percdamp)
        layer.weight.data.copy_(W.to(layer.weight.dtype))

    def options(self) -> dict[str, Any]:
        return {"blocksize": self.blocksize, "percdamp": self.percdamp}


METHODS.register("sparsegpt")(SparseGPT)
