"""The PPO agent of SparsitySolver (`003_f48065355bfe72a6.txt`, §3.1 and Table 7; PPO: Schulman et al. 2017).

One-step episodes: the state is the total pruning ratio ``s = [P]`` (Eq. 1), the action a Gaussian sample
``A ~ N(μ(s), σ)`` with one entry per prunable unit (Eq. 2), the reward ``R = 10/ppl``. So the return is the
reward and the advantage ``R − V(s)``. Actor ``1 → 256 → 256 → N`` (tanh), a learned state-free log σ;
critic ``1 → 64 → 64 → 1``; Adam, learning rate 5e-4 (Table 7 prints the actor's; the critic's entry is
garbled in our copy, we use the same); an update after every 15 episodes, 10 epochs over them, clipped
ratio (ε = 0.2), advantages normalized per update.
Shapes: state ``[B, 1]``, action ``[B, N]``, value ``[B]``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune.errors import SlimpackError
from prune.io import write_json_atomic


@dataclass(frozen=True)
class PPOSettings:
    actor_hidden: int = 256
    critic_hidden: int = 64
    actor_lr: float = 5e-4
    critic_lr: float = 5e-4
    samples_per_update: int = 15
    epochs: int = 10
    clip: float = 0.2
    init_log_std: float = -1.0
    entropy: float = 0.0


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inp, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, out)
    )


class PPOAgent:
    """Actor-critic for one-step episodes; ``act`` samples, ``record`` stores, updates every N samples."""

    def __init__(self, n_actions: int, settings: PPOSettings = PPOSettings(), seed: int = 0) -> None:
        self.settings = settings
        self.n_actions = n_actions
        self.generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.actor = _mlp(1, settings.actor_hidden, n_actions).double()
        self.log_std = nn.Parameter(torch.full((n_actions,), settings.init_log_std, dtype=torch.float64))
        self.critic = _mlp(1, settings.critic_hidden, 1).double()
        self.actor_opt = torch.optim.Adam([*self.actor.parameters(), self.log_std], lr=settings.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=settings.critic_lr)
        self.buffer: list[tuple[float, torch.Tensor, float, float]] = []  # state, action, log-prob, reward

    def _dist(self, states: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.actor(states), self.log_std.exp())

    @torch.no_grad()
    def act(self, state: float, greedy: bool = False) -> tuple[torch.Tensor, float]:
        s = torch.tensor([[state]], dtype=torch.float64)
        dist = self._dist(s)
        if greedy:
            action = dist.mean[0]
        else:
            action = dist.mean[0] + dist.stddev[0] * torch.randn(
                self.n_actions, generator=self.generator, dtype=torch.float64
            )
        return action, dist.log_prob(action.unsqueeze(0)).sum().item()

    def record(self, state: float, action: torch.Tensor, log_prob: float, reward: float) -> dict[str, float] | None:
        """Store one episode; after ``samples_per_update`` of them run the PPO update and return its losses."""
        self.buffer.append((state, action, log_prob, reward))
        if len(self.buffer) < self.settings.samples_per_update:
            return None
        return self.update()

    def update(self) -> dict[str, float]:
        st = self.settings
        states = torch.tensor([[b[0]] for b in self.buffer], dtype=torch.float64)
        actions = torch.stack([b[1] for b in self.buffer])
        old_logp = torch.tensor([b[2] for b in self.buffer], dtype=torch.float64)
        rewards = torch.tensor([b[3] for b in self.buffer], dtype=torch.float64)
        self.buffer = []
        with torch.no_grad():
            adv = rewards - self.critic(states).squeeze(-1)
            adv = (adv - adv.mean()) / (adv.std() + 1e-8) if len(adv) > 1 else adv
        actor_loss = critic_loss = torch.zeros(())
        for _ in range(st.epochs):
            dist = self._dist(states)
            ratio = (dist.log_prob(actions).sum(-1) - old_logp).exp()
            surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - st.clip, 1 + st.clip) * adv)
            actor_loss = -surrogate.mean() - st.entropy * dist.entropy().sum(-1).mean()
            self.actor_opt.zero_grad()
            actor_loss.backward()
            self.actor_opt.step()
            critic_loss = (self.critic(states).squeeze(-1) - rewards).pow(2).mean()
            self.critic_opt.zero_grad()
            critic_loss.backward()
            self.critic_opt.step()
        return {"actor_loss": actor_loss.item(), "critic_loss": critic_loss.item()}

    # --- persistence (safetensors weights + JSON metadata; nothing is unpickled) ----------------------

    def save(self, directory: Path, meta: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"actor.{k}": v.contiguous() for k, v in self.actor.state_dict().items()}
        tensors |= {f"critic.{k}": v.contiguous() for k, v in self.critic.state_dict().items()}
        tensors["log_std"] = self.log_std.detach().clone()
        save_file(tensors, str(directory / "agent.safetensors"))
        body = {"n_actions": self.n_actions, "settings": asdict(self.settings), **meta}
        write_json_atomic(directory / "agent.json", body)

    @classmethod
    def load(cls, directory: Path, seed: int = 0) -> tuple[PPOAgent, dict[str, Any]]:
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / "agent.json").is_file() or not (directory / "agent.safetensors").is_file():
            raise SlimpackError(
                f"agent directory {str(directory)!r} lacks agent.json / agent.safetensors; pass the agent/ folder a "
                "searched prune wrote"
            )
        meta = json.loads((directory / "agent.json").read_text())
        agent = cls(int(meta["n_actions"]), PPOSettings(**meta["settings"]), seed)
        tensors = load_file(str(directory / "agent.safetensors"))
        agent.actor.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("actor.")})
        agent.critic.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("critic.")})
        with torch.no_grad():
            agent.log_std.copy_(tensors["log_std"])
        return agent, meta
