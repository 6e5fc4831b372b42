"""Perplexity — the one definition used everywhere in slimpack.

Token-level perplexity over non-overlapping windows: the evaluation tokens are cut into consecutive
windows of ``seqlen`` tokens (``[n, seqlen]``, the trailing partial window dropped); each window is
scored independently (no context carried across windows, no BOS inserted), and

    ppl = exp( Σ_windows Σ_{t=1}^{seqlen-1} −log p(x_t | x_<t)  /  (n · (seqlen − 1)) )

i.e. exp of the mean next-token NLL over every predicted token. Papers differ (SparseGPT/Wanda use
2048-token windows on WikiText-2 test; some report 4096, some word-level perplexity); slimpack reports
this token-level number with its windows and seqlen, so that numbers are only compared at equal settings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from prune.ranks import Ranks


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    nll: float
    tokens: int
    windows: int
    seqlen: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LogitsFn = Callable[[torch.Tensor], torch.Tensor]  # input_ids [B, T] → logits [B, T, V]


def model_logits(model: nn.Module, device: str = "cpu") -> LogitsFn:
    """The logits function of a torch causal LM (no KV cache)."""

    def logits(ids: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids.to(device), use_cache=False).logits

    return logits


BatchNll = Callable[[list[torch.Tensor]], Iterable[tuple[float, int]]]  # batches → (summed NLL, tokens) of each


def nll_over_ranks(batches: list[torch.Tensor], nll_of: BatchNll, ranks: Ranks | None = None) -> tuple[float, int]:
    """Summed next-token NLL and token count over ``batches``. Under torchrun each rank runs its contiguous share
    (``nll_of`` on it); every batch's sum lands in its own slot of a float64 vector, zeros elsewhere, so the sum
    across ranks is exact, and the slots are added in batch order as one process adds them: the same total,
    bit for bit, on any number of ranks."""
    ranks = ranks if ranks is not None else Ranks()
    mine = ranks.share(len(batches))
    sums = torch.zeros(len(batches), dtype=torch.float64)
    counts = torch.zeros(len(batches), dtype=torch.int64)
    for i, (nll, n) in zip(mine, nll_of([batches[i] for i in mine])):
        sums[i], counts[i] = nll, n
    ranks.sum_([sums, counts], "the perplexity sums")
    total, count = 0.0, 0
    for nll, n in zip(sums.tolist(), counts.tolist()):
        total, count = total + nll, count + n
    return total, count


@torch.inference_mode()
def window_nll(
    logits_fn: LogitsFn, windows: torch.Tensor, batch_size: int = 1, progress: bool = True, ranks: Ranks | None = None
) -> tuple[float, int]:
    """Summed next-token NLL and the count of predicted tokens over ``windows: [n, seqlen]`` (`nll_over_ranks`)."""

    def nll_of(batches: list[torch.Tensor]) -> Iterable[tuple[float, int]]:
        for batch in tqdm(batches, desc="perplexity", disable=not progress):
            yield batch_nll(logits_fn(batch), batch)

    return nll_over_ranks(list(windows.split(batch_size)), nll_of, ranks)


def batch_nll(logits: torch.Tensor, batch: torch.Tensor) -> tuple[float, int]:
    """Summed next-token NLL of one batch of windows (``logits: [B, T, V]`` for ``batch: [B, T]``)."""
    logits = logits[:, :-1].float().cpu()
    target = batch[:, 1:]
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"
    ).item(), target.numel()


def result(total: float, count: int, windows: torch.Tensor, seconds: float) -> PerplexityResult:
    nll = total / count
    return PerplexityResult(math.exp(nll), nll, count, windows.shape[0], windows.shape[1], seconds)


def perplexity_of(
    logits_fn: LogitsFn, windows: torch.Tensor, batch_size: int = 1, progress: bool = True, ranks: Ranks | None = None
) -> PerplexityResult:
    """Perplexity of any ``logits_fn`` (a torch model, an exported artifact's engine) on ``windows``."""
    start = time.perf_counter()
    total, count = window_nll(logits_fn, windows, batch_size, progress, ranks)
    return result(total, count, windows, time.perf_counter() - start)


def perplexity(
    model: nn.Module, windows: torch.Tensor, batch_size: int = 1, device: str = "cpu", progress: bool = True,
    ranks: Ranks | None = None,
) -> PerplexityResult:  # fmt: skip
    """Perplexity of ``model`` on ``windows: [n, seqlen]`` (see module docstring for the definition)."""
    return perplexity_of(model_logits(model, device), windows, batch_size, progress, ranks)
