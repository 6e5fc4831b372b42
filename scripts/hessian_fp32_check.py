"""SparseGPT through today's walker with the Hessian accumulated as before issue #30 (an fp32 running mean, one per
linear) — the check that the accumulator alone moves the documented rows (docs/results/README.md, "Changed by issue
#30"). Takes `slimpack prune` arguments after the output directory:

.venv/bin/python scripts/hessian_fp32_check.py OUT --model smollm2-135m --method sparsegpt --pattern 2:4 --eval
"""

from __future__ import annotations

import sys

import torch

import prune.stats as stats
import prune.walker as walker
from runtime_bench.cli import main


class RunningMeanFP32:
    """The accumulator before issue #30: ``H`` kept as an fp32 running mean of ``2 x xᵀ`` (rounding per batch)."""

    def __init__(self, in_features: int, device: torch.device | str = "cpu") -> None:
        self.H = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.count = 0

    def update(self, inp: torch.Tensor) -> None:
        x = inp.detach().reshape(-1, inp.shape[-1]).to(self.H.device, torch.float32)
        total = self.count + x.shape[0]
        self.H.mul_(self.count / total)
        self.H.addmm_(x.T, x, alpha=2.0 / total)
        self.count = total

    def parts(self) -> list[torch.Tensor]:
        raise RuntimeError("the fp32 running mean has no parts that ranks could add: one process only")

    def result(self) -> torch.Tensor:
        return self.H.clone()


def collect_alone(block, linears, needs, inputs, device, keep=walker.in_memory, shares=()):  # noqa: ANN001, ANN201
    """`prune.walker.collect` with one accumulator per linear, as before (no shared inputs)."""
    return ORIGINAL_COLLECT(block, linears, needs, inputs, device, keep, ())


ORIGINAL_COLLECT = walker.collect

if __name__ == "__main__":
    stats.ACCUMULATORS["hessian"] = RunningMeanFP32
    walker.collect = collect_alone
    out, *rest = sys.argv[1:]
    sys.exit(main(["-q", "prune", *rest, "--out", out]))
