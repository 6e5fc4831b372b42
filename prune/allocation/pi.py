"""PI-based layerwise adjustment (`000_7642a398af6d1a29.txt`, appendix §1.3–1.4).

Our reading of the method (the appendix leaves the exact ranking rule implicit):
1. the importance ("PI") of block l is the perplexity *increase* on held-out calibration text when
   only block l is pruned at the target sparsity (every linear of it, per-output, with the allocation
   metric — Pruner-Zero's in the paper, Wanda's by default here since it needs no backward pass);
2. blocks are ranked by that increase; the more sensitive half gets ``target − δ``, the less sensitive
   half ``target + δ`` (with an odd count the median block keeps the target), so the mean is preserved;
3. δ = 4 % (§1.4: best of 1–10 %); ``keep_ends`` keeps the first and last blocks at the target and
   out of the ranking (§1.3 / Table 3; the paper's default is to adjust them too).
Held-out text: ``heldout`` windows drawn from the calibration split with a different seed.
Shapes: block inputs ``[b, seqlen, hidden]``; each linear's score ``[out, in]``.
"""

from __future__ import annotations

import math

import torch

from prune.allocation.base import ALLOCATORS, Allocation, AllocationContext, block_plan
from prune.errors import SlimpackError
from prune.eval import model_logits, window_nll
from prune.masks import Pattern, select_prune_mask
from prune.metrics import METRICS
from prune.stats import Stats
from prune.walker import capture_block_inputs, collect


def pi_ratios(sensitivity: list[float], sparsity: float, delta: float, keep_ends: bool = False) -> list[float]:
    """±δ by sensitivity rank: the most sensitive half gets target − δ, the least sensitive half target + δ."""
    n = len(sensitivity)
    ranked = [i for i in range(n) if not (keep_ends and i in (0, n - 1))]
    ranked.sort(key=lambda i: sensitivity[i], reverse=True)
    ratios = [sparsity] * n
    half = len(ranked) // 2
    for i in ranked[:half]:
        ratios[i] = sparsity - delta
    for i in ranked[len(ranked) - half :]:
        ratios[i] = sparsity + delta
    return ratios


@ALLOCATORS.register("pi")
class PI:
    name = "pi"
    needs_calibration = True
    structured = False  # per-matrix statistics: weight matrices only
    streams = False  # runs the whole model (perplexity): not streamed

    def __init__(self, delta: float = 0.04, keep_ends: bool = False, metric: str = "wanda", heldout: int = 4) -> None:
        if METRICS.get(metric).needs_gradients:
            raise SlimpackError(f"pi's metric must be forward-only (magnitude, wanda), not {metric!r}")
        self.delta, self.keep_ends, self.metric, self.heldout = delta, keep_ends, METRICS.get(metric), heldout

    @torch.no_grad()
    def sensitivity(self, sparsity: float, ctx: AllocationContext) -> tuple[float, list[float]]:
        """Dense held-out NLL-perplexity and, per block, the perplexity with only that block pruned."""
        if ctx.model is None or not ctx.batches or ctx.heldout is None:
            raise SlimpackError("pi needs calibration data; run it through `slimpack prune` or `slimpack plan`")
        model, adapter, device = ctx.model, ctx.adapter, ctx.device
        held = torch.cat(list(ctx.heldout(self.heldout)))
        dense = math.exp(_nll(model, held, device))
        inputs = capture_block_inputs(model, adapter, ctx.batches, device)
        pattern = Pattern(scope="row")
        ppl = []
        for block in adapter.blocks(model):
            linears = adapter.linears(block)
            accs, outs = collect(block, linears, self.metric.needs, inputs, device)
            saved = {n: lin.weight.data.clone() for n, lin in linears.items()}
            try:
                for n, lin in linears.items():
                    stats = Stats({k: a.result() for k, a in accs[n].accs.items()})
                    mask = select_prune_mask(self.metric.fn(lin.weight.data.float(), stats), sparsity, pattern)
                    lin.weight.data.masked_fill_(mask, 0.0)
                ppl.append(math.exp(_nll(model, held, device)))
            finally:
                for n, lin in linears.items():
                    lin.weight.data.copy_(saved[n])
            for inp, out in zip(inputs, outs):  # dense outputs feed the next block
                inp.hidden = out
        return dense, ppl

    def allocate(self, sparsity: float, ctx: AllocationContext) -> Allocation:
        dense, ppl = self.sensitivity(sparsity, ctx)
        increase = [p - dense for p in ppl]
        ratios = pi_ratios(increase, sparsity, self.delta, self.keep_ends)
        return Allocation(
            block_plan(ratios, ctx),
            ratios,
            importance=increase,
            importance_label="perplexity increase, block pruned alone",
            options={
                "delta": self.delta,
                "keep_ends": self.keep_ends,
                "metric": self.metric.name,
                "heldout": self.heldout,
                "dense_perplexity": dense,
                "block_perplexity": ppl,
            },
        )


def _nll(model: torch.nn.Module, windows: torch.Tensor, device: str) -> float:
    total, count = window_nll(model_logits(model, device), windows, 1, progress=False)
    return total / count
