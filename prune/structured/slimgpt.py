"""SlimGPT: structured OBS pruning of attention heads and FFN channels (`004_f713cb29baee6c3d.txt`).

Column OBS (Eq. 4): pruning input column ``p`` of ``W: [out, in]`` costs ``‖W_{:,p}‖² / [H⁻¹]_pp`` and the other
columns absorb ``Δ = −W_{:,p}/[H⁻¹]_pp · H⁻¹_{p,:}``; ``H⁻¹`` is then updated by Eq. 3 (the column leaves ``H``).
Removing an *ordered* set ``F`` of columns this way, one after the other, ends where the closed form does
(`remove_columns`; the paper's Cholesky sweep over the reordered ``H⁻¹`` is one way to compute it):
``W_R −= W_F · (H⁻¹_FF)⁻¹ · H⁻¹_FR`` for the rest ``R``, and ``H⁻¹ ← H⁻¹_RR − H⁻¹_RF (H⁻¹_FF)⁻¹ H⁻¹_FR``, the
inverse of the Hessian of the columns left (Eq. 3 for the whole set). With ``H⁻¹_FF = LLᵀ`` both are a
triangular solve of ``g`` rows and one product, ``O(g·in·(out + in))`` for ``g`` columns, instead of ``g`` passes
over ``W``; ``H`` is inverted once per linear, as in the paper.

Batched Greedy Pruning (§4.2, Algorithm 1):
- heads of ``o_proj`` (``d`` columns each): the head-wise error needs the *updated* diagonals of ``H⁻¹`` while the
  head's own columns are removed one by one. By the two lemmas (permutation, principal-submatrix Cholesky)
  these are the squared diagonals of the Cholesky factor of each head's diagonal block of ``H⁻¹`` — all heads
  at once from ``Ĥ⁻¹ = Cholesky(Stack([H⁻¹_{0:d,0:d}, …]))`` (Eq. 5): ``err_h = Σ_j ‖W_{:,hd+j}‖² / Ĥ⁻¹_{h,j,j}²``
  (W not updated during the estimate, as in the paper). Without grouped Cholesky ("−GCD", Table 5) the
  initial diagonal ``[H⁻¹]_pp`` is used. The chosen head's columns are then removed (`remove_columns`), they
  leave ``H⁻¹``, and the search repeats on the updated ``H⁻¹``.
  GQA: the head is chosen among the KV groups that still hold the most heads, so every group loses one
  head per round (`prune.structured.shapes`).
- FFN channels of ``down_proj``: the ``g`` columns of least error ``‖W_{:,p}‖²/[H⁻¹]_pp`` are pruned together;
  Dynamic Group Size starts large (half of what is left, at most 1024) and shrinks to a floor of 8, because
  the compensation reshuffles the errors ("−DGS": a fixed group, 128 in Table 5). Each group's errors use the
  ``H⁻¹`` updated by the groups before it.

``H = 2XXᵀ/N: [in, in]`` (fp32, `prune.stats.HessianAccumulator`), damped by ``percdamp·mean(diag H)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prune.errors import SlimpackError
from prune.structured.shapes import even_choices, head_columns


def damped_inverse(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """``(H + λI)⁻¹`` with ``λ = percdamp·mean(diag H)``; dead inputs (``H_jj = 0``) get a unit diagonal."""
    H = H.to(torch.float64, copy=True)  # the caller's H is left as it is
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    H.diagonal().add_(percdamp * torch.mean(torch.diag(H)))
    try:
        L = torch.linalg.cholesky(H)
        del H  # at most two [in, in] float64 matrices at once (11008² is 0.9 GiB each)
        return torch.cholesky_inverse(L)
    except torch.linalg.LinAlgError:  # pragma: no cover - depends on data
        raise SlimpackError(
            f"Hessian is not positive definite even with damping {percdamp}; raise -O percdamp= (e.g. 0.1) or use "
            "more calibration samples"
        ) from None


def remove_columns(W: torch.Tensor, Hinv: torch.Tensor, cols: Sequence[int]) -> torch.Tensor:
    """Zero columns ``cols`` of ``W: [out, in]`` in place, compensated into the other columns as removing them one
    by one with Eq. 4 and Eq. 3 would. ``Hinv: [in, in]`` (float64) is the inverse Hessian of ``W``'s columns;
    returns the inverse Hessian of the columns left, ``[in − g, in − g]``, in their order."""
    F = torch.tensor(list(cols), dtype=torch.long, device=W.device)
    keep = torch.ones(W.shape[1], dtype=torch.bool, device=W.device)
    keep[F] = False
    R = torch.nonzero(keep).flatten()
    L = torch.linalg.cholesky(Hinv[F][:, F])  # H⁻¹_FF = LLᵀ: [g, g]
    A = torch.linalg.solve_triangular(L, Hinv[F][:, R], upper=False)  # L⁻¹ H⁻¹_FR: [g, r]
    B = torch.linalg.solve_triangular(L, W[:, F].double().T, upper=False)  # L⁻¹ W_Fᵀ: [g, out]
    W[:, R] = torch.addmm(W[:, R].double(), B.T, A, alpha=-1).to(W.dtype)  # W_R − W_F (H⁻¹_FF)⁻¹ H⁻¹_FR
    W[:, F] = 0
    rest = Hinv[R[:, None], R]  # one gather, no [r, in] intermediate
    return rest.addmm_(A.T, A, alpha=-1)  # H⁻¹_RR − H⁻¹_RF (H⁻¹_FF)⁻¹ H⁻¹_FR


def head_errors(W: torch.Tensor, Hinv: torch.Tensor, head_dim: int, grouped: bool = True) -> torch.Tensor:
    """Error of pruning each head of ``W: [out, n·d]`` (Eq. 5 with ``grouped``; initial diagonals without)."""
    n = W.shape[1] // head_dim
    col_sq = (W.double() ** 2).sum(0).reshape(n, head_dim)
    if grouped:
        blocks = torch.stack(
            [Hinv[h * head_dim : (h + 1) * head_dim, h * head_dim : (h + 1) * head_dim] for h in range(n)]
        )
        diag = torch.linalg.cholesky(blocks, upper=True).diagonal(dim1=-2, dim2=-1) ** 2  # [n, d]
    else:
        diag = torch.diag(Hinv).reshape(n, head_dim)
    return (col_sq / diag).sum(1)


def prune_heads(
    W: torch.Tensor,
    H: torch.Tensor,
    n_remove: int,
    head_dim: int,
    kv_heads: int,
    grouped: bool = True,
    percdamp: float = 0.01,
) -> list[int]:
    """Remove ``n_remove`` heads (GQA: a multiple of ``kv_heads``; multi-head: any) from ``W: [out, n·d]`` greedily;
    compensates ``W`` in place (removed columns end at zero) and returns the removed heads."""
    n = W.shape[1] // head_dim
    alive = list(range(n))
    removed: list[int] = []
    Hinv = damped_inverse(H, percdamp)  # of the alive heads' columns, updated as heads go
    for _ in range(n_remove):
        cols = head_columns(alive, head_dim)
        errors = head_errors(W[:, cols], Hinv, head_dim, grouped)
        pick = min(even_choices(alive, n, kv_heads), key=lambda i: errors[i].item())
        sub = W[:, cols]
        Hinv = remove_columns(sub, Hinv, range(pick * head_dim, (pick + 1) * head_dim))
        W[:, cols] = sub
        removed.append(alive.pop(pick))
    return sorted(removed)


def group_sizes(n_remove: int, first: int = 1024, floor: int = 8, fixed: int | None = None) -> list[int]:
    """Dynamic Group Size: half of what is left (≤ ``first``), shrinking to ``floor``; or a ``fixed`` size."""
    sizes, left = [], n_remove
    while left > 0:
        g = fixed if fixed else max(floor, min(first, left // 2))
        g = min(g, left)
        sizes.append(g)
        left -= g
    return sizes


def prune_channels(
    W: torch.Tensor,
    H: torch.Tensor,
    n_remove: int,
    percdamp: float = 0.01,
    first: int = 1024,
    floor: int = 8,
    fixed: int | None = None,
) -> list[int]:
    """Remove ``n_remove`` input channels of ``W: [out, I]`` group by group (Dynamic Group Size); compensates ``W``
    in place and returns the removed channels."""
    alive = list(range(W.shape[1]))
    removed: list[int] = []
    Hinv = damped_inverse(H, percdamp)  # of the alive channels, updated as groups go
    for g in group_sizes(n_remove, first, floor, fixed):
        sub = W[:, alive]
        errors = (sub.double() ** 2).sum(0) / torch.diag(Hinv)
        pick = torch.argsort(errors)[:g].tolist()
        Hinv = remove_columns(sub, Hinv, pick)
        W[:, alive] = sub
        chosen = {alive[i] for i in pick}
        removed.extend(chosen)
        alive = [c for c in alive if c not in chosen]
    return sorted(removed)
