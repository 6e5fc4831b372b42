"""The one OBS column sweep shared by SparseGPT (pruning), GPTQ (quantization) and their joint mode.

Frantar & Alistarh, "SparseGPT", ICML 2023, Algorithm 1 (and §3 "Joint sparsification & quantization");
Frantar et al., "GPTQ", ICLR 2023, Algorithm 1 (lazy batches, Cholesky of the inverse, act-order §4).

For a linear ``W: [out, in]`` with calibration Hessian ``H = 2XXᵀ/N: [in, in]``:
1. dead inputs (``H_jj = 0``) get ``H_jj = 1`` and ``W[:, j] = 0``; with act-order the columns are
   visited in decreasing ``H_jj`` (``perm``); damping ``H += λ·mean(diag H)·I``;
2. ``U = chol(H⁻¹)ᵀ`` — the upper Cholesky factor of the inverse Hessian (SparseGPT Eq. 2 rewritten);
3. columns are swept in blocks of ``B``. Inside a block the prune mask is the union of a mask fixed in
   advance (an already pruned model, or a metric's mask) and, when ``prune`` is given, SparseGPT's OBS
   selection by saliency ``w² / U_jj²`` (Eq. 3) — over the block, per row, or per M columns (N:M); the
   fixed positions rank lowest there, so they count towards the target instead of adding to it;
4. column j becomes ``q = Q(w ⊙ ¬m)`` — ``Q`` is the identity without a quantizer, otherwise the
   quantizer's grid, on which 0 is exact — and its error ``δ = (w − q) / U_jj`` is propagated to the
   later columns (``W[:, j:] −= δ ⊗ U[j, j:]``; whole later blocks at the end of a block).
   A pruned weight is set to exactly 0 when its column is reached, so no propagation can revive it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import torch

from prune.errors import SlimpackError
from prune.masks import Pattern, select_prune_mask

log = logging.getLogger(__name__)

DAMPING_TRIES = 4  # λ, 10λ, 100λ, 1000λ (of mean diag H)


class ColumnQuantizer(Protocol):
    """A quantization grid fitted group by group while the sweep visits columns (``j`` = sweep order)."""

    group_size: int

    def start(self, W: torch.Tensor, perm: torch.Tensor | None) -> None:
        """Called once with the masked weight ``[out, in]`` in original column order (static grids)."""
        ...

    def opens_group(self, j: int) -> bool:
        """Whether sweep column ``j`` starts a group whose grid must be fitted now."""
        ...

    def fit(self, j: int, W_group: torch.Tensor) -> None:
        """Fit the grid of the group starting at sweep column ``j`` on its current weights ``[out, g]``."""
        ...

    def quantize(self, j: int, w: torch.Tensor) -> torch.Tensor:
        """Round sweep column ``j`` (``[out]``) onto its group's grid; return the dequantized values."""
        ...


@dataclass(frozen=True)
class SweepPruning:
    """SparseGPT's in-sweep mask selection: a target sparsity, unstructured or of every M columns (N:M)."""

    sparsity: float
    pattern: Pattern


