"""Reconstruction compensation (SparsitySolver `003_f48065355bfe72a6.txt`, §3.2, Eq. 3–10).

A pruned input channel ``p`` of a unit's last linear (``o_proj`` for attention, ``down_proj`` for the FFN) is
approximated by a linear combination of the kept channels, ``X_p ≈ Σ_j s_{p,j} X_j`` (Eq. 3), with ``s`` from the
ridge problem ``min ‖X_p − s X‖² + λ‖s‖²`` (Eq. 8, λ = 0.9), whose solution is ``s = (XᵀX + λI)⁻¹ XᵀX_p``
(Eq. 10) — for all pruned channels at once: ``S = (G_KK + λI)⁻¹ G_KP`` with the Gram matrix ``G = Σ_tokens x xᵀ``.
The kept columns absorb the pruned ones (Eq. 4): ``W_K ← W_K + W_P Sᵀ``; no parameter is added.

``G`` comes from the Hessian accumulator: ``G = H·N/2`` for ``H = 2XXᵀ/N`` over N tokens (so λ acts on the
raw sums, as in the paper). Shapes: ``W: [out, in]``, ``H: [in, in]``, ``S: [|K|, |P|]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

RIDGE_LAMBDA = 0.9


def ridge_compensate(
    W: torch.Tensor, H: torch.Tensor, tokens: int, pruned: Sequence[int], lam: float = RIDGE_LAMBDA
) -> None:
    """Fold columns ``pruned`` of ``W`` into the kept ones in place (the pruned columns are left unchanged)."""
    if not len(pruned):
        return
    n = W.shape[1]
    P = torch.tensor(sorted(pruned), dtype=torch.long)
    keep = torch.ones(n, dtype=torch.bool)
    keep[P] = False
    K = torch.nonzero(keep).flatten()
    G = H.double() * (tokens / 2.0)
    A = G[K][:, K]
    A.diagonal().add_(lam)
    S = torch.linalg.solve(A, G[K][:, P])  # [|K|, |P|]
    W[:, K] += (W[:, P].double() @ S.T).to(W.dtype)
