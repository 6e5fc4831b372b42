"""The external check: GPTQModel 7.6.0 (its own environment, scripts/setup-gptqmodel.sh) loads our GPTQ
checkpoint on this CPU; its dequantized weights equal ours exactly and its logits match ours.

Tolerance: GPTQModel's CPU int4 kernel (TorchFusedLinear, chosen for fp32) runs its matmul with bf16
activations, so the logits differ by rounding: max |Δ| ≤ 2 % of max |logit| (measured 0.2–0.6 % on the tiny
model; docs/results/quant.md has SmolLM2). Its fp32 fused path ignores zero points (its CPU transform sets
them to 0), so asymmetric checkpoints are checked through its bf16 kernel (TorchAtenLinear), whose
dequantized weights equal ours up to bf16 rounding. Skipped when the environment is missing; .ci/run builds it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quant.external.gptqmodel_check import GPTQMODEL, compare
from runtime_bench.cli import main

pytestmark = [
    pytest.mark.gptqmodel,
    pytest.mark.skipif(not GPTQMODEL.available(), reason="no .venv-gptqmodel (bash scripts/setup-gptqmodel.sh)"),
]


@pytest.mark.parametrize(
    "extra,dtype",
    [(["--act-order"], "float32"), ([], "bfloat16"), (["--asym", "--checkpoint-format", "gptq_v2"], "bfloat16")],
)
def test_gptqmodel_loads_our_checkpoint_and_matches_our_logits(
    tiny_dir: Path, tmp_path: Path, extra: list[str], dtype: str
) -> None:
    pruned, out = tmp_path / "pruned", tmp_path / "gptq"
    fast = ["--nsamples", "4", "--seqlen", "32"]
    assert main(["-q", "prune", "--model", str(tiny_dir), "--method", "wanda", "--out", str(pruned), *fast]) == 0
    assert main(["-q", "quantize", str(pruned), "--group-size", "32", *extra, "--out", str(out), *fast]) == 0
    ids = (torch.arange(48) * 7 % 250).unsqueeze(0)
    result = compare(out, ids, dtype)
    assert result.weights_compared == 14
    if dtype == "float32":
        assert result.max_abs_weight_diff == 0.0, result
    else:
        assert 0 < result.max_abs_weight_diff <= 2e-3, result  # bf16 rounding of |w| ≲ 0.3
    assert result.max_abs_logit_diff <= 0.02 * result.max_abs_logit, result
    assert result.argmax_agreement >= 0.95, result