def inverse_hessian_factor(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of the damped inverse Hessian, ``[in, in]`` fp32. ``H`` (contiguous) is consumed:
    damped in place, then overwritten with ``H⁻¹`` — one more ``[in, in]`` matrix at a time, not three
    (Qwen2.5-7B's ``down_proj``: 1.34 GiB each).

    A Cholesky of ``H`` that fails (a rank-deficient or numerically indefinite ``H``: large layers, few or
    bf16-born samples) is retried with 10× the damping, up to ``DAMPING_TRIES`` times (logged), then a clear
    error; so is an ``H⁻¹`` that is not positive definite (``H`` is gone by then)."""
    mean_diag = torch.mean(torch.diag(H))
    idx = torch.arange(H.shape[0], device=H.device)
    added = 0.0
    for attempt in range(DAMPING_TRIES):
        factor = percdamp * 10**attempt
        H[idx, idx] += (factor - added) * mean_diag
        added = factor
        try:
            L = torch.linalg.cholesky(H)
        except torch.linalg.LinAlgError:
            log.warning("Hessian [%d×%d] not positive definite with damping %g; retrying", *H.shape, factor)
            continue
        torch.cholesky_inverse(L, out=H.mT)  # H⁻¹ (symmetric) where H was; the column-major view needs no copy
        del L
        try:
            U = torch.linalg.cholesky(H, upper=True)
        except torch.linalg.LinAlgError:
            raise SlimpackError(
                f"Hessian [{H.shape[0]}×{H.shape[1]}]: its inverse is not positive definite with damping "
                f"{factor:g}; use more calibration samples or more damping (-O percdamp=…)"
            ) from None
        if attempt:
            log.warning("Hessian [%d×%d] factored with damping %g (asked: %g)", *H.shape, factor, percdamp)
        return U
    raise SlimpackError(
        f"Hessian [{H.shape[0]}×{H.shape[1]}] is not positive definite even with damping {added:g} "
        f"({DAMPING_TRIES} tries from {percdamp:g}); use more calibration samples, or check the model for "
        "inf/NaN weights"
    )


def act_order_permutation(H: torch.Tensor) -> torch.Tensor:
    """GPTQ's act-order: columns by decreasing ``H_jj`` (stable, so ties keep their order)."""
    return torch.argsort(torch.diag(H), descending=True, stable=True)


def obs_sweep(
    W: torch.Tensor,
    H: torch.Tensor,
    *,
    fixed_mask: torch.Tensor | None = None,
    prune: SweepPruning | None = None,
    quantizer: ColumnQuantizer | None = None,
    act_order: bool = False,
    blocksize: int = 128,
    percdamp: float = 0.01,
    consume_H: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(W' [out, in] fp32, mask [out, in] bool, True = pruned)``; the inputs are not modified, except
    ``H`` with ``consume_H`` (a contiguous fp32 Hessian its caller no longer needs: `prune.stats.Stats.owned`),
    which is then factored where it lies instead of in a copy — the same numbers, one ``[in, in]`` less.

    ``W'`` is zero wherever ``mask`` is True and, with a quantizer, on its grid everywhere."""
    W = W.detach().clone().float()
    owned = consume_H and H.dtype == torch.float32 and H.is_contiguous()
    H = H.detach() if owned else H.detach().to(torch.float32, copy=True)  # one [in, in] copy, whatever its dtype
    out_f, in_f = W.shape
    mask = torch.zeros_like(W, dtype=torch.bool) if fixed_mask is None else fixed_mask.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = act_order_permutation(H) if act_order else None
    if quantizer is not None:
        quantizer.start(W.masked_fill(mask, 0.0), perm)
    if perm is not None:
        W, H, mask = W[:, perm], H[perm][:, perm], mask[:, perm]
    Hinv = inverse_hessian_factor(H, percdamp)  # consumes this sweep's copy of H (or H itself: consume_H)
    del H
    nm = prune is not None and prune.pattern.is_nm
    for step in (prune.pattern.m if nm else 1, quantizer.group_size if quantizer is not None else 1):  # type: ignore[union-attr]
        if 0 < step < in_f:
            blocksize = max(step, blocksize - blocksize % step)  # groups never straddle a block

    for i1 in range(0, in_f, blocksize):
        i2 = min(i1 + blocksize, in_f)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d = torch.diag(Hinv1)
        mask1 = mask[:, i1:i2].clone()
        if prune is not None and not nm:  # fixed zeros score lowest: they count towards the target
            score = (W1**2 / d.unsqueeze(0) ** 2).masked_fill(mask1, -1.0)
            mask1 |= select_prune_mask(score, prune.sparsity, prune.pattern)
        for i in range(i2 - i1):
            j = i1 + i
            if nm and i % prune.pattern.m == 0:  # type: ignore[union-attr]
                cols = slice(i, i + prune.pattern.m)  # type: ignore[union-attr]
                score = (W1[:, cols] ** 2 / d[cols].unsqueeze(0) ** 2).masked_fill(mask1[:, cols], -1.0)
                mask1[:, cols] |= select_prune_mask(score, prune.sparsity, prune.pattern)  # type: ignore[union-attr]
            if quantizer is not None and quantizer.opens_group(j):
                g = slice(i, i + quantizer.group_size)
                quantizer.fit(j, W1[:, g].masked_fill(mask1[:, g], 0.0))
            w = W1[:, i]
            q = w.masked_fill(mask1[:, i], 0.0)
            if quantizer is not None:
                q = quantizer.quantize(j, q).masked_fill(mask1[:, i], 0.0)
            err = (w - q) / d[i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        mask[:, i1:i2] = mask1
        W[:, i2:].addmm_(Err1, Hinv[i1:i2, i2:], alpha=-1.0)  # in place: no [out, in] temporary (0.17 GiB at 7B)
    if perm is not None:
        inv = torch.argsort(perm)
        W, mask = W[:, inv], mask[:, inv]
    W[mask] = 0.0
    return W, mask


def round_to_grid(W: torch.Tensor, quantizer: ColumnQuantizer) -> torch.Tensor:
    """Fit every group of ``W [out, in]`` on its current weights and round each weight onto its grid,
    with no error feedback (round-to-nearest); returns the dequantized ``[out, in]``."""
    quantizer.start(W, None)
    out = torch.empty_like(W)
    for j in range(W.shape[1]):
        if quantizer.opens_group(j):
            quantizer.fit(j, W[:, j : j + quantizer.group_size])
        out[:, j] = quantizer.quantize(j, W[:, j])
    return out
