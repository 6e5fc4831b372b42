"""MatMulNBits packing: nibble order, block sizes, and the act-order column reordering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.onnx_int4 import NBitsLayout, block_size_for, column_order, nbits_tensors, pack_nibbles, unpack_nibbles
from prune.errors import SlimpackError
from quant.grid import QuantizedWeight
from quant.spec import QuantSpec


def test_nibbles_round_trip_low_nibble_first() -> None:
    values = np.random.RandomState(0).randint(0, 16, (3, 7)).astype(np.uint8)
    packed = pack_nibbles(values)
    assert packed.shape == (3, 4)
    assert packed[0, 0] == values[0, 0] | (values[0, 1] << 4)
    assert np.array_equal(unpack_nibbles(packed, 7), values)


@pytest.mark.parametrize(("group", "block"), [(32, 32), (64, 64), (128, 128), (576, 64), (1536, 256)])
def test_block_size_is_a_power_of_two_dividing_the_group(group: int, block: int) -> None:
    assert block_size_for(group) == block


def test_block_size_refuses_groups_not_multiple_of_16() -> None:
    with pytest.raises(SlimpackError, match="multiple of 16"):
        block_size_for(24)


def test_act_order_columns_are_sorted_into_contiguous_groups() -> None:
    """Dequantizing the reordered MatMulNBits tensors and undoing the order gives the GPTQ weight."""
    gen = torch.Generator().manual_seed(0)
    n_out, k_in, group = 8, 64, 16
    perm = torch.randperm(k_in, generator=gen)
    g_idx = torch.empty(k_in, dtype=torch.int32)
    g_idx[perm] = (torch.arange(k_in) // group).to(torch.int32)
    qw = QuantizedWeight(
        codes=torch.randint(0, 16, (n_out, k_in), generator=gen, dtype=torch.uint8),
        scales=torch.rand(n_out, k_in // group, generator=gen) + 0.1,
        zeros=torch.randint(0, 16, (n_out, k_in // group), generator=gen, dtype=torch.int32),
        g_idx=g_idx,
        spec=QuantSpec(4, group, True, True, False),
    )
    layout = NBitsLayout.of(qw.spec, g_idx.numpy(), n_out)
    t = nbits_tensors(qw, layout)
    order = column_order(g_idx.numpy(), group)
    assert order is not None and np.array_equal(layout.perm, order)
    assert {k: v.shape for k, v in t.items()} == {k: shape for k, (shape, _) in layout.shapes().items()}
    blocks = k_in // layout.block
    codes = unpack_nibbles(t["B"], layout.block).reshape(n_out, k_in).astype(np.float32)
    zeros = unpack_nibbles(t["zero_points"].reshape(n_out, -1), blocks).astype(np.float32)
    scales = t["scales"].reshape(n_out, blocks)
    blk = np.arange(k_in) // layout.block
    w_sorted = (codes - zeros[:, blk]) * scales[:, blk]
    w = np.empty_like(w_sorted)
    w[:, order] = w_sorted
    assert np.allclose(w, qw.dequantize().numpy(), atol=0)
