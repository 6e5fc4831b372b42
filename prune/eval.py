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
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


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


@torch.inference_mode()
def window_nll(
    model: nn.Module, windows: torch.Tensor, batch_size: int = 1, device: str = "cpu", progress: bool = True
) -> tuple[float, int]:
    """Summed next-token NLL and the count of predicted tokens over ``windows: [n, seqlen]``."""
    total, count = 0.0, 0
    for batch in tqdm(windows.split(batch_size), desc="perplexity", disable=not progress):
        ids = batch.to(device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        target = ids[:, 1:]
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum").item()
        count += target.numel()
    return total, count


def perplexity(
    model: nn.Module, windows: torch.Tensor, batch_size: int = 1, device: str = "cpu", progress: bool = True
) -> PerplexityResult:
    """Perplexity of ``model`` on ``windows: [n, seqlen]`` (see module docstring for the definition)."""
    start = time.perf_counter()
    total, count = window_nll(model, windows, batch_size, device, progress)
    nll = total / count
    return PerplexityResult(
        perplexity=math.exp(nll),
        nll=nll,
        tokens=count,
        windows=windows.shape[0],
        seqlen=windows.shape[1],
        seconds=time.perf_counter() - start,
    )
