"""GPTQ / RTN / the grid / the checkpoint packing, on synthetic layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prune.masks import Pattern
from prune.methods import METHODS
from prune.obs import obs_sweep, round_to_grid
from prune.stats import Stats
from quant.grid import GroupQuantizer, fit_grid, group_count
from quant.methods import COUNT_ROWS, GPTQ, RTN, QuantizedLayer
from quant.pack import PACK_ROWS, from_gptq, pack_bits, to_gptq, unpack_bits
from quant.spec import QuantSpec
from tests.unit.test_methods import stats_for, synthetic_layer


def layer_of(W: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(W.shape[1], W.shape[0], bias=False)
    lin.weight.data.copy_(W)
    return lin


def output_error(W: torch.Tensor, Wq: torch.Tensor, X: torch.Tensor) -> float:
    return ((X @ (W - Wq).T).norm() / (X @ W.T).norm()).item()


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_bit_packing_round_trips_exactly(bits: int) -> None:
    for n in (96, 48, 7):  # whole words, and a zero-padded last word
        values = torch.randint(0, 2**bits, (5, n), generator=torch.Generator().manual_seed(bits))
        words = pack_bits(values, bits)
        assert words.dtype == torch.int32 and words.shape == (5, -(-n * bits // 32))
        assert torch.equal(unpack_bits(words, bits, n), values)


@pytest.mark.parametrize("bits", [3, 4])
def test_bit_packing_in_row_chunks_equals_packing_at_once(bits: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tall weight is packed ``PACK_ROWS`` rows at a time (bounded work space): the same words as at once."""
    values = torch.randint(0, 2**bits, (PACK_ROWS * 2 + 3, 40), generator=torch.Generator().manual_seed(bits))
    chunked = pack_bits(values, bits)
    monkeypatch.setattr("quant.pack.PACK_ROWS", values.shape[0])
    assert torch.equal(chunked, pack_bits(values, bits))


def test_four_bit_layout_is_gptq_nibble_order() -> None:
    """Value k sits in nibble k % 8 of word k // 8 (AutoGPTQ / GPTQModel's qweight layout)."""
    words = pack_bits(torch.arange(16).unsqueeze(0), 4)
    assert [w & 0xFFFFFFFF for w in words[0].tolist()] == [0x76543210, 0xFEDCBA98]


