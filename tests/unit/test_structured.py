"""Structured pruning math: head/channel surgery, SlimGPT's OBS column pruning and grouped Cholesky,
activation-ℓ2 order, ridge reconstruction, GQA counting and the saved-form round trip."""

from __future__ import annotations

import pytest
import torch

from prune.architecture import adapter_for
from prune.errors import SlimpackError
from prune.models import tiny_llama
from prune.structured import STRUCTURED
from prune.structured.activation import lowest_heads
from prune.structured.reconstruct import ridge_compensate
from prune.structured.shapes import (
    apply_structure,
    block_counts,
    block_shape,
    cut_channels,
    cut_heads,
    head_columns,
    layer_kv_heads,
    record_structure,
)
from prune.structured.slimgpt import (
    damped_inverse,
    group_sizes,
    head_errors,
    prune_channels,
    prune_heads,
    remove_columns,
)
from prune.structured.walk import structured_walk


def model6() -> torch.nn.Module:
    """6 query heads in 2 KV groups of 3, head_dim 16, FFN 96."""
    return tiny_llama(hidden_size=96, num_heads=6, num_kv_heads=2, intermediate_size=96, seed=3)


def mha6() -> torch.nn.Module:
    """6 heads, each with its own KV head (multi-head attention, as LLaMA-2-7B), head_dim 16, FFN 96."""
    return tiny_llama(hidden_size=96, num_heads=6, num_kv_heads=6, intermediate_size=96, seed=3)


def capture(module: torch.nn.Module, run, output: bool = False) -> torch.Tensor:  # noqa: ANN001
    """The first input (or output) ``module`` sees while ``run()`` executes."""
    seen = []

    def hook(m: torch.nn.Module, args: tuple, out: torch.Tensor | tuple) -> None:
        value = (out[0] if isinstance(out, tuple) else out) if output else args[0]
        seen.append(value.detach().clone())

    handle = module.register_forward_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    return seen[0]


