"""Pure tensor math of the metrics and solvers on synthetic layers."""

import pytest
import torch
from torch import nn

from prune.masks import Pattern
from prune.methods import METHODS
from prune.methods.sparsegpt import sparsegpt_prune
from prune.metrics import METRICS
from prune.metrics.pruner_zero import min_max_scale
from prune.stats import HessianAccumulator, InputNormAccumulator, Stats


def synthetic_layer(out_f: int = 48, in_f: int = 64, tokens: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """W: [out, in]; X: [tokens, in] with correlated features of very different scales (as in LLMs)."""
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(in_f, in_f, generator=gen) / in_f**0.5
    scales = torch.logspace(-1, 1, in_f)[torch.randperm(in_f, generator=gen)]
    X = (torch.randn(tokens, in_f, generator=gen) @ mix + 0.3 * torch.randn(tokens, in_f, generator=gen)) * scales
    W = torch.randn(out_f, in_f, generator=gen)
    return W, X


def stats_for(X: torch.Tensor, W: torch.Tensor) -> Stats:
    h, n = HessianAccumulator(X.shape[1]), InputNormAccumulator(X.shape[1])
    h.update(X)
    n.update(X)
    return Stats({"hessian": h.result(), "input_norm": n.result(), "grad": torch.rand_like(W)})


def reconstruction_error(method: str, W: torch.Tensor, X: torch.Tensor, pattern: Pattern, sparsity: float) -> float:
    layer = nn.Linear(W.shape[1], W.shape[0], bias=False)
    layer.weight.data.copy_(W)
    METHODS.get(method)().compress(layer, stats_for(X, W), sparsity, pattern)
    return (X @ W.T - X @ layer.weight.data.T).norm().item()


@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.5), ("unstructured", 0.7), ("2:4", 0.5), ("4:8", 0.5)])
def test_sparsegpt_reconstructs_better_than_wanda_and_magnitude(pattern: str, sparsity: float) -> None:
    W, X = synthetic_layer()
    errs = {
        m: reconstruction_error(m, W, X, Pattern.parse(pattern, METHODS.get(m)().default_scope), sparsity)
        for m in ("magnitude", "wanda", "sparsegpt")
    }
    assert errs["sparsegpt"] < errs["wanda"] < errs["magnitude"], errs


def test_sparsegpt_leaves_inputs_alone_and_hits_the_pattern_exactly() -> None:
    W, X = synthetic_layer()
    H = stats_for(X, W)["hessian"]
    W0, H0 = W.clone(), H.clone()
    for pattern, check in [
        (Pattern.parse("2:4"), lambda m: (m.reshape(48, 16, 4).sum(-1) == 2).all()),
        (Pattern(scope="row"), lambda m: (m.sum(1) == 32).all()),
        (Pattern(scope="layer"), lambda m: m.sum() == 48 * 32),
    ]:
        Wp, mask = sparsegpt_prune(W, H, 0.5, pattern, blocksize=16)
        assert check(mask)
        assert torch.equal(Wp == 0, mask | (W == 0))
    assert torch.equal(W, W0) and torch.equal(H, H0)


def test_sparsegpt_handles_dead_inputs() -> None:
    W, X = synthetic_layer()
    X[:, 5] = 0
    Wp, _ = sparsegpt_prune(W, stats_for(X, W)["hessian"], 0.5, Pattern(scope="layer"))
    assert torch.isfinite(Wp).all() and (Wp[:, 5] == 0).all()


def test_wanda_and_pruner_zero_scores_follow_their_equations() -> None:
    W = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    norm = torch.tensor([2.0, 0.25])
    G = torch.tensor([[1.0, 3.0], [5.0, 2.0]])
    stats = Stats({"input_norm": norm, "grad": G})
    torch.testing.assert_close(METRICS.get("wanda").fn(W, stats), torch.tensor([[2.0, 0.5], [6.0, 0.125]]))
    torch.testing.assert_close(METRICS.get("magnitude").fn(W, stats), W.abs())
    mms = torch.tensor([[0.0, 0.5], [1.0, 0.25]])
    torch.testing.assert_close(min_max_scale(G), mms)
    torch.testing.assert_close(METRICS.get("pruner-zero").fn(W, stats), W * W * mms)
    assert torch.equal(min_max_scale(torch.full((2, 2), 3.0)), torch.ones(2, 2))


def test_methods_reject_unknown_options() -> None:
    with pytest.raises(TypeError):
        METHODS.get("wanda")(blocksize=3)
    assert METHODS.get("sparsegpt")(blocksize=64, percdamp=0.1).options() == {"blocksize": 64, "percdamp": 0.1}


def test_a_consumed_hessian_gives_the_same_sweep_bit_for_bit() -> None:
    """`obs_sweep(consume_H=True)` factors the caller's Hessian where it lies (the walker's owned statistics):
    the same pruned and quantized weights as the sweep over a copy, and the Hessian is used up."""
    from prune.obs import SweepPruning, obs_sweep
    from quant.grid import GroupQuantizer
    from quant.spec import QuantSpec

    torch.manual_seed(3)
    W = torch.randn(12, 40)
    X = torch.randn(200, 40)
    H = 2 * X.T @ X / 200
    H[:, 5] = H[5, :] = 0  # a dead input

    def settings(case: int) -> dict:  # fresh quantizers: they record what they fit
        return [
            {"prune": SweepPruning(0.5, Pattern())},
            {"prune": SweepPruning(0.5, Pattern.parse("2:4")), "quantizer": GroupQuantizer(QuantSpec(4, 8), 12, 40)},
            {"fixed_mask": W.abs() < 0.3, "quantizer": GroupQuantizer(QuantSpec(4, 8, act_order=True), 12, 40),
             "act_order": True},
        ][case]  # fmt: skip

    for case in range(3):
        copied = obs_sweep(W, H, **settings(case), blocksize=16)
        mine = H.clone()
        consumed = obs_sweep(W, mine, **settings(case), blocksize=16, consume_H=True)
        assert torch.equal(copied[0], consumed[0]) and torch.equal(copied[1], consumed[1])
        assert not torch.equal(mine, H)  # used up: factored where it lay
    before = H.clone()
    obs_sweep(W, H, **settings(0), blocksize=16)
    assert torch.equal(H, before)  # without consume_H the caller's Hessian is left as it was
