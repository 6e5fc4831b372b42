"""SlimGPT on the real model (marked slow): SmolLM2's 9 query / 3 KV heads, the smaller model reloads exactly,
and its perplexity is what the pruned model in memory measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_slimgpt_prunes_smollm2_heads_in_gqa_rounds_and_reloads(tmp_path: Path) -> None:
    from prune.models import load_model
    from runtime_bench.cli import main

    out = tmp_path / "slim"
    args = ["--structured", "--sparsity", "0.2", "--nsamples", "8", "--seqlen", "128", "--windows", "8", "--eval"]
    assert main(["-q", "prune", "--model", "smollm2-135m", *args, "--out", str(out)]) == 0
    manifest = json.loads((out / "slimpack.json").read_text())
    heads = [u["after"] for u in manifest["structure"]["units"] if u["name"].endswith("self_attn")]
    assert set(heads) <= {3, 6, 9} and min(heads) < 9  # whole GQA rounds only
    assert (
        manifest["structure"]["parameters"]["after"]["total"]
        < 0.9 * manifest["structure"]["parameters"]["before"]["total"]
    )
    assert 5 < manifest["evaluation"]["perplexity"] < 40
    # the reloaded model gives the in-process pruned model's perplexity exactly (same windows)
    assert main(["-q", "eval", str(out), "--seqlen", "128", "--windows", "8", "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["perplexity"] == manifest["evaluation"]["perplexity"]
    assert load_model(out).model.model.layers[0].self_attn.q_proj.out_features == 64 * heads[0]
