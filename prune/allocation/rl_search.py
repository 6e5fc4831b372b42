"""``rl-search``: SparsitySolver's reinforcement-learning search of per-unit sparsity
(`003_f48065355bfe72a6.txt`, §3.1, Algorithm 1, Table 7).

Each episode: the PPO agent (`prune.allocation.ppo`) reads the state ``[P]`` and proposes one raw action per
prunable unit; Algorithm 1 (`prune.allocation.constraints`) turns it into preserved ratios that meet P; the
environment prunes the model with those ratios and the reward is ``10/ppl`` on held-out calibration text
(windows of the calibration split that no calibration window overlaps — never the evaluation split).
Units: every prunable weight matrix (unstructured) or every block's attention and FFN (structured, as in the
paper; the allocation context's ``kind``).

Cheap episodes (the search's cost is all in them):
- the pruning criterion is computed once on the dense model — Wanda scores ``|W|·‖X‖`` per output row for
  matrices, activation ℓ2 norms for heads/channels (the paper's criteria) — and turned into per-row ranks
  / removal orders, so an episode is one masking pass (structured units are zeroed, which computes the same
  function as cutting them out);
- the reward uses a few short held-out windows (default 4 × 256 tokens).
The plan returned is the best episode's; the final prune then runs the chosen method layer by layer on it.
The agent is written to ``agent/`` (safetensors + JSON) and ``-A agent=DIR`` reuses it at another target
(the state is P, so the trained actor proposes for the new ratio at once).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from prune.allocation.base import ALLOCATORS, Allocation, AllocationContext, weighted_mean
from prune.allocation.constraints import check_bounds, constrain
from prune.allocation.ppo import PPOAgent, PPOSettings
from prune.allocation.scores import module_values
from prune.errors import SlimpackError
from prune.eval import perplexity
from prune.masks import prune_count
from prune.metrics import METRICS
from prune.plots import search_figure
from prune.structured.activation import head_order
from prune.structured.shapes import block_counts, block_shape, head_columns, unit_numel

log = logging.getLogger(__name__)


def _row_rank(score: torch.Tensor) -> torch.Tensor:
    """Each weight's rank within its output row (0 = lowest score): ``[out, in]`` int32."""
    return torch.argsort(torch.argsort(score, dim=1), dim=1).to(torch.int32)


class MatrixUnits:
    """Unstructured units: weight matrices masked per output row by their Wanda rank (`prune.metrics.wanda`),
    pruning `prune.masks.prune_count` weights per row as the Wanda prune does."""

    def __init__(self, ctx: AllocationContext) -> None:
        wanda = METRICS.get("wanda")
        ranks = module_values(ctx, wanda.needs, lambda W, stats: _row_rank(wanda.fn(W, stats)), "wanda ranks")
        linears = ctx.adapter.named_linears(ctx.model)
        self.names = [n for names in ctx.block_linears for n in names]
        self.linears = [linears[n] for n in self.names]
        self.rank = [ranks[n] for n in self.names]
        self.dense = [lin.weight.data.clone() for lin in self.linears]
        self.weights = [W.numel() for W in self.dense]
        self.steps = [0] * len(self.dense)  # any ratio; the final prune rounds per row

    def apply(self, preserved: list[float]) -> None:
        for lin, W, rank, a in zip(self.linears, self.dense, self.rank, preserved):
            lin.weight.data.copy_(W * (rank >= prune_count(1.0 - a, W.shape[1])))

    def restore(self) -> None:
        for lin, W in zip(self.linears, self.dense):
            lin.weight.data.copy_(W)


class BlockUnits:
    """Structured units: each block's attention (query heads, in GQA rounds) and FFN (channels), zeroed in
    ``o_proj`` / ``down_proj`` in activation-ℓ2 order (`prune.structured.activation`)."""

    def __init__(self, ctx: AllocationContext) -> None:
        norms = module_values(ctx, ("input_norm",), lambda W, stats: stats["input_norm"], "activation norms")
        blocks = ctx.adapter.blocks(ctx.model)
        prefixes = [ctx.adapter.block_prefix(i) for i in range(len(blocks))]
        self.names = [n for names in ctx.block_linears for n in names]
        self.shapes = [block_shape(b) for b in blocks]
        self.o = [b.self_attn.o_proj for b in blocks]
        self.down = [b.mlp.down_proj for b in blocks]
        self.dense = [lin.weight.data.clone() for lin in self.o + self.down]
        self.head_cols = [
            [head_columns([h], s.head_dim) for h in head_order(norms[f"{p}.self_attn.o_proj"], s.head_dim, s.kv_heads)]
            for p, s in zip(prefixes, self.shapes)
        ]
        self.channel_order = [torch.argsort(norms[f"{p}.mlp.down_proj"], stable=True) for p in prefixes]
        self.weights = [w for s in self.shapes for w in unit_numel(s)]
        self.steps = [x for s in self.shapes for x in (s.step * s.head_params, 0)]  # heads by steps; channels: any

    def apply(self, preserved: list[float]) -> None:
        self.restore()
        for i, s in enumerate(self.shapes):
            heads, channels = block_counts(1 - preserved[2 * i], 1 - preserved[2 * i + 1], s, self.names[2 * i])
            for cols in self.head_cols[i][:heads]:
                self.o[i].weight.data[:, cols] = 0
            self.down[i].weight.data[:, self.channel_order[i][:channels]] = 0

    def restore(self) -> None:
        for lin, W in zip(self.o + self.down, self.dense):
            lin.weight.data.copy_(W)


