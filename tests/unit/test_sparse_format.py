"""The sparse weight format (`export.sparse_format`): encode → decode is exact, bit for bit, for every layout and
values kind (int8: within half a step, zeros kept); damaged parts are one clear error."""

from __future__ import annotations

import pytest
import torch

from export.sparse_format import PAD_BYTES, GPTQGrid, Layout, check, decode, encode, pack_bits, unpack_bits
from prune.errors import SlimpackError

SHAPES = [(1, 1), (3, 7), (5, 13), (37, 129), (8, 64)]


def pruned(shape: tuple[int, int], density: float, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    w[torch.rand(shape, generator=g) > density] = 0
    if shape[0] > 2:
        w[0] = 0  # an empty row
        w[1] = torch.randn(shape[1], generator=g)  # a full row
    return w.to(dtype)


def two_four(out: int, inp: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g)
    drop = torch.rand(out, inp // 4, 4, generator=g).argsort(-1)[..., :2]
    w.view(out, -1, 4).scatter_(-1, drop, 0)
    w[0, :4] = 0  # a group with no nonzero
    w[-1, 4:7] = 0  # a group with one
    return w


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_float_values_round_trip_bit_for_bit(shape: tuple[int, int], dtype: torch.dtype) -> None:
    for density in (0.0, 0.3, 1.0):
        w = pruned(shape, density, dtype=dtype)
        layout, parts = encode(w, {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype])
        assert layout.layout == "bitmask" and layout.shape == shape
        back = decode("w", layout, parts)
        assert back.dtype == dtype and torch.equal(back, w)
        assert parts["values"].numel() * parts["values"].element_size() == int((w != 0).sum()) * w.element_size() + PAD_BYTES


def test_bitmask_bit_order() -> None:
    mask = torch.zeros(2, 11, dtype=torch.bool)
    mask[0, 0] = mask[0, 9] = mask[1, 7] = True
    packed = pack_bits(mask)
    assert packed.tolist() == [[1, 2], [128, 0]]  # bit j (LSB first) of byte b is column 8b + j
    assert torch.equal(unpack_bits(packed, 11), mask)


def test_int8_values_keep_zeros_within_half_a_step() -> None:
    w = pruned((37, 129), 0.4)
    layout, parts = encode(w, "int8")
    back = decode("w", layout, parts)
    assert bool(((back == 0) | (w != 0)).all()) and bool((back[w == 0] == 0).all())
    step = w.abs().amax(1, keepdim=True) / 127
    assert bool(((back - w).abs() <= step / 2 + 1e-7).all())


def test_24_layout_is_chosen_and_exact() -> None:
    w = two_four(6, 32)
    layout, parts = encode(w, "fp32")
    assert layout.layout == "2:4" and set(parts) == {"positions", "values"}
    assert list(parts["positions"].shape) == [6, 4] and parts["values"].numel() == 6 * 16 + PAD_BYTES // 4
    assert torch.equal(decode("w", layout, parts), w)
    layout, parts = encode(w, "fp32", layout="bitmask")
    assert layout.layout == "bitmask" and torch.equal(decode("w", layout, parts), w)
    with pytest.raises(SlimpackError, match="not 2:4"):
        encode(pruned((4, 16), 0.9), "fp32", layout="2:4")


def gptq_grid(out: int, inp: int, gs: int, act_order: bool, seed: int = 0) -> tuple[torch.Tensor, GPTQGrid]:
    g = torch.Generator().manual_seed(seed)
    groups = -(-inp // gs)
    zeros = torch.randint(0, 16, (out, groups), generator=g, dtype=torch.int32)
    scales = (torch.rand(out, groups, generator=g) + 0.01).half().float()  # fp16 values, as GPTQ stores
    order = torch.randperm(inp, generator=g) if act_order else torch.arange(inp)
    g_idx = torch.empty(inp, dtype=torch.int32)
    g_idx[order] = (torch.arange(inp) // gs).int()
    codes = torch.randint(0, 16, (out, inp), generator=g, dtype=torch.uint8)
    prune = torch.rand(out, inp, generator=g) < 0.5
    codes = torch.where(prune, zeros[:, g_idx.long()].to(torch.uint8), codes)  # zeros exact
    w = (codes.float() - zeros[:, g_idx.long()].float()) * scales[:, g_idx.long()]
    return w, GPTQGrid(codes, scales, zeros, g_idx, gs)


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize(("inp", "gs"), [(64, 32), (100, 32), (128, 128)])
def test_gptq_values_round_trip(act_order: bool, inp: int, gs: int) -> None:
    w, grid = gptq_grid(5, inp, gs, act_order)
    layout, parts = encode(w, "gptq", grid=grid)
    assert ("perm" in parts) == (act_order and inp > gs) and layout.group_size == gs  # one group needs no order
    assert torch.equal(decode("w", layout, parts), w)


def test_gptq_24() -> None:
    w, grid = gptq_grid(4, 32, 16, False)
    keep = two_four(4, 32) != 0
    codes = torch.where(keep, grid.codes, grid.zeros[:, grid.g_idx.long()].to(torch.uint8))
    grid = GPTQGrid(codes, grid.scales, grid.zeros, grid.g_idx, 16)
    w = (codes.float() - grid.zeros[:, grid.g_idx.long()].float()) * grid.scales[:, grid.g_idx.long()]
    layout, parts = encode(w, "gptq", grid=grid)
    assert layout.layout == "2:4" and torch.equal(decode("w", layout, parts), w)


def test_layout_json_round_trip_and_refusals() -> None:
    layout, _ = encode(pruned((5, 13), 0.5), "fp32")
    assert Layout.from_json(layout.to_json(), "w") == layout
    for bad in ["{", '{"shape": [5], "dtype": "F32", "layout": "bitmask", "values": "fp32"}',
                '{"shape": [5, 13], "dtype": "F32", "layout": "csr", "values": "fp32"}',
                '{"shape": [5, 13], "dtype": "F32", "layout": "bitmask", "values": "gptq"}', None]:  # fmt: skip
        with pytest.raises(SlimpackError, match="not one slimpack writes"):
            Layout.from_json(bad, "w")


def test_damaged_parts_are_one_line() -> None:
    w = pruned((6, 20), 0.5)
    layout, parts = encode(w, "fp32")
    cases = {
        "values": ({**parts, "values": parts["values"][:-1]}, "holds"),
        "mask": ({**parts, "mask": parts["mask"] ^ torch.tensor([[1, 0, 0]], dtype=torch.uint8)}, "do not count"),
        "dtype": ({**parts, "values": parts["values"].half()}, "its layout needs"),
        "missing": ({k: v for k, v in parts.items() if k != "row_offsets"}, "needs"),
        "tail bits": ({**parts, "mask": parts["mask"] | torch.tensor([[0, 0, 128]], dtype=torch.uint8)}, "past column"),
    }
    for case, (damaged, message) in cases.items():
        with pytest.raises(SlimpackError, match=message) as err:
            check("m.weight", layout, damaged)
        assert "\n" not in str(err.value), case
