"""Calibration statistics — one copy of each accumulator, shared by every method.

- ``HessianAccumulator`` (SparseGPT / GPTQ, Frantar & Alistarh 2023, Eq. 1–3): the layer-wise
  reconstruction Hessian ``H = 2 X Xᵀ / N`` over all N calibration tokens. ``X: [in, N]``; ``H: [in, in]``.
  Each batch's ``X Xᵀ`` is computed in fp32 and added to a float64 sum; ``result`` divides by the token count
  and casts to fp32 once. Counting tokens (not batches) makes it invariant to how the calibration set is
  batched; the float64 sum makes it invariant, up to float64 rounding, to the order in which batches (or
  ranks' shares of them, `prune.ranks.Ranks.sum_`) are added.
- ``InputNormAccumulator`` (Wanda, Sun et al. 2024, Eq. 1): ``‖X_j‖₂`` per input feature j over all tokens;
  kept as a float64 sum of squares. ``norm: [in]``.
- ``InputMeanAccumulator`` (PGZ's input preprocessing, Eq. 21): the mean input ``E[x]: [in]``.
- ``gradient_norms`` (Pruner-Zero, Dong et al. 2024; gradients as in GBLM-Pruner): for every prunable
  weight, ``G = sqrt(Σ_s g_s²)`` — the ℓ2 norm over calibration samples s of the loss gradient of the
  dense model. ``G: [out, in]`` per linear.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class Accumulator(Protocol):
    """Fed by a forward hook with the input of one ``nn.Linear``; produces one named statistic. ``parts``: the
    tensors (float64 sums, the token count) whose element-wise sum over several accumulators fed disjoint
    batches is the accumulator fed all of them (how ranks combine their shares, `prune.ranks.Ranks.sum_`)."""

    def update(self, inp: torch.Tensor) -> None: ...

    def parts(self) -> list[torch.Tensor]: ...

    def result(self) -> torch.Tensor: ...


HESSIAN_ROWS = 2048  # rows of X Xᵀ computed at a time (fp32 work space: 2048 × in, 86 MiB at in = 11008)


class _Sums:
    """A float64 sum and a token count (float64, exact below 2⁵³)."""

    def __init__(self, shape: tuple[int, ...], device: torch.device | str) -> None:
        self.total = torch.zeros(shape, dtype=torch.float64, device=device)
        self.tokens = torch.zeros(1, dtype=torch.float64, device=device)

    @property
    def count(self) -> int:
        return int(self.tokens.item())

    def parts(self) -> list[torch.Tensor]:
        return [self.total, self.tokens]


class HessianAccumulator(_Sums):
    """``H = 2 Σ x xᵀ / N`` over tokens: a float64 sum of each batch's fp32 ``X Xᵀ``; ``result``: ``[in, in]``
    fp32, a new tensor (its caller may consume it in place)."""

    def __init__(self, in_features: int, device: torch.device | str = "cpu") -> None:
        super().__init__((in_features, in_features), device)

    def update(self, inp: torch.Tensor) -> None:
        x = inp.detach().reshape(-1, inp.shape[-1]).to(self.total.device, torch.float32)  # [tokens, in]
        for r in range(0, x.shape[1], HESSIAN_ROWS):
            self.total[r : r + HESSIAN_ROWS] += x[:, r : r + HESSIAN_ROWS].T @ x
        self.tokens += x.shape[0]

    def result(self) -> torch.Tensor:
        H = torch.empty(self.total.shape, dtype=torch.float32, device=self.total.device)
        return torch.mul(self.total, 2.0 / max(self.count, 1), out=H)  # scaled in float64, rounded once


class InputNormAccumulator(_Sums):
    """``‖X_j‖₂`` over all calibration tokens, per input feature: ``norm: [in]``."""

    def __init__(self, in_features: int, device: torch.device | str = "cpu") -> None:
        super().__init__((in_features,), device)

    def update(self, inp: torch.Tensor) -> None:
        x = inp.detach().reshape(-1, inp.shape[-1]).to(self.total.device, torch.float64)
        self.total += (x * x).sum(0)
        self.tokens += x.shape[0]

    def result(self) -> torch.Tensor:
        return self.total.sqrt().float()


class InputMeanAccumulator(_Sums):
    """Mean of the inputs per feature over all calibration tokens: ``mean: [in]`` (PGZ's Eq. 21)."""

    def __init__(self, in_features: int, device: torch.device | str = "cpu") -> None:
        super().__init__((in_features,), device)

    def update(self, inp: torch.Tensor) -> None:
        x = inp.detach().reshape(-1, inp.shape[-1]).to(self.total.device, torch.float64)
        self.total += x.sum(0)
        self.tokens += x.shape[0]

    def result(self) -> torch.Tensor:
        return (self.total / max(self.count, 1)).float()


ACCUMULATORS: dict[str, Callable[[int, torch.device | str], Accumulator]] = {
    "hessian": HessianAccumulator,
    "input_norm": InputNormAccumulator,
    "input_mean": InputMeanAccumulator,
}


@dataclass
class Stats:
    """What a method sees for one linear: named statistics (``hessian``, ``input_norm``, ``grad``).
    ``owned``: the caller holds no other reference to the statistics it accumulated and never reads them again
    (the walker hands each linear's over; ``grad`` is only lent), so their last use may consume them in place —
    the OBS sweep then factors the Hessian where it lies instead of in a copy, one ``[in, in]`` fp32 matrix less
    (`prune.obs.obs_sweep`)."""

    values: dict[str, torch.Tensor]
    owned: bool = False

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self.values:
            raise KeyError(f"statistic {key!r} was not collected; collected: {sorted(self.values)}")
        return self.values[key]


def gradient_norms(
    model: nn.Module,
    linears: dict[str, nn.Linear],
    batches: Sequence[torch.Tensor],
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """ℓ2 norm over calibration samples of the LM-loss gradient of each named linear's weight.

    ``batches``: input ids ``[b, seqlen]``; each sample is back-propagated on its own so that the
    result is the per-sample ℓ2 norm (``G = sqrt(Σ_s g_s²)``). Only the named weights require grad.
    Returns ``{name: G [out, in] fp32 on CPU}``.
    """
    flags = {p: p.requires_grad for p in model.parameters()}
    sq = {name: torch.zeros_like(lin.weight, dtype=torch.float32, device="cpu") for name, lin in linears.items()}
    samples: Iterable[torch.Tensor] = [row.unsqueeze(0) for b in batches for row in b]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for lin in linears.values():
            lin.weight.requires_grad_(True)
        for ids in tqdm(list(samples), desc="gradients", disable=not progress):
            ids = ids.to(device)
            with torch.enable_grad():
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                loss.backward()
            for name, lin in linears.items():
                g = lin.weight.grad
                sq[name] += g.detach().float().pow(2).cpu()
                lin.weight.grad = None
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = None
    return {name: s.sqrt_() for name, s in sq.items()}
