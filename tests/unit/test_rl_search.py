"""rl-search: Algorithm 1's constraints always meet the target, the PPO agent learns a toy reward, and a saved
agent is reused exactly (safetensors, no pickle)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prune.allocation.constraints import check_bounds, constrain
from prune.allocation.ppo import PPOAgent, PPOSettings
from prune.errors import SlimpackError


@pytest.mark.parametrize("seed", range(40))
def test_constraints_meet_the_target_for_any_action(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(3, 40, (1,), generator=gen))
    steps = torch.randint(1, 50, (n,), generator=gen).tolist()
    weights = [s * int(torch.randint(20, 200, (1,), generator=gen)) for s in steps]
    if seed % 2:  # half the cases: every other unit continuous (the FFN units of a structured search)
        steps = [0 if i % 2 else s for i, s in enumerate(steps)]
    target = float(torch.empty(1).uniform_(0.1, 0.9, generator=gen))
    spread = float(torch.empty(1).uniform_(0.05, 0.3, generator=gen))
    a_min, a_max = max(0.0, 1 - target - spread), min(1.0, 1 - target + spread)
    scale = [0.1, 1.0, 10.0][seed % 3]
    raw = torch.randn(n, generator=gen, dtype=torch.float64) * scale + (seed % 5 - 2) * scale
    kept = constrain(raw, target, weights, steps, a_min, a_max)
    total = sum(a * w for a, w in zip(kept, weights))
    budget = (1 - target) * sum(weights)
    slack = 1e-6 * budget if seed % 2 else max(steps)  # a continuous unit absorbs the rest exactly
    assert budget - slack <= total <= budget + 1e-6  # on target, never above the budget
    for a, w, s in zip(kept, weights, steps):
        assert a_min - 1e-9 <= a <= a_max + 1e-9
        if s:
            assert abs(a * w / s - round(a * w / s)) < 1e-6  # whole steps (GQA rounds): a ratio the pruner realizes


def test_bounds_must_bracket_the_target() -> None:
    with pytest.raises(SlimpackError, match="a_min ≤ 1 − target ≤ a_max"):
        check_bounds(0.7, 0.4, 0.5, [10], [1])


def test_ppo_agent_learns_a_toy_reward() -> None:
    """Reward peaks when the squashed actions equal a fixed pattern; the greedy action must approach it."""
    goal = torch.tensor([0.9, 0.1, 0.5, 0.7])
    agent = PPOAgent(4, PPOSettings(init_log_std=-0.5), seed=0)

    def reward(action: torch.Tensor) -> float:
        return -((torch.sigmoid(action.float()) - goal) ** 2).sum().item()

    start = reward(agent.act(0.5, greedy=True)[0])
    for _ in range(450):
        action, logp = agent.act(0.5)
        agent.record(0.5, action, logp, reward(action))
    assert reward(agent.act(0.5, greedy=True)[0]) > 0.5 * start + 0.0  # error at least halved
    assert reward(agent.act(0.5, greedy=True)[0]) > -0.08


def test_saved_agent_reloads_identically(tmp_path: Path) -> None:
    agent = PPOAgent(7, seed=3)
    for _ in range(15):
        a, lp = agent.act(0.3)
        agent.record(0.3, a, lp, float(a.sum()))
    agent.save(tmp_path / "agent", {"units": ["u"] * 7})
    assert {p.name for p in (tmp_path / "agent").iterdir()} == {"agent.json", "agent.safetensors"}
    again, meta = PPOAgent.load(tmp_path / "agent")
    assert meta["units"] == ["u"] * 7
    torch.testing.assert_close(again.act(0.6, greedy=True)[0], agent.act(0.6, greedy=True)[0])
    with pytest.raises(SlimpackError, match="lacks agent.json"):
        PPOAgent.load(tmp_path)