@torch.no_grad()
def test_cutting_heads_changes_attention_output_exactly_as_the_reduced_o_proj_predicts() -> None:
    model = model6()
    block = adapter_for(model).blocks(model)[0]
    attn = block.self_attn
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    X = capture(attn.o_proj, lambda: model(ids))  # [2, 12, 6·16]
    W = attn.o_proj.weight.clone()
    keep = [0, 2, 3, 5]  # two per KV group
    cols = head_columns(keep, 16)
    cut_heads(attn, keep)
    assert attn.q_proj.weight.shape == (64, 96) and attn.o_proj.weight.shape == (96, 64)
    assert attn.num_key_value_groups == 2 and attn.k_proj.weight.shape == (32, 96)
    X_new = capture(attn.o_proj, lambda: model(ids))
    torch.testing.assert_close(X_new, X[..., cols], rtol=0, atol=1e-6)  # kept heads' outputs are untouched
    out = capture(attn, lambda: model(ids), output=True)
    torch.testing.assert_close(out, X[..., cols] @ W[:, cols].T, rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_cutting_channels_equals_dropping_their_down_proj_columns() -> None:
    model = model6()
    mlp = adapter_for(model).blocks(model)[1].mlp
    x = torch.randn(3, 7, 96, generator=torch.Generator().manual_seed(1))
    act = capture(mlp.down_proj, lambda: mlp(x))
    W = mlp.down_proj.weight.clone()
    keep = [c for c in range(96) if c % 3]
    cut_channels(mlp, keep)
    torch.testing.assert_close(mlp(x), act[..., keep] @ W[:, keep].T, rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_zeroed_units_compute_the_same_function_as_cut_units() -> None:
    """The rl-search environment zeroes columns instead of cutting; both must give the same logits."""
    a, b = model6(), model6()
    ids = torch.randint(0, 256, (1, 10), generator=torch.Generator().manual_seed(2))
    for model, zero in ((a, True), (b, False)):
        blk = adapter_for(model).blocks(model)[0]
        if zero:
            blk.self_attn.o_proj.weight[:, head_columns([1, 4], 16)] = 0
            blk.mlp.down_proj.weight[:, :10] = 0
        else:
            cut_heads(blk.self_attn, [0, 2, 3, 5])
            cut_channels(blk.mlp, range(10, 96))
    torch.testing.assert_close(a(ids).logits, b(ids).logits, rtol=1e-5, atol=1e-5)


def obs_problem(seed: int, tokens: int, features: int, out: int) -> tuple[torch.Tensor, ...]:
    """A float64 layer: ``H = 2XᵀX/N: [in, in]``, ``W: [out, in]`` and ``H⁻¹``."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(tokens, features, generator=gen, dtype=torch.float64)
    H = 2 * X.T @ X / tokens
    W = torch.randn(out, features, generator=gen, dtype=torch.float64)
    return H, W, torch.linalg.inv(H)


def test_remove_columns_single_column_is_equation_4() -> None:
    H, W, Hinv = obs_problem(0, 200, 8, 5)
    expected = W - torch.outer(W[:, 3] / Hinv[3, 3], Hinv[3])
    got = W.clone()
    rest = remove_columns(got, Hinv, [3])
    torch.testing.assert_close(got, expected)
    assert torch.all(got[:, 3] == 0)
    keep = [0, 1, 2, 4, 5, 6, 7]
    torch.testing.assert_close(rest, torch.linalg.inv(H[keep][:, keep]))  # Eq. 3: the inverse of H without p


def test_remove_columns_is_the_one_by_one_sweep_of_equations_4_and_3() -> None:
    """The closed form ends where removing the columns one at a time does (Eq. 4 for W, Eq. 3 for H⁻¹)."""
    H, W, Hinv = obs_problem(3, 300, 12, 6)
    cols = [7, 2, 10, 5]
    expected, B = W.clone(), Hinv.clone()
    for p in cols:
        expected -= torch.outer(expected[:, p] / B[p, p], B[p])  # Eq. 4 (column p ends at zero)
        B = B - torch.outer(B[:, p], B[p]) / B[p, p]  # Eq. 3 (row and column p now zero)
    got = W.clone()
    rest = remove_columns(got, Hinv, cols)
    torch.testing.assert_close(got, expected)
    assert torch.all(got[:, cols] == 0)
    keep = [c for c in range(12) if c not in cols]
    torch.testing.assert_close(rest, B[keep][:, keep])
    torch.testing.assert_close(rest, torch.linalg.inv(H[keep][:, keep]))


def test_grouped_cholesky_diagonals_are_the_sequential_equation_3_updates() -> None:
    """Lemma of Eq. 5: the squared Cholesky diagonal of a head's H⁻¹ block is H⁻¹_pp after removing the head's
    previous columns one by one with Eq. 3."""
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(300, 12, generator=gen, dtype=torch.float64)
    Hinv = torch.linalg.inv(2 * X.T @ X / 300)
    W = torch.randn(4, 12, generator=gen, dtype=torch.float64)
    d = 4
    for h in range(3):
        B = Hinv[h * d : (h + 1) * d, h * d : (h + 1) * d].clone()
        err = 0.0
        for j in range(d):
            err += (W[:, h * d + j] ** 2).sum() / B[j, j]
            B = B - torch.outer(B[:, j], B[j]) / B[j, j]  # Eq. 3 (row/column j now zero)
        assert head_errors(W, Hinv, d, grouped=True)[h].item() == pytest.approx(err.item(), rel=1e-9)
    plain = ((W**2).sum(0) / torch.diag(Hinv)).reshape(3, d).sum(1)
    torch.testing.assert_close(head_errors(W, Hinv, d, grouped=False), plain)


def output_error(X: torch.Tensor, W: torch.Tensor, W2: torch.Tensor) -> float:
    return ((X @ W.T - X @ W2.T) ** 2).sum().item()


def correlated_inputs(n: int, features: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, features // 2, generator=gen)
    return torch.cat([base, base @ torch.randn(features // 2, features // 2, generator=gen) * 0.5
                      + 0.1 * torch.randn(n, features // 2, generator=gen)], 1)  # fmt: skip


def test_slimgpt_compensation_beats_plain_removal_of_the_same_heads_and_channels() -> None:
    X = correlated_inputs(400, 24, 2)
    H = 2 * X.T @ X / 400
    W = torch.randn(6, 24, generator=torch.Generator().manual_seed(3))
    comp = W.clone()
    heads = prune_heads(comp, H, 2, head_dim=4, kv_heads=2)
    cols = head_columns(heads, 4)
    assert torch.all(comp[:, cols] == 0) and len(heads) == 2
    assert len({h // 3 for h in heads}) == 2  # one per KV group (groups of 3 heads)
    plain = W.clone()
    plain[:, cols] = 0
    assert output_error(X, W, comp) < 0.7 * output_error(X, W, plain)

    comp = W.clone()
    channels = prune_channels(comp, H, 10, first=1024, floor=2)
    plain = W.clone()
    plain[:, channels] = 0
    assert len(channels) == 10 and torch.all(comp[:, channels] == 0)
    assert output_error(X, W, comp) < 0.7 * output_error(X, W, plain)


def test_dynamic_group_size_shrinks_to_the_floor() -> None:
    assert group_sizes(768) == [384, 192, 96, 48, 24, 12, 8, 4]
    assert group_sizes(5000)[:2] == [1024, 1024] and sum(group_sizes(5000)) == 5000
    assert group_sizes(300, fixed=128) == [128, 128, 44]


def test_ridge_reconstruction_lowers_the_error_on_a_synthetic_layer() -> None:
    X = correlated_inputs(500, 16, 4)  # [tokens, in]
    W = torch.randn(8, 16, generator=torch.Generator().manual_seed(5))
    H = 2 * X.T @ X / 500
    pruned = [9, 11, 14]
    dropped = W.clone()
    dropped[:, pruned] = 0
    recon = W.clone()
    ridge_compensate(recon, H, 500, pruned, lam=0.9)
    recon[:, pruned] = 0
    assert output_error(X, W, recon) < 0.2 * output_error(X, W, dropped)
    torch.testing.assert_close(recon[:, pruned], torch.zeros(8, 3))


def test_activation_l2_takes_the_quietest_heads_one_per_group_per_round() -> None:
    norm = torch.tensor([5.0, 1.0, 2.0, 0.5, 9.0, 0.6]).repeat_interleave(2)  # 6 heads of dim 2, groups of 3
    assert lowest_heads(norm, 2, 2, 2) == [1, 3]  # group 0's quietest (1) and group 1's (3), not 3 and 5
    assert lowest_heads(norm, 4, 2, 2) == [1, 2, 3, 5]


def test_gqa_counting_and_the_bad_head_counts() -> None:
    model = model6()
    shape = block_shape(adapter_for(model).blocks(model)[0])
    heads, channels = block_counts(0.3, 0.3, shape, "layer 0")
    assert heads == 2  # 0.3·6 = 1.8 heads → one round of 2 (one per group)
    removed = heads * shape.head_params + channels * shape.channel_params
    budget = 0.3 * (shape.attn_params + shape.mlp_params)
    assert abs(removed - budget) <= shape.channel_params / 2
    with pytest.raises(SlimpackError, match="would remove all 6 query heads of layer 0"):
        block_counts(0.9, 0.9, shape, "layer 0")
    with pytest.raises(SlimpackError, match="--keep-heads 3: .* keep one of 2, 4, 6"):
        block_counts(0.2, 0.2, shape, "layer 0", keep_heads=3)
    assert block_counts(0.2, 0.2, shape, "layer 0", keep_heads=2)[0] == 4


@pytest.mark.parametrize("method", STRUCTURED.names())
@pytest.mark.parametrize("reconstruct", [False, True])
def test_every_structured_method_walks_and_the_record_rebuilds_the_shapes(method: str, reconstruct: bool) -> None:
    model = model6()
    adapter = adapter_for(model)
    plan = {f"model.layers.{i}.{u}": 0.4 for i in range(2) for u in ("self_attn", "mlp")}
    batches = list(torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0)).split(2))
    records = structured_walk(model, adapter, STRUCTURED.build(method, {}), plan, batches, reconstruct=reconstruct,
                              progress=False)  # fmt: skip
    assert [(r.before, r.after) for r in records][:2] == [
        (6, 4),
        (96, 53),
    ]  # 2 heads + 43 channels = 0.4 of 18 432 + 27 648
    ids = torch.randint(0, 256, (1, 9))
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    record_structure(model.config, adapter.blocks(model))
    fresh = model6()
    apply_structure(adapter.blocks(fresh), model.config.slimpack_structure)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, model(ids).logits)


def test_damped_inverse_survives_dead_inputs() -> None:
    H = torch.eye(4)
    H[2, 2] = 0
    assert torch.isfinite(damped_inverse(H, 0.01)).all()


@torch.no_grad()
@pytest.mark.parametrize(("make", "keep", "kv_left", "groups"), [(mha6, [0, 2, 3, 5], 4, 1), (model6, [0, 1, 2], 1, 3)],
                         ids=["multi-head", "gqa-whole-group"])  # fmt: skip
def test_cutting_heads_drops_the_kv_heads_left_without_query_heads(make, keep, kv_left, groups) -> None:  # noqa: ANN001
    """A KV head whose query heads are all gone goes too (its k/v rows): the same function as zeroing the
    removed heads' o_proj columns, with a narrower cache."""
    zeroed, cut = make(), make()
    gone = [h for h in range(6) if h not in keep]
    adapter_for(zeroed).blocks(zeroed)[0].self_attn.o_proj.weight[:, head_columns(gone, 16)] = 0
    attn = adapter_for(cut).blocks(cut)[0].self_attn
    cut_heads(attn, keep)
    assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (kv_left * 16, 96)
    assert attn.num_key_value_groups == groups
    ids = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(cut(ids).logits, zeroed(ids).logits, rtol=1e-5, atol=1e-5)
    out = cut(ids, use_cache=True)
    assert [layer.keys.shape[1] for layer in out.past_key_values.layers] == [kv_left, make().config.num_key_value_heads]


def test_multi_head_counting_removes_single_heads_with_their_kv_rows() -> None:
    model = mha6()
    shape = block_shape(adapter_for(model).blocks(model)[0])
    assert shape.multi_head and shape.step == 1 and shape.head_params == 4 * 16 * 96  # q, k, v rows + o columns
    heads, channels = block_counts(0.3, 0.3, shape, "layer 0")
    assert heads == 2  # 0.3·6 = 1.8 → 2 single heads (GQA would round to whole rounds)
    removed = heads * shape.head_params + channels * shape.channel_params
    assert abs(removed - 0.3 * (shape.attn_params + shape.mlp_params)) <= shape.channel_params / 2
    with pytest.raises(SlimpackError, match="would remove all 6 query heads of layer 0; keep at least one:"):
        block_counts(0.95, 0.3, shape, "layer 0")
    for keep in (0, 7):
        with pytest.raises(SlimpackError, match=f"--keep-heads {keep}: layer 0 has 6 heads; keep 1 to 6"):
            block_counts(0.2, 0.2, shape, "layer 0", keep_heads=keep)
    assert block_counts(0.2, 0.2, shape, "layer 0", keep_heads=5)[0] == 1


def test_a_gqa_layer_cut_to_one_query_head_per_group_stays_grouped_query() -> None:
    """Multi-head or not is the architecture's (its config), not the layer's current shape: pruning a GQA model
    again never takes its KV heads."""
    model = model6()
    block = adapter_for(model).blocks(model)[0]
    cut_heads(block.self_attn, [0, 3])  # 2 query heads over 2 KV heads
    shape = block_shape(block)
    assert shape.heads == shape.kv_heads == 2 and not shape.multi_head and shape.step == 2
    assert shape.head_params == 2 * 16 * 96
    with pytest.raises(SlimpackError, match="keep at least one per KV group"):
        block_counts(0.6, 0.3, shape, "layer 0")
    assert block_counts(0.3, 0.3, shape, "layer 0")[0] == 0  # the FFN takes the whole budget


@pytest.mark.parametrize("method", STRUCTURED.names())
def test_every_structured_method_removes_whole_heads_of_multi_head_attention(method: str) -> None:
    model = mha6()
    adapter = adapter_for(model)
    plan = {f"model.layers.{i}.{u}": 0.4 for i in range(2) for u in ("self_attn", "mlp")}
    batches = list(torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0)).split(2))
    records = structured_walk(model, adapter, STRUCTURED.build(method, {}), plan, batches, progress=False)
    assert [(r.before, r.after) for r in records][:2] == [(6, 4), (96, 49)]  # 2·6144 + 47·288 ≈ 0.4 of 64 512
    record_structure(model.config, adapter.blocks(model))
    assert layer_kv_heads(model.config) == [4, 4] and layer_kv_heads(mha6().config) == [6, 6]
    fresh = mha6()
    apply_structure(adapter.blocks(fresh), model.config.slimpack_structure)
    fresh.load_state_dict(model.state_dict())
    ids = torch.randint(0, 256, (1, 9))
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, model(ids).logits)


