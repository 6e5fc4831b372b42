"""The integer quantization grid of GPTQ (Frantar et al., ICLR 2023, §2 and the reference quantizer):
``q = clamp(round(w / scale) + zero, 0, 2^b − 1)``, ``ŵ = (q − zero) · scale`` per output row and group of
``g`` input columns (``g = −1``: one group per row).

- asymmetric: ``[min(w, 0), max(w, 0)]`` mapped onto ``[0, 2^b − 1]`` with an *integer* zero point;
- symmetric: ``scale = 2·max|w| / (2^b − 1)``, ``zero = 2^(b−1)`` (GPTQ's ``(maxq + 1) / 2``).
Both ranges contain 0, so ``ŵ(0) = (zero − zero) · scale = 0`` exactly: a pruned weight stays exactly zero.
Scales are rounded to fp16 when fitted (the checkpoint stores fp16), so the in-framework dequantized
model equals the checkpoint's.

The GPTQ v1 checkpoint format stores ``zero − 1`` in ``b`` bits, which cannot hold a zero point of 0; an
asymmetric group whose weights are all ≥ 0 would get one, so it uses zero point 1 and
``scale = max(w) / (2^b − 2)`` instead (same 0 on the grid, one level fewer).

Shapes: codes ``[out, in]`` uint8 (original column order); scales ``[out, G]`` fp32 holding fp16 values;
zeros ``[out, G]`` int32; ``g_idx: [in]`` int32 = the group of each input column.
Act-order (``desc_act``) visits columns in decreasing ``H_jj`` and forms groups in that order, so
``g_idx[perm[j]] = j // g``; with static groups the grids are fitted up front on the original
contiguous groups (``g_idx[c] = c // g``) and the visiting order does not change them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from quant.spec import QuantSpec


def group_width(spec: QuantSpec, in_features: int) -> int:
    """The group width ``g`` for a layer of ``in_features`` columns (the whole row for ``g = −1``)."""
    return in_features if spec.group_size == -1 else spec.group_size


def group_count(spec: QuantSpec, in_features: int) -> int:
    """``G``: the groups of a layer of ``in_features`` columns."""
    return in_features // group_width(spec, in_features)


def max_code(spec: QuantSpec) -> int:
    """The largest code, ``2^b − 1``."""
    return 2**spec.bits - 1


def _fp16_scale(scale: torch.Tensor) -> torch.Tensor:
    """Round to fp16 (what the checkpoint stores), never to 0."""
    return scale.clamp_min(torch.finfo(torch.float16).tiny).half().float()


def fit_grid(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale [out] fp32 holding fp16 values, zero [out] int32)`` for the weights ``w: [out, k]``."""
    w = w.float()
    maxq = max_code(spec)
    xmin = torch.clamp(w.min(1).values, max=0.0)
    xmax = torch.clamp(w.max(1).values, min=0.0)
    if spec.sym:
        amax = torch.maximum(-xmin, xmax)
        amax = torch.where(amax == 0, torch.ones_like(amax), amax)
        scale = _fp16_scale(2 * amax / maxq)
        zero = torch.full_like(scale, (maxq + 1) // 2, dtype=torch.int32)
        return scale, zero
    empty = (xmin == 0) & (xmax == 0)
    xmin = torch.where(empty, -torch.ones_like(xmin), xmin)
    xmax = torch.where(empty, torch.ones_like(xmax), xmax)
    scale = _fp16_scale((xmax - xmin) / maxq)
    zero = torch.round(-xmin / scale).to(torch.int32)
    nonneg = zero <= 0  # no negative weight: zero point 1 (see the module docstring)
    scale = torch.where(nonneg, _fp16_scale(xmax / (maxq - 1)), scale)
    zero = torch.where(nonneg, torch.ones_like(zero), zero.clamp(1, maxq))
    return scale, zero


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Integer codes of ``w`` on the grid (broadcasting ``scale``/``zero`` over ``w``)."""
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)


def dequantize_codes(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return (q - zero) * scale


@dataclass
class QuantizedWeight:
    """One quantized linear: integer codes and the grid that maps them back."""

    codes: torch.Tensor  # [out, in] uint8
    scales: torch.Tensor  # [out, G] fp32 (fp16 values)
    zeros: torch.Tensor  # [out, G] int32
    g_idx: torch.Tensor  # [in] int32
    spec: QuantSpec

    def dequantize(self) -> torch.Tensor:
        """``ŵ = (q − zero[g_idx]) · scale[g_idx]``: ``[out, in]`` fp32."""
        g = self.g_idx.long()
        return dequantize_codes(self.codes.float(), self.scales[:, g], self.zeros[:, g].float())


class GroupQuantizer:
    """A `prune.obs.ColumnQuantizer`: fits one grid per group as the sweep reaches it, records the codes."""

    def __init__(self, spec: QuantSpec, out_features: int, in_features: int) -> None:
        self.spec = spec
        self.group_size = group_width(spec, in_features)
        self.n_groups = group_count(spec, in_features)
        self.maxq = max_code(spec)
        self.scales = torch.zeros(out_features, self.n_groups)
        self.zeros = torch.zeros(out_features, self.n_groups, dtype=torch.int32)
        self.codes = torch.zeros(out_features, in_features, dtype=torch.uint8)
        self.g_idx = torch.arange(in_features, dtype=torch.int32) // self.group_size
        self.perm = torch.arange(in_features)
        self.static = spec.static_groups or spec.group_size == -1

    def start(self, W: torch.Tensor, perm: torch.Tensor | None) -> None:
        if perm is not None:
            self.perm = perm
            if not self.static:  # groups follow the visiting order
                self.g_idx[perm] = torch.arange(len(perm), dtype=torch.int32) // self.group_size
        if self.static:
            for k in range(self.n_groups):
                cols = slice(k * self.group_size, (k + 1) * self.group_size)
                self.scales[:, k], self.zeros[:, k] = fit_grid(W[:, cols], self.spec)

    def opens_group(self, j: int) -> bool:
        return not self.static and j % self.group_size == 0

    def fit(self, j: int, W_group: torch.Tensor) -> None:
        k = j // self.group_size
        self.scales[:, k], self.zeros[:, k] = fit_grid(W_group, self.spec)

    def quantize(self, j: int, w: torch.Tensor) -> torch.Tensor:
        col = int(self.perm[j])
        k = int(self.g_idx[col])
        scale, zero = self.scales[:, k].to(w.device), self.zeros[:, k].to(w.device)
        q = quantize_codes(w, scale, zero, self.maxq)
        self.codes[:, col] = q.to(torch.uint8).cpu()
        return dequantize_codes(q, scale, zero)

    def result(self) -> QuantizedWeight:
        return QuantizedWeight(self.codes, self.scales, self.zeros, self.g_idx, self.spec)
