"""Activation-ℓ2 structured criterion (SparsitySolver `003_f48065355bfe72a6.txt`, §3.1 "Pruning criteria" and
Appendix A: "for structured pruning, we opt for the ℓ2-norm of the activations").

A head's score is the ℓ2 norm of its slice of the ``o_proj`` input, ``‖X_{:, hd:(h+1)d}‖_F`` over all calibration
tokens; a channel's is ``‖X_{:,p}‖₂`` of the ``down_proj`` input. The lowest-scored go; weights are not updated
(compensation is `prune.structured.reconstruct`, Eq. 8). ``norm: [in]`` from `prune.stats.InputNormAccumulator`.
"""

from __future__ import annotations

import torch

from prune.structured.shapes import even_choices


def head_order(norm: torch.Tensor, head_dim: int, kv_heads: int) -> list[int]:
    """Every head in removal order: least activation norm first, one per KV group per round."""
    n = norm.numel() // head_dim
    score = norm.double().reshape(n, head_dim).pow(2).sum(1)
    alive = list(range(n))
    order = []
    while alive:
        pick = min(even_choices(alive, n, kv_heads), key=lambda i: score[alive[i]].item())
        order.append(alive.pop(pick))
    return order


def lowest_heads(norm: torch.Tensor, n_remove: int, head_dim: int, kv_heads: int) -> list[int]:
    """``n_remove`` heads of least activation norm, taken one per KV group per round."""
    return sorted(head_order(norm, head_dim, kv_heads)[:n_remove])


def lowest_channels(norm: torch.Tensor, n_remove: int) -> list[int]:
    return sorted(torch.argsort(norm, stable=True)[:n_remove].tolist())
