"""The external check: AutoGPTQ 0.7.1 (its own environment, scripts/setup-autogptq.sh) loads our GPTQ
checkpoint on this CPU; its dequantized weights and logits match ours.

AutoGPTQ has no CPU kernel here: it runs its torch fallback QuantLinear (``qlinear_cuda_old``, or ``qlinear_cuda``
with act-order), which dequantizes in the model's dtype and multiplies. In fp32 that is our computation: weights
and logits equal ours exactly (measured 0.0 on the tiny model, symmetric, act-order and asymmetric v1). In fp16
the weights differ by fp16 rounding (3.1e-5) and the logits by ≤ 0.08 % of max |logit|; in bf16 by bf16 rounding
(≤ 5.5e-4) and ≤ 0.75 %, argmax agreement ≥ 97.9 %. It reads only the v1 format: a ``gptq_v2`` checkpoint would
load one quantization step off (measured: logits 49 % off, argmax 48 %), so the check refuses it.
Skipped when the environment is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prune.errors import SlimpackError
from quant.external.autogptq_check import AUTOGPTQ, compare
from runtime_bench.cli import main

pytestmark = [
    pytest.mark.autogptq,
    pytest.mark.skipif(not AUTOGPTQ.available(), reason="no .venv-autogptq (bash scripts/setup-autogptq.sh)"),
]

FAST = ["--nsamples", "4", "--seqlen", "32"]


@pytest.fixture(scope="module")
def pruned(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("autogptq") / "pruned"
    assert main(["-q", "prune", "--model", str(tiny_dir), "--method", "wanda", "--out", str(out), *FAST]) == 0
    return out


def quantize(pruned: Path, out: Path, extra: list[str]) -> Path:
    assert main(["-q", "quantize", str(pruned), "--group-size", "32", *extra, "--out", str(out), *FAST]) == 0
    return out


@pytest.mark.parametrize(
    "extra,dtype",
    [(["--act-order"], "float32"), (["--asym"], "float32"), ([], "float16"), (["--act-order"], "bfloat16")],
)
def test_autogptq_loads_our_checkpoint_and_matches_our_logits(
    pruned: Path, tmp_path: Path, extra: list[str], dtype: str
) -> None:
    out = quantize(pruned, tmp_path / "gptq", extra)
    ids = (torch.arange(48) * 7 % 250).unsqueeze(0)
    result = compare(out, ids, dtype)
    assert result.weights_compared == 14
    assert result.kernels == ("qlinear_cuda.QuantLinear" if "--act-order" in extra else "qlinear_cuda_old.QuantLinear")
    if dtype == "float32":
        assert result.max_abs_weight_diff == 0.0, result
        assert result.max_abs_logit_diff <= 1e-5 * result.max_abs_logit, result  # measured 0.0
        assert result.argmax_agreement == 1.0, result
    else:
        assert 0 < result.max_abs_weight_diff <= 2e-3, result  # fp16 / bf16 rounding of |w| ≲ 0.3
        assert result.max_abs_logit_diff <= 0.02 * result.max_abs_logit, result
        assert result.argmax_agreement >= 0.95, result


def test_autogptq_check_refuses_gptq_v2(pruned: Path, tmp_path: Path) -> None:
    out = quantize(pruned, tmp_path / "gptq", ["--asym", "--checkpoint-format", "gptq_v2"])
    with pytest.raises(SlimpackError, match="only checkpoint_format 'gptq'"):
        compare(out, torch.zeros(1, 4, dtype=torch.long))