@pytest.mark.parametrize(
    "bits,sym,act_order,group", [(4, True, True, 16), (3, False, False, 32), (8, True, False, -1), (2, False, True, 16)]
)
def test_checkpoint_tensors_round_trip_exactly(bits: int, sym: bool, act_order: bool, group: int) -> None:
    W, X = synthetic_layer()
    spec = QuantSpec(bits, group, sym, act_order)
    qw = GPTQ(spec).compress(layer_of(W), stats_for(X, W), 0.0, Pattern()).weight
    tensors = to_gptq(qw)
    assert tensors["qweight"].shape == (64 * bits // 32, 48) and tensors["qweight"].dtype == torch.int32
    assert (
        tensors["qzeros"].shape == (group_count(spec, 64), -(-48 * bits // 32)) and tensors["scales"].dtype == torch.float16
    )
    back = from_gptq(tensors, spec)
    for field in ("codes", "zeros", "g_idx", "scales"):
        assert torch.equal(getattr(back, field), getattr(qw, field)), field
    assert torch.equal(back.dequantize(), qw.dequantize())


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_zero_is_exactly_on_every_grid(sym: bool, bits: int) -> None:
    W = torch.randn(32, 64) * torch.logspace(-3, 1, 64)
    W[W > 0.5] = torch.rand(1).item()  # groups with no negative weights too
    W[:, :16] = W[:, :16].abs()
    W[::3] = 0.0
    spec = QuantSpec(bits, 16, sym)
    quantizer = GroupQuantizer(spec, 32, 64)
    Wq = round_to_grid(W, quantizer)
    assert torch.equal(Wq[W == 0], torch.zeros(int((W == 0).sum())))
    assert torch.equal(quantizer.result().dequantize(), Wq)
    assert int(quantizer.result().zeros.min()) >= 1  # v1 stores zero − 1
    scale, zero = fit_grid(W[:, :16], spec)
    assert torch.equal(scale, scale.half().float())


@pytest.mark.parametrize("bits,group", [(4, 16), (3, 32), (4, -1)])
def test_gptq_beats_rtn_on_a_synthetic_layer(bits: int, group: int) -> None:
    W, X = synthetic_layer()
    spec = QuantSpec(bits, group)
    gptq, rtn = layer_of(W), layer_of(W)
    GPTQ(spec).compress(gptq, stats_for(X, W), 0.0, Pattern())
    RTN(spec).compress(rtn, Stats({}), 0.0, Pattern())
    assert output_error(W, gptq.weight.data, X) < 0.95 * output_error(W, rtn.weight.data, X)


@pytest.mark.parametrize("static", [False, True])
def test_act_order_g_idx_is_a_permutation_consistent_with_the_groups(static: bool) -> None:
    W, X = synthetic_layer()
    stats = stats_for(X, W)
    spec = QuantSpec(4, 16, act_order=True, static_groups=static)
    lin = layer_of(W)
    qw = GPTQ(spec).compress(lin, stats, 0.0, Pattern()).weight
    perm = torch.argsort(torch.diag(stats["hessian"]), descending=True, stable=True)
    if static:
        assert torch.equal(qw.g_idx, torch.arange(64, dtype=torch.int32) // 16)
    else:
        assert torch.equal(qw.g_idx[perm], torch.arange(64, dtype=torch.int32) // 16)  # groups in visiting order
    assert torch.bincount(qw.g_idx.long()).tolist() == [16] * 4  # every group has exactly g columns
    assert torch.equal(qw.dequantize(), lin.weight.data)  # the layer holds exactly the checkpoint's weights
    plain = layer_of(W)
    GPTQ(QuantSpec(4, 16)).compress(plain, stats, 0.0, Pattern())
    assert not torch.equal(plain.weight.data, lin.weight.data)


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_never_revives_a_pruned_weight(act_order: bool) -> None:
    W, X = synthetic_layer()
    stats = stats_for(X, W)
    pruned = layer_of(W)
    METHODS.build("sparsegpt", {}).compress(pruned, stats, 0.6, Pattern(scope="layer"))
    zeros = pruned.weight.data == 0
    out = GPTQ(QuantSpec(4, 16, act_order=act_order)).compress(pruned, stats, 0.0, Pattern())
    assert torch.equal(out.pruned, zeros)
    assert (pruned.weight.data[zeros] == 0).all()
    zero_points = out.weight.zeros[:, out.weight.g_idx.long()]
    assert torch.equal(out.weight.codes[zeros].int(), zero_points[zeros])  # stored as the zero point itself
    assert (out.weight.dequantize()[zeros] == 0).all()


@pytest.mark.parametrize("joint", ["sparsegpt", "wanda", "pgz"])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_joint_mode_keeps_the_pattern_and_every_pruned_zero(joint: str, pattern: str) -> None:
    W, X = synthetic_layer()
    stats = Stats({**stats_for(X, W).values, "input_mean": X.mean(0)})
    pruner = METHODS.build(joint, {"iterations": 4} if joint == "pgz" else {})
    lin = layer_of(W)
    out = GPTQ(QuantSpec(4, 16), pruner=pruner).compress(lin, stats, 0.5, Pattern.parse(pattern, pruner.default_scope))
    Wq = lin.weight.data
    assert torch.equal(out.weight.dequantize(), Wq)
    assert (Wq[out.pruned] == 0).all()
    if pattern == "2:4":
        assert ((out.pruned.reshape(48, 16, 4).sum(-1)) == 2).all()
    else:
        assert abs(out.pruned.float().mean().item() - 0.5) < 0.01


def test_joint_sparsegpt_beats_prune_then_round() -> None:
    W, X = synthetic_layer()
    stats = stats_for(X, W)
    joint = layer_of(W)
    GPTQ(QuantSpec(4, 16), pruner=METHODS.build("sparsegpt", {})).compress(joint, stats, 0.5, Pattern(scope="layer"))
    seq = layer_of(W)
    METHODS.build("sparsegpt", {}).compress(seq, stats, 0.5, Pattern(scope="layer"))
    RTN(QuantSpec(4, 16)).compress(seq, Stats({}), 0.0, Pattern())
    assert output_error(W, joint.weight.data, X) < output_error(W, seq.weight.data, X)


def test_obs_sweep_without_quantizer_or_mask_is_the_identity() -> None:
    W, X = synthetic_layer()
    Wp, mask = obs_sweep(W, stats_for(X, W)["hessian"])
    assert not mask.any() and torch.allclose(Wp, W, atol=1e-5)


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_joint_sparsegpt_keeps_the_sources_zeros_and_counts_them(pattern: str) -> None:
    """A source that already has zeros (a pruned model, or a dense one's natural zeros): joint SparseGPT
    keeps every one of them at zero and they count towards the target instead of adding to it."""
    W, X = synthetic_layer()
    W[torch.rand(W.shape, generator=torch.Generator().manual_seed(5)) < 0.1] = 0.0
    W[:, 0:2] = 0.0  # some whole 2:4 groups' worth of zeros
    zeros = W == 0
    lin = layer_of(W)
    pat = Pattern.parse(pattern, "layer")
    out = GPTQ(QuantSpec(4, 16), pruner=METHODS.build("sparsegpt", {})).compress(lin, stats_for(X, W), 0.5, pat)
    assert (lin.weight.data[zeros] == 0).all()
    if pat.is_nm:
        assert (out.pruned.reshape(48, 16, 4).sum(-1) >= 2).all()
        assert out.pruned.sum() == 48 * 32 + int((zeros.reshape(48, 16, 4).sum(-1) - 2).clamp(min=0).sum())
    else:
        assert out.pruned.sum() == 48 * 32


def test_a_quantized_layer_counts_its_kept_zeros_row_block_by_row_block() -> None:
    gen = torch.Generator().manual_seed(0)
    rows = 2 * COUNT_ROWS + 3  # a last, partial block of rows
    quantized = torch.randn(rows, 40, generator=gen).masked_fill(torch.rand(rows, 40, generator=gen) < 0.4, 0.0)
    pruned = torch.rand(rows, 40, generator=gen) < 0.5
    layer = QuantizedLayer.of(None, pruned, quantized)  # type: ignore[arg-type]
    assert layer.kept == int((quantized[pruned] == 0).sum()) > 0 and layer.pruned_count == int(pruned.sum())
