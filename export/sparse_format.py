"""slimpack's sparse weight format, version 1 (docs/sparse-format.md): one pruned linear ``W: [out, in]`` as
a bitmask (or 2:4 positions) plus its packed nonzero values, in safetensors. Pure tensor math: `encode`,
`decode`, `check`; no I/O.

Layouts (``P`` is the dense tensor's name, e.g. ``model.layers.0.mlp.up_proj.weight``):

- ``bitmask``: ``P.mask`` uint8 ``[out, ⌈in/8⌉]`` — bit ``j`` (LSB first) of byte ``b`` is column ``8b + j``,
  row-major, the bits past ``in`` zero; ``P.row_offsets`` int64 ``[out + 1]`` — row ``r``'s values are
  elements ``offsets[r] … offsets[r+1]`` of ``P.values`` (``offsets[r+1] − offsets[r]`` = the row's set bits).
- ``2:4``: ``P.positions`` uint8 ``[out, in/8]`` — byte ``b`` holds the two kept columns of the groups
  ``2b`` and ``2b+1`` (2 bits each, ascending within a group: bits 0–1 and 2–3 for group ``2b``, 4–5 and 6–7
  for ``2b+1``); every group keeps exactly two values (a group with fewer nonzeros keeps an explicit zero), so
  row ``r``'s values are elements ``r·in/2 … (r+1)·in/2``. Needs ``in % 8 == 0``.

``P.values`` is one flat tensor of the row-major nonzeros followed by `PAD_BYTES` zero bytes (kernels read whole
vectors past a row's end):

- ``fp32`` / ``bf16`` / ``fp16``: the weights themselves (F32, BF16, F16);
- ``int8``: ``round(w / s_r)`` (I8) with ``P.scales`` fp32 ``[out]``, ``s_r = max|W_r| / 127`` — symmetric,
  per output channel (Dettmers et al. 2022, LLM.int8() §3.1, vector-wise quantization without outliers);
- ``gptq``: 4-bit codes, two per byte (U8, the low nibble first) of a GPTQ grid (Frantar et al. 2023, GPTQ
  eq. 2 applied per group of ``group_size`` columns), with ``P.scales`` fp16 ``[out, G]`` and ``P.zeros``
  uint8 ``[out, G]``: ``w = (q − z) · s``. The stored columns are in groups of ``group_size``; a checkpoint
  quantized in act-order stores ``P.perm`` int64 ``[in]`` (stored column ``c`` is dense column ``perm[c]``).
  A pruned weight is a code equal to its zero point (zeros exact), so its bit is clear.

What each packed tensor decodes to (``shape``, ``dtype``, ``layout``, ``values``, ``group_size``) is the
`Layout`, written as JSON under the dense name in the shard's safetensors metadata.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from prune.errors import SlimpackError
from prune.lazy import SAFETENSORS_DTYPES
from prune.shards import STORED_NAMES

VERSION = 1
CONFIG_KEY = "slimpack_sparse"  # config.json: {"version": 1, "values": …}; shards: metadata "slimpack_sparse.version"
PAD_BYTES = 32
LAYOUTS = ("bitmask", "2:4")
VALUE_DTYPES = {  # values kind → the dtype of P.values
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "int8": torch.int8,
    "gptq": torch.uint8,
}
FLOAT_VALUES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
DENSE_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
_BITS = 1 << torch.arange(8, dtype=torch.int32)


@dataclass(frozen=True)
class Layout:
    """What one packed weight decodes to; its JSON sits in the shard's metadata under the dense name."""

    shape: tuple[int, int]  # [out, in]
    dtype: str  # the dense tensor's safetensors dtype (F32, BF16, F16): what `export --format hf` writes back
    layout: str  # bitmask | 2:4
    values: str  # fp32 | bf16 | fp16 | int8 | gptq
    group_size: int = 0  # gptq: columns per group

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "shape": list(self.shape)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: object, name: str) -> Layout:
        """The layout of ``name``; one line if the metadata is not one slimpack writes."""
        bad = f"the sparse layout of {name!r} in its shard's metadata is not one slimpack writes"
        try:
            data = json.loads(text) if isinstance(text, str) else None
            layout = cls(
                shape=tuple(data["shape"]), dtype=data["dtype"], layout=data["layout"], values=data["values"],
                group_size=data.get("group_size", 0),
            )  # fmt: skip
        except (ValueError, TypeError, KeyError):
            raise SlimpackError(f"{bad}; the artifact is damaged — export it again") from None
        fields = (
            len(layout.shape) == 2 and all(type(n) is int and n >= 0 for n in layout.shape),
            layout.dtype in DENSE_DTYPES, layout.layout in LAYOUTS, layout.values in VALUE_DTYPES,
            type(layout.group_size) is int and (layout.group_size > 0) == (layout.values == "gptq"),
            layout.layout != "2:4" or layout.shape[1] % 8 == 0,
        )  # fmt: skip
        if not all(fields):
            raise SlimpackError(f"{bad} ({text[:120] if isinstance(text, str) else text}); export it again")
        return layout

    @property
    def groups(self) -> int:
        return math.ceil(self.shape[1] / self.group_size) if self.group_size else 0

    def expected(self, nnz: int | None = None, act_order: bool = False) -> dict[str, tuple[list[int] | None, str]]:
        """Each stored suffix → (shape, safetensors dtype); a shape of None: 1-D of any length (values, with
        ``nnz`` unknown)."""
        out, inp = self.shape
        value_dtype = STORED_NAMES[VALUE_DTYPES[self.values]]
        tensors: dict[str, tuple[list[int] | None, str]] = {"values": (None, value_dtype)}
        if nnz is not None:
            tensors["values"] = ([value_elements(self.values, nnz)], value_dtype)
        if self.layout == "bitmask":
            tensors["mask"] = ([out, math.ceil(inp / 8)], "U8")
            tensors["row_offsets"] = ([out + 1], "I64")
        else:
            tensors["positions"] = ([out, inp // 8], "U8")
        if self.values == "int8":
            tensors["scales"] = ([out], "F32")
        if self.values == "gptq":
            tensors["scales"] = ([out, self.groups], "F16")
            tensors["zeros"] = ([out, self.groups], "U8")
            if act_order:
                tensors["perm"] = ([inp], "I64")
        return tensors


def value_elements(values: str, nnz: int) -> int:
    """Elements of ``P.values`` for ``nnz`` nonzeros: the packed nonzeros and `PAD_BYTES` of padding."""
    if values == "gptq":
        return (nnz + 1) // 2 + PAD_BYTES
    return nnz + PAD_BYTES // VALUE_DTYPES[values].itemsize


def nnz_of(layout: Layout, tensors: dict[str, torch.Tensor]) -> int:
    if layout.layout == "2:4":
        return layout.shape[0] * layout.shape[1] // 2
    return int(tensors["row_offsets"][-1])


# --- encode -------------------------------------------------------------------------------------------------


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """bool ``[out, in]`` → uint8 ``[out, ⌈in/8⌉]``, bit ``j`` of byte ``b`` = column ``8b + j``."""
    out, inp = mask.shape
    padded = torch.zeros(out, math.ceil(inp / 8) * 8, dtype=torch.int32)
    padded[:, :inp] = mask
    return (padded.view(out, -1, 8) * _BITS).sum(-1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, columns: int) -> torch.Tensor:
    """uint8 ``[out, nb]`` → bool ``[out, columns]``."""
    bits = (packed.to(torch.int32).unsqueeze(-1) & _BITS) != 0
    return bits.view(packed.shape[0], -1)[:, :columns]


def is_24(mask: torch.Tensor) -> bool:
    """Whether every group of 4 columns keeps at most 2 (and the layout can hold it: ``in % 8 == 0``)."""
    out, inp = mask.shape
    return inp % 8 == 0 and bool((mask.view(out, -1, 4).sum(-1) <= 2).all())


def _positions_24(mask: torch.Tensor) -> torch.Tensor:
    """The two kept columns of each group of 4, ascending (nonzeros first, then the lowest free columns):
    int64 ``[out, in/4, 2]`` within-group indices."""
    out, inp = mask.shape
    groups = mask.view(out, inp // 4, 4).to(torch.int64)
    score = groups * 8 + (3 - torch.arange(4))  # a nonzero first, then the lowest index
    return score.topk(2, dim=-1).indices.sort(dim=-1).values


def _pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes 0–15 (1-D) → two per byte, low nibble first."""
    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_zeros(1)])
    pairs = codes.view(-1, 2).to(torch.int32)
    return (pairs[:, 0] | (pairs[:, 1] << 4)).to(torch.uint8)


def _unpack_nibbles(packed: torch.Tensor, n: int) -> torch.Tensor:
    b = packed.to(torch.int32)
    return torch.stack([b & 15, b >> 4], -1).view(-1)[:n]


def _padded(values: torch.Tensor, kind: str) -> torch.Tensor:
    pad = PAD_BYTES if kind == "gptq" else PAD_BYTES // values.element_size()
    return torch.cat([values.reshape(-1), values.new_zeros(pad)])


@dataclass(frozen=True)
class GPTQGrid:
    """A GPTQ-quantized linear's codes and grid (`quant.grid.QuantizedWeight`'s fields): ``codes [out, in]``
    uint8, ``scales [out, G]`` fp32 (fp16 values), ``zeros [out, G]`` int, ``g_idx [in]``."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    g_idx: torch.Tensor
    group_size: int


def encode(
    weight: torch.Tensor, values: str, layout: str = "auto", grid: GPTQGrid | None = None
) -> tuple[Layout, dict[str, torch.Tensor]]:
    """``weight [out, in]`` (a dense float tensor; for ``gptq`` the dequantized weight of ``grid``) → its layout
    and stored tensors by suffix. ``layout`` ``auto``: 2:4 when every group of 4 keeps ≤ 2, else bitmask."""
    if weight.dim() != 2 or not weight.is_floating_point() or weight.dtype not in FLOAT_VALUES:
        raise SlimpackError(f"a sparse weight must be a 2-D fp32/bf16/fp16 tensor, not {weight.dtype} {list(weight.shape)}")
    if (values == "gptq") != (grid is not None):
        raise SlimpackError("--values gptq needs a GPTQ checkpoint (its codes and groups), and only gptq uses them")
    out, inp = weight.shape
    perm = None
    if grid is not None:
        contiguous = torch.arange(inp, dtype=torch.int64) // grid.group_size
        if not torch.equal(grid.g_idx.long(), contiguous):
            perm = torch.argsort(grid.g_idx.long(), stable=True)
            if not torch.equal(grid.g_idx.long()[perm], contiguous):
                raise SlimpackError("the GPTQ groups are not groups of group_size columns; --values gptq cannot store them")
        weight = weight if perm is None else weight[:, perm]
    mask = weight != 0
    kind = "2:4" if layout == "2:4" or (layout == "auto" and is_24(mask)) else "bitmask"
    if kind == "2:4" and not is_24(mask):
        raise SlimpackError(f"a weight {list(weight.shape)} is not 2:4 sparse (or in % 8 != 0); use --layout bitmask")
    spec = Layout((out, inp), {v: k for k, v in DENSE_DTYPES.items()}[weight.dtype], kind, values,
                  grid.group_size if grid else 0)  # fmt: skip
    tensors: dict[str, torch.Tensor] = {}
    if kind == "2:4":
        pos = _positions_24(mask)  # [out, in/4, 2]
        fields = (pos.view(out, inp // 8, 4) << torch.tensor([0, 2, 4, 6])).sum(-1)
        tensors["positions"] = fields.to(torch.uint8)
        columns = (pos + 4 * torch.arange(inp // 4).view(1, -1, 1)).view(out, -1)
        picked = columns  # [out, in/2] dense columns of the kept values, row-major
    else:
        tensors["mask"] = pack_bits(mask)
        counts = mask.sum(1)
        tensors["row_offsets"] = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
        picked = None
    if values == "gptq":
        assert grid is not None
        codes = grid.codes if perm is None else grid.codes[:, perm]
        flat = codes.gather(1, picked).reshape(-1) if picked is not None else codes[mask]
        tensors["values"] = _padded(_pack_nibbles(flat), values)
        tensors["scales"] = grid.scales.to(torch.float16).contiguous()
        tensors["zeros"] = grid.zeros.to(torch.uint8).contiguous()
        if perm is not None:
            tensors["perm"] = perm.to(torch.int64)
        return spec, tensors
    flat = weight.gather(1, picked).reshape(-1) if picked is not None else weight[mask]
    if values == "int8":
        scales = weight.float().abs().amax(1) / 127
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        rows = torch.arange(out).view(-1, 1).expand(out, inp // 2 if picked is not None else inp)
        row_of = rows.reshape(-1) if picked is not None else rows[mask]
        tensors["values"] = _padded((flat.float() / scales[row_of]).round().clamp(-127, 127).to(torch.int8), values)
        tensors["scales"] = scales.contiguous()
    else:
        tensors["values"] = _padded(flat.to(VALUE_DTYPES[values]), values)
    return spec, tensors


# --- check and decode ---------------------------------------------------------------------------------------


def check(name: str, layout: Layout, tensors: dict[str, torch.Tensor]) -> None:
    """One line when the stored tensors disagree with their layout or with each other: a shape or dtype, row
    offsets that do not count the mask's bits, values of another length, set bits past the row's end."""
    damaged = "the artifact is damaged — export it again"
    act_order = "perm" in tensors
    expected = layout.expected(act_order=act_order)
    if set(tensors) != set(expected):
        raise SlimpackError(f"{name!r} stores {sorted(tensors)}, its {layout.layout} layout needs {sorted(expected)}; {damaged}")
    for suffix, (shape, dtype) in expected.items():
        t = tensors[suffix]
        if t.dtype != SAFETENSORS_DTYPES[dtype] or (shape is not None and list(t.shape) != shape) or (
            shape is None and t.dim() != 1
        ):
            raise SlimpackError(
                f"'{name}.{suffix}' is {t.dtype} {list(t.shape)}, its layout needs {SAFETENSORS_DTYPES[dtype]} "
                f"{shape or '[n]'}; {damaged}"
            )
    out, inp = layout.shape
    if layout.layout == "bitmask":
        offsets, mask = tensors["row_offsets"], tensors["mask"]
        if inp % 8 and bool((mask[:, -1].to(torch.int32) >> (inp % 8)).any()):
            raise SlimpackError(f"'{name}.mask' has bits set past column {inp}; {damaged}")
        counts = unpack_bits(mask, inp).sum(1)
        if int(offsets[0]) != 0 or not torch.equal(offsets.diff(), counts):
            raise SlimpackError(f"'{name}.row_offsets' do not count the set bits of '{name}.mask' row by row; {damaged}")
    else:
        fields = (tensors["positions"].to(torch.int32).unsqueeze(-1) >> torch.tensor([0, 2, 4, 6])) & 3
        pairs = fields.view(out, -1, 2)
        if not bool((pairs[..., 0] < pairs[..., 1]).all()):
            raise SlimpackError(f"'{name}.positions' has a group whose two positions are not ascending; {damaged}")
    nnz = nnz_of(layout, tensors)
    want = value_elements(layout.values, nnz)
    if tensors["values"].numel() != want:
        raise SlimpackError(
            f"'{name}.values' holds {tensors['values'].numel()} elements, its mask keeps {nnz} weights "
            f"({want} with padding); {damaged}"
        )
    if act_order and not torch.equal(tensors["perm"].sort().values, torch.arange(inp)):
        raise SlimpackError(f"'{name}.perm' is not a permutation of the {inp} columns; {damaged}")


def columns(layout: Layout, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """bool ``[out, in]``: where the stored values go (in the stored column order)."""
    out, inp = layout.shape
    if layout.layout == "bitmask":
        return unpack_bits(tensors["mask"], inp)
    fields = (tensors["positions"].to(torch.int64).unsqueeze(-1) >> torch.tensor([0, 2, 4, 6])) & 3
    cols = (fields.view(out, -1, 2) + 4 * torch.arange(inp // 4).view(1, -1, 1)).view(out, -1)
    return torch.zeros(out, inp, dtype=torch.bool).scatter_(1, cols, True)


def decode(name: str, layout: Layout, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The dense ``[out, in]`` weight (checked first, `check`): fp32/bf16/fp16 values in their own dtype;
    int8 and gptq values dequantized in fp32."""
    check(name, layout, tensors)
    out, inp = layout.shape
    where = columns(layout, tensors)
    nnz = nnz_of(layout, tensors)
    raw = tensors["values"]
    if layout.values == "gptq":
        codes = _unpack_nibbles(raw, nnz).float()
        group = (torch.arange(inp) // layout.group_size).expand(out, inp)[where]
        row = torch.arange(out).view(-1, 1).expand(out, inp)[where]
        flat = (codes - tensors["zeros"][row, group].float()) * tensors["scales"][row, group].float()
    elif layout.values == "int8":
        row = torch.arange(out).view(-1, 1).expand(out, inp)[where]
        flat = raw[:nnz].float() * tensors["scales"][row]
    else:
        flat = raw[:nnz]
    dense = torch.zeros(out, inp, dtype=flat.dtype)
    dense[where] = flat  # row-major order: the order the values were packed in
    if "perm" in tensors:
        unpermuted = torch.empty_like(dense)
        unpermuted[:, tensors["perm"]] = dense
        dense = unpermuted
    return dense


def stored_bytes(layout: Layout, tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def layout_metadata(layouts: dict[str, Layout]) -> dict[str, Any]:
    """The safetensors metadata of a shard holding ``layouts`` (dense name → `Layout`)."""
    return {f"{CONFIG_KEY}.version": str(VERSION), **{name: lay.to_json() for name, lay in layouts.items()}}
