"""Allocators: every registered one hits the target and stays in range; each has its own test."""

from __future__ import annotations

import math

import pytest
import torch

from prune.allocation import (
    ALLOCATORS,
    AllocationContext,
    block_plan,
    quantize_nm,
    spread,
    validate_plan,
    weighted_mean,
)
from prune.allocation.dlp import ALPHA_TABLE_19, default_alpha, dlp_importance, dlp_ratios, fit_alpha
from prune.allocation.log_increase import log_ratios, solve_ends
from prune.allocation.owl import outlier_ratio
from prune.allocation.pi import PI, pi_ratios
from prune.errors import SlimpackError
from prune.models import LoadedModel, tiny_llama
from prune.prepare import allocation_context

# Each registered allocator must be named here with its dedicated test below (a new one fails the suite).
DEDICATED = {
    "uniform": "test_uniform_gives_everyone_the_target",
    "dlp": "test_dlp_reproduces_algorithm_1_by_hand",
    "owl": "test_owl_outlier_ratio_and_mapping",
    "log-increase": "test_log_increase_is_monotone_and_hits_the_mean",
    "pi": "test_pi_ranks_blocks_by_perplexity_increase",
    "rl-search": "test_rl_search_beats_its_first_episode_and_reuses_its_agent",
}


def test_every_registered_allocator_has_a_dedicated_test() -> None:
    assert set(ALLOCATORS.names()) == set(DEDICATED), "add the new allocator's test to DEDICATED"
    assert all(name in globals() for name in DEDICATED.values())


@pytest.fixture(scope="module")
def ctx(calib_batches_module) -> AllocationContext:  # noqa: ANN001
    model = tiny_llama(num_layers=4, seed=7)
    ctx = allocation_context(LoadedModel(model, None, "tiny", None), None, progress=False, batches=calib_batches_module)
    ctx.heldout = lambda n: list(torch.randint(0, 256, (n, 24), generator=torch.Generator().manual_seed(9)).split(1))
    return ctx


@pytest.fixture(scope="module")
def calib_batches_module() -> list[torch.Tensor]:
    return list(torch.randint(0, 256, (4, 24), generator=torch.Generator().manual_seed(0)).split(2))


@pytest.mark.parametrize("name", ALLOCATORS.names())
@pytest.mark.parametrize("target", [0.5, 0.7])
def test_every_allocator_plans_every_linear_on_target(name: str, target: float, ctx: AllocationContext) -> None:
    before = [p.clone() for p in ctx.model.parameters()]
    allocation = ALLOCATORS.get(name)().allocate(target, ctx)
    validate_plan(allocation.plan, ctx, target, tol=1e-9)
    assert len(allocation.block_ratios) == 4
    assert all(torch.equal(a, b) for a, b in zip(before, ctx.model.parameters())), "allocation changed weights"


def test_uniform_gives_everyone_the_target() -> None:
    ctx = AllocationContext([["a", "b"], ["c"]])
    assert ALLOCATORS.get("uniform")().allocate(0.3, ctx).plan == {"a": 0.3, "b": 0.3, "c": 0.3}


def test_dlp_reproduces_algorithm_1_by_hand() -> None:
    medians = [1.0, 2.0, 3.0, 4.0]  # S_l, Eq. 5
    # Eq. 6: I = 1 - S/ΣS = [0.9, 0.8, 0.7, 0.6]; d = minmax(I)·2α with α = 0.1 → [0.2, 2/15, 1/15, 0]
    # mean(d) = 0.1; R = p + 0.1 - d
    assert dlp_importance(medians) == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert dlp_ratios(medians, 0.5, 0.1) == pytest.approx([0.4, 0.5 + 0.1 - 2 / 15, 0.5 + 0.1 - 1 / 15, 0.6])
    assert default_alpha(0.7) == 0.15 and default_alpha(0.68) == 0.15 and ALPHA_TABLE_19[0.5] == 0.04


def test_dlp_default_alpha_is_fitted_below_ratio_one() -> None:
    medians = [1.0, 2.0, 3.0, 4.0]  # d = minmax(I)·2α; max R = p + mean(d) = p + α
    assert fit_alpha(medians, 0.5, 0.1) == 0.1  # fits: unchanged
    alpha = fit_alpha(medians, 0.9, default_alpha(0.9))  # Table 19's 0.12 would give 1.02
    assert alpha == pytest.approx(0.09) and max(dlp_ratios(medians, 0.9, alpha)) == pytest.approx(0.99)
    assert sum(dlp_ratios(medians, 0.9, alpha)) / 4 == pytest.approx(0.9)


def test_owl_outlier_ratio_and_mapping() -> None:
    scores = torch.tensor([1.0] * 98 + [100.0, 100.0])  # mean ≈ 2.98: two outliers at M = 5
    assert outlier_ratio(scores, 5.0) == pytest.approx(0.02)
    assert outlier_ratio(scores, 50.0) == 0.0
    r = spread([0.01, 0.03, 0.02], 0.6, 0.08)  # most outliers → least sparsity, within ±λ
    assert r == pytest.approx([0.68, 0.52, 0.60])