def test_a_record_without_kv_heads_reads_as_before_and_a_damaged_one_is_named() -> None:
    import copy

    model = model6()
    adapter = adapter_for(model)
    cut_heads(adapter.blocks(model)[0].self_attn, [0, 2, 3, 5])
    record_structure(model.config, adapter.blocks(model))
    old = copy.deepcopy(model.config.slimpack_structure)
    for layer in old["layers"]:
        del layer["num_key_value_heads"]  # as written before KV heads could go
    fresh = model6()
    apply_structure(adapter_for(fresh).blocks(fresh), old)
    fresh.load_state_dict(model.state_dict())  # strict: every shape as recorded
    bad = copy.deepcopy(model.config.slimpack_structure)
    bad["layers"][0]["num_key_value_heads"] = 3
    with pytest.raises(SlimpackError, match="gives layer 0 4 query heads over 3 KV heads"):
        apply_structure(adapter_for(fresh).blocks(model6()), bad)
    bad["layers"][0]["num_key_value_heads"] = "two"
    with pytest.raises(SlimpackError, match="layer 0 is .*'two'.* damaged — prune it again"):
        apply_structure(adapter_for(fresh).blocks(model6()), bad)
    assert layer_kv_heads(model.config) == [2, 2]
    model.config.slimpack_structure = old
    assert layer_kv_heads(model.config) == [2, 2]  # an old record: the config's count
