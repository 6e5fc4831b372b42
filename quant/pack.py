"""Bit packing of the GPTQ checkpoint format (AutoGPTQ / GPTQModel ``checkpoint_format: gptq``, "v1").

Every packed tensor is a little-endian bit stream cut into int32 words: value k of a row occupies bits
``[b·k, b·k + b)`` of the stream, so a 3-bit value may straddle two words (the 2/4/8-bit layouts are the
special case where it never does). Tensors of one linear ``[out, in]``:
- ``qweight``: int32 ``[in·b/32, out]`` — codes packed along the *input* dimension;
- ``qzeros``: int32 ``[G, out·b/32]`` — ``zero − 1`` (the v1 convention, ``checkpoint_format: gptq``) or
  ``zero`` itself (GPTQModel's ``gptq_v2``), packed along the *output* dimension;
- ``scales``: fp16 ``[G, out]``; ``g_idx``: int32 ``[in]`` (the group of each input column).
"""

from __future__ import annotations

import torch

from prune.errors import SlimpackError
from quant.grid import QuantizedWeight
from quant.spec import CHECKPOINT_BITS, ZERO_OFFSET, QuantSpec


def n_words(n: int, bits: int) -> int:
    """int32 words holding ``n`` values of ``bits`` bits (the last one zero-padded, as GPTQModel packs)."""
    return -(-n * bits // 32)


PACK_ROWS = 256  # rows packed at a time: the int64 work space of a 4096 × 11008 weight is 22 MiB, not 1 GiB


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """``values [..., n]`` (integers in [0, 2^bits)) → int32 ``[..., ⌈n·bits/32⌉]``; packed ``PACK_ROWS`` rows at
    a time (each row is independent), so the int64 work space stays small."""
    if values.dim() > 1 and values.shape[0] > PACK_ROWS:
        return torch.cat([pack_bits(rows, bits) for rows in values.split(PACK_ROWS)])
    n = values.shape[-1]
    v = values.to(torch.int64) & (2**bits - 1)
    offset = torch.arange(n, dtype=torch.int64) * bits
    word, shift = offset // 32, offset % 32
    words = torch.zeros(*values.shape[:-1], n_words(n, bits) + 1, dtype=torch.int64)
    words.index_add_(-1, word, (v << shift) & 0xFFFFFFFF)
    spill = shift + bits > 32  # the high bits of a value that straddles two words
    if spill.any():
        words.index_add_(-1, word[spill] + 1, v[..., spill] >> (32 - shift[spill]))
    words = words[..., :-1]
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_bits(words: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """int32 ``[..., ⌈n·bits/32⌉]`` → int64 ``[..., n]``; the inverse of `pack_bits`."""
    if words.shape[-1] != n_words(n, bits):
        raise SlimpackError(
            f"packed tensor has {words.shape[-1]} words, {n} values of {bits} bits need {n_words(n, bits)}"
        )
    if 32 % bits == 0:  # 2, 4, 8 bits: no value straddles two words — shift each word in place (10× faster)
        shifts = torch.arange(0, 32, bits, dtype=torch.int32)
        values = (words.to(torch.int32).unsqueeze(-1) >> shifts) & (2**bits - 1)  # the sign bits fall outside
        return values.reshape(*words.shape[:-1], -1)[..., :n].to(torch.int64)
    w = words.to(torch.int64) & 0xFFFFFFFF
    w = torch.cat([w, torch.zeros_like(w[..., :1])], dim=-1)
    offset = torch.arange(n, dtype=torch.int64) * bits
    word, shift = offset // 32, offset % 32
    low = w[..., word] >> shift
    high = (w[..., word + 1] << (32 - shift)) & 0xFFFFFFFF
    return (low | torch.where(shift + bits > 32, high, torch.zeros_like(high))) & (2**bits - 1)


def to_gptq(qw: QuantizedWeight, fmt: str = "gptq") -> dict[str, torch.Tensor]:
    """The four checkpoint tensors of one linear (names without the module prefix)."""
    bits = qw.spec.bits
    if bits not in CHECKPOINT_BITS:
        raise SlimpackError(f"the GPTQ checkpoint format stores {CHECKPOINT_BITS} bits, not {bits}; use one of those")
    return {
        "qweight": pack_bits(qw.codes, bits).T.contiguous(),  # packed along in: [in·b/32, out]
        "qzeros": pack_bits((qw.zeros.T - ZERO_OFFSET[fmt]).contiguous(), bits),
        "scales": qw.scales.T.contiguous().half(),
        "g_idx": qw.g_idx.to(torch.int32).clone(),
    }


def from_gptq(tensors: dict[str, torch.Tensor], spec: QuantSpec, fmt: str = "gptq") -> QuantizedWeight:
    """Read the four tensors of one linear back; exact inverse of `to_gptq`."""
    bits = spec.bits
    scales = tensors["scales"].float().T.contiguous()  # [out, G]
    out_f = scales.shape[0]
    g_idx = tensors["g_idx"].to(torch.int32)
    in_f = g_idx.numel()
    codes = unpack_bits(tensors["qweight"].T.contiguous(), bits, in_f).to(torch.uint8)
    zeros = (unpack_bits(tensors["qzeros"], bits, out_f) + ZERO_OFFSET[fmt]).T.contiguous().to(torch.int32)
    return QuantizedWeight(codes=codes, scales=scales, zeros=zeros, g_idx=g_idx, spec=spec)