UNITS = {"unstructured": MatrixUnits, "structured": BlockUnits}


@ALLOCATORS.register("rl-search")
class RLSearch:
    name = "rl-search"
    needs_calibration = True
    structured = True
    streams = False  # runs the whole model (perplexity): not streamed

    def __init__(
        self,
        episodes: int = 200,
        windows: int = 4,
        seqlen: int = 256,
        spread: float = 0.2,
        a_min: float | None = None,
        a_max: float | None = None,
        agent: str | None = None,
        seed: int = 0,
        **ppo: Any,
    ) -> None:
        if episodes < 1 or windows < 1 or seqlen < 2:
            raise SlimpackError(
                f"rl-search needs episodes ≥ 1, windows ≥ 1, seqlen ≥ 2; got {episodes}, {windows}, {seqlen}"
            )
        self.episodes, self.windows, self.seqlen, self.spread = int(episodes), int(windows), int(seqlen), float(spread)
        self.a_min, self.a_max, self.agent_dir, self.seed = a_min, a_max, agent, int(seed)
        self.settings = PPOSettings(**ppo)

    def _agent(self, names: list[str]) -> tuple[PPOAgent, str | None]:
        if self.agent_dir is None:
            return PPOAgent(len(names), self.settings, self.seed), None
        agent, meta = PPOAgent.load(Path(self.agent_dir), self.seed)
        if meta.get("units") != names:
            raise SlimpackError(
                f"agent {self.agent_dir!r} was trained on {meta.get('n_actions')} other units ({meta.get('kind')}); "
                "reuse an agent only on the same model and pruning kind"
            )
        return agent, str(self.agent_dir)

    def allocate(self, sparsity: float, ctx: AllocationContext) -> Allocation:
        if ctx.model is None or ctx.heldout is None or not ctx.batches:
            raise SlimpackError("rl-search needs the model, calibration batches and held-out text; run it via slimpack")
        device = ctx.device
        units = UNITS[ctx.kind](ctx)  # the walker moves blocks to the device and back
        a_min = self.a_min if self.a_min is not None else max(0.0, 1 - sparsity - self.spread)
        a_max = self.a_max if self.a_max is not None else min(1.0, 1 - sparsity + self.spread)
        if ctx.kind == "structured":
            a_min = max(a_min, max(s / w for s, w in zip(units.steps, units.weights)))
        check_bounds(sparsity, a_min, a_max, units.weights, units.steps)
        windows = torch.cat(list(ctx.heldout(self.windows)))[:, : self.seqlen]
        agent, reused = self._agent(units.names)
        history: list[dict[str, float]] = []
        best: tuple[float, list[float], int] = (-math.inf, [], -1)
        start = time.perf_counter()
        home = next(ctx.model.parameters()).device
        ctx.model.to(device)
        try:
            for episode in tqdm(range(self.episodes), desc="rl-search episodes", disable=not ctx.progress):
                t0 = time.perf_counter()
                action, logp = agent.act(sparsity)
                preserved = constrain(action, sparsity, units.weights, units.steps, a_min, a_max)
                units.apply(preserved)
                ppl = perplexity(ctx.model, windows, len(windows), device, progress=False).perplexity
                reward = 10.0 / ppl if math.isfinite(ppl) else 0.0
                losses = agent.record(sparsity, action, logp, reward)
                history.append({"episode": episode, "reward": reward, "ppl": ppl, "seconds": time.perf_counter() - t0,
                                **(losses or {})})  # fmt: skip
                if reward > best[0]:
                    best = (reward, preserved, episode)
        finally:
            units.restore()
            ctx.model.to(home)
        seconds = time.perf_counter() - start
        plan = {n: 1.0 - a for n, a in zip(units.names, best[1])}
        block_ratios = [weighted_mean({n: plan[n] for n in names}, ctx.numel) for names in ctx.block_linears]
        meta = {"units": units.names, "kind": ctx.kind, "trained_at": sparsity, "episodes": self.episodes}
        log.info("rl-search: %d episodes in %.0f s (%.0f/hour); best ppl %.3f at episode %d", self.episodes, seconds,
                 3600 * self.episodes / seconds, 10.0 / best[0], best[2])  # fmt: skip
        return Allocation(
            plan,
            block_ratios,
            options={
                "episodes": self.episodes,
                "seconds": seconds,
                "episodes_per_hour": 3600 * self.episodes / seconds,
                "best_episode": best[2],
                "best_heldout_ppl": 10.0 / best[0],
                "a_min": a_min,
                "a_max": a_max,
                "windows": self.windows,
                "seqlen": self.seqlen,
                "agent_from": reused,
                "ppo": asdict(self.settings),
                "history": history,
            },
            artifacts={
                "agent": lambda path: agent.save(path, meta),
                "search.png": lambda path: search_figure(history, path, f"rl-search at {sparsity:.2f} ({ctx.kind})"),
            },
        )
