"""The README's main job, ``slimpack run`` with the default recipe on SmolLM2-135M (marked slow, ≈15 min on
2 cores): every stage runs, every exported format passes verify in its own runtime, the onnxruntime and sparse-engine
artifacts give their torch models' zero-shot answers example by example, the report is complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime_bench.cli import main

pytestmark = pytest.mark.slow


def test_default_recipe_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "main"
    assert main(["-q", "run", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and set(summary["models"]) == {"dense", "prune", "quantize"}
    assert 0.49 < summary["models"]["prune"]["sparsity"] < 0.51
    assert summary["models"]["dense"]["perplexity"] < summary["models"]["prune"]["perplexity"] < 100
    verified = {n: v for n, v in summary["verify"].items() if "skipped" not in v}
    assert {"dense-onnx", "onnx", "onnx-int4", "sparse", "sparse-int4"} <= set(verified)
    assert all(v["passed"] and v["relative_diff"] < 0.01 for v in verified.values())
    timed = summary["bench"]["measurements"][0]["results"]
    assert {"dense-onnx", "onnx", "onnx-int4", "sparse", "sparse-int4"} <= set(timed)
    zeroshot = summary["zeroshot"]  # the papers' seven local tasks, 10 examples each
    lossless = {"onnx", "onnx-int4", "sparse", "sparse-int4"}
    assert set(zeroshot["model"]) == {"dense", "prune", "quantize"} and set(zeroshot["artifact"]) == lossless
    for name in sorted(lossless):  # the lossless exports answer as their torch models, example by example
        equal, compared = zeroshot["artifact"][name]["equal_examples"]
        assert compared == 110 and equal == compared, (name, equal)
    report = (out / "report.md").read_text()
    assert "## Speed" in report and "## Perplexity per exported format" in report and "## Zero-shot accuracy" in report