def test_log_increase_is_monotone_and_hits_the_mean() -> None:
    r0, rn = solve_ends(30, 0.5)
    ratios = log_ratios(30, r0, rn)
    assert r0 == pytest.approx(0.25) and all(b > a for a, b in zip(ratios, ratios[1:]))
    assert sum(ratios) / 30 == pytest.approx(0.5)
    assert ratios[-1] == pytest.approx(rn)
    assert ratios[1] - ratios[0] > ratios[-1] - ratios[-2]  # fast rise, then slow (a log curve)
    r0, rn = solve_ends(30, 0.5, last=0.6)
    assert rn == 0.6 and sum(log_ratios(30, r0, rn)) / 30 == pytest.approx(0.5)
    r0, rn = solve_ends(30, 0.5, first=0.3)
    assert r0 == 0.3 and sum(log_ratios(30, r0, rn)) / 30 == pytest.approx(0.5)
    for n in (2, 4, 30):  # the default span keeps both ends in range at any target
        for t in (0.1, 0.5, 0.9, 0.95):
            r0, rn = solve_ends(n, t)
            assert 0 < r0 < t < rn < 1
    with pytest.raises(SlimpackError, match="at most one"):
        solve_ends(30, 0.5, first=0.1, last=0.6)


def test_quantize_nm_keeps_the_total_and_follows_the_ratios() -> None:
    n = quantize_nm([0.3, 0.45, 0.55, 0.7], m=4, n_base=2)
    assert sum(n) == 8 and all(0 <= x <= 3 for x in n)
    assert n == sorted(n)  # more sparsity asked → at least as many zeros
    assert quantize_nm([0.5] * 6, 8, 4) == [4] * 6


def test_plan_validation_names_the_problem() -> None:
    ctx = AllocationContext([["a", "b"], ["c"]], numel={"a": 1, "b": 1, "c": 2})
    with pytest.raises(SlimpackError, match="lacks, e.g. 'zz'"):
        validate_plan({"a": 0.5, "b": 0.5, "c": 0.5, "zz": 0.5}, ctx)
    with pytest.raises(SlimpackError, match="misses 1 prunable module"):
        validate_plan({"a": 0.5, "b": 0.5}, ctx)
    with pytest.raises(SlimpackError, match="ratio 1.2 for 'c' is outside"):
        validate_plan({"a": 0.5, "b": 0.5, "c": 1.2}, ctx)
    assert weighted_mean({"a": 0.2, "b": 0.4, "c": 0.6}, ctx.numel) == pytest.approx(0.45)
    assert block_plan([0.1, 0.2], ctx) == {"a": 0.1, "b": 0.1, "c": 0.2}
    assert not math.isnan(weighted_mean(block_plan([0.1, 0.2], ctx), ctx.numel))


def test_pi_ranks_blocks_by_perplexity_increase(ctx: AllocationContext) -> None:
    assert pi_ratios([5.0, 1.0, 3.0, 0.5], 0.5, 0.04) == pytest.approx([0.46, 0.54, 0.46, 0.54])
    assert pi_ratios([5.0, 1.0, 3.0], 0.5, 0.04) == pytest.approx([0.46, 0.54, 0.5])  # odd: median keeps target
    assert pi_ratios([5.0, 1.0, 3.0, 0.5, 2.0], 0.5, 0.04, keep_ends=True) == pytest.approx([0.5, 0.5, 0.46, 0.54, 0.5])
    before = [p.clone() for p in ctx.model.parameters()]
    dense, ppl = PI().sensitivity(0.8, ctx)
    assert len(ppl) == 4 and all(p != dense for p in ppl)
    assert all(torch.equal(a, b) for a, b in zip(before, ctx.model.parameters()))
    allocation = PI(delta=0.05).allocate(0.6, ctx)
    most = max(range(4), key=lambda i: allocation.importance[i])
    assert allocation.block_ratios[most] == pytest.approx(0.55)


def test_rl_search_beats_its_first_episode_and_reuses_its_agent(ctx: AllocationContext, tmp_path) -> None:  # noqa: ANN001
    first = ALLOCATORS.build("rl-search", {"episodes": 30, "windows": 2, "seqlen": 16}).allocate(0.6, ctx)
    history = first.options["history"]
    assert len(history) == 30 and first.options["best_heldout_ppl"] == min(h["ppl"] for h in history)
    assert first.options["best_heldout_ppl"] <= history[0]["ppl"]
    validate_plan(first.plan, ctx, 0.6, tol=1e-3)
    first.write_artifacts(tmp_path)
    assert (tmp_path / "search.png").stat().st_size > 0 and (tmp_path / "agent" / "agent.safetensors").is_file()
    reused = ALLOCATORS.build(
        "rl-search", {"episodes": 3, "windows": 2, "seqlen": 16, "agent": str(tmp_path / "agent")}
    )
    assert reused.allocate(0.5, ctx).options["agent_from"] == str(tmp_path / "agent")
    other = tiny_llama(num_layers=2, seed=1)
    small = allocation_context(LoadedModel(other, None, "tiny", None), None, progress=False, batches=ctx.batches)
    small.heldout = ctx.heldout
    with pytest.raises(SlimpackError, match="trained on .* other units"):
        reused.allocate(0.5, small)
