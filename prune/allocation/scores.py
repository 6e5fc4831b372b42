"""Per-block reductions of a metric's scores on the dense model — the statistics OWL and DLP need — and `spread`,
their shared mapping from one statistic per block to the blocks' ratios.

One calibration pass through the shared walker with a collector that compresses nothing: for each
block, the scores ``A = metric(W, stats)`` of all its linears (``[out, in]`` each) are concatenated
and reduced to one number per reducer (median, outlier ratio, …) as soon as the block is done, so a
7B model's scores are never held at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from prune.allocation.base import AllocationContext
from prune.errors import SlimpackError
from prune.masks import Pattern
from prune.metrics import METRICS
from prune.stats import Stats
from prune.walker import walk

Reducer = Callable[[torch.Tensor], float]


class ScoreCollector:
    """A `LayerMethod` that records metric scores instead of pruning."""

    modifies_weights = False
    solver = False
    needs_gradients = False
    default_scope = "row"

    def __init__(self, metric: str, reducers: dict[str, Reducer]) -> None:
        self.metric = METRICS.get(metric)
        if self.metric.needs_gradients:
            raise SlimpackError(f"allocation statistics need a forward-only metric, not {metric!r}")
        self.name = f"{metric} statistics"
        self.needs = self.metric.needs
        self.reducers = reducers
        self._current: list[torch.Tensor] = []
        self.results: dict[str, list[float]] = {k: [] for k in reducers}

    def compress(self, layer: nn.Linear, stats: Stats, ratio: float, pattern: Pattern) -> None:
        self._current.append(self.metric.fn(layer.weight.data.float(), stats).flatten().cpu())

    def block_done(self, index: int) -> None:
        scores = torch.cat(self._current)
        for key, reduce in self.reducers.items():
            self.results[key].append(float(reduce(scores)))
        self._current = []

    def options(self) -> dict[str, Any]:
        return {}


class ModuleRecorder:
    """A `LayerMethod` that compresses nothing and returns ``fn(W, stats)`` for each linear; the walker keeps
    the returned values by module name (`WalkResult.outputs`)."""

    modifies_weights = False
    solver = False
    needs_gradients = False
    default_scope = "row"

    def __init__(self, name: str, needs: tuple[str, ...], fn: Callable[[torch.Tensor, Stats], Any]) -> None:
        self.name, self.needs, self.fn = name, needs, fn

    def compress(self, layer: nn.Linear, stats: Stats, ratio: float, pattern: Pattern) -> Any:
        return self.fn(layer.weight.data.float(), stats)

    def options(self) -> dict[str, Any]:
        return {}


def _check_calibrated(ctx: AllocationContext) -> None:
    if ctx.model is None or ctx.adapter is None or not ctx.batches:
        raise SlimpackError(
            "this allocation needs calibration data; run it through `slimpack prune` or `slimpack plan`"
        )


def module_values(
    ctx: AllocationContext, needs: tuple[str, ...], fn: Callable[[torch.Tensor, Stats], Any], name: str = "statistics"
) -> dict[str, Any]:
    """One calibration pass of the walker over the dense model (weights untouched): ``{linear: fn(W, stats)}``."""
    _check_calibrated(ctx)
    recorder = ModuleRecorder(name, needs, fn)
    plan = {n: 0.0 for n in ctx.adapter.named_linears(ctx.model)}
    result = walk(ctx.model, ctx.adapter, recorder, plan, Pattern(), ctx.batches, device=ctx.device,  # type: ignore[arg-type]
                  progress=ctx.progress, store=ctx.blocks() if ctx.blocks else None, ranks=ctx.ranks)  # fmt: skip
    return result.outputs


def block_reductions(
    ctx: AllocationContext, reducers: dict[str, Reducer], metric: str = "wanda"
) -> dict[str, list[float]]:
    """Run the collector over the dense model (weights untouched); ``{reducer: [value per block]}``."""
    _check_calibrated(ctx)
    collector = ScoreCollector(metric, reducers)
    plan = {n: 0.0 for names in ctx.block_linears for n in names}
    walk(
        ctx.model,
        ctx.adapter,
        collector,
        plan,
        Pattern(),
        ctx.batches,  # type: ignore[arg-type]
        device=ctx.device,
        progress=ctx.progress,
        block_done=collector.block_done,
        store=ctx.blocks() if ctx.blocks else None,
        ranks=ctx.ranks,
    )
    return collector.results


def median(scores: torch.Tensor) -> float:
    """The lower median (torch's definition), exact for any size."""
    return scores.median().item()


def spread(importance: Sequence[float], sparsity: float, width: float) -> list[float]:
    """The shared OWL / DLP mapping: min-max scale importance to ``d ∈ [0, 2·width]``, then
    ``R_l = sparsity + mean(d) − d_l`` — more important blocks get lower sparsity, the mean is the target,
    and every ratio lies in ``[sparsity − width, sparsity + width]``."""
    x = torch.tensor(importance, dtype=torch.float64)
    span = (x.max() - x.min()).item()
    d = (x - x.min()) / span * 2 * width if span > 0 else torch.zeros_like(x)
    return (sparsity + d.mean() - d).tolist()
