"""Recipes of ``slimpack run`` fail validation — one line, exit 2, nothing written — before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime_bench.cli import main
from runtime_bench.pipeline.recipe import DEFAULT_RECIPE, load_recipe

BAD = {
    "unknown stage": ("stages: {prunee: {sparsity: 0.5}}", "unknown stage 'stages.prunee'"),
    "unknown parameter": ("stages: {prune: {sparsty: 0.5}}", "unknown parameter 'stages.prune.sparsty'"),
    "unknown top-level key": ("modle: x", "unknown parameter 'modle'"),
    "wrong type": ("stages: {prune: {sparsity: half}}", "stages.prune.sparsity must be float"),
    "bool is not an int": ("stages: {bench: {rounds: true}, export: {a: {format: onnx}}}", "must be int"),
    "malformed YAML": ("stages: [prune", "is not valid YAML at line"),
    "not a mapping": ("- prune\n- export", "must be a mapping"),
    "unknown method": ("stages: {prune: {method: wandaa}}", "unknown method 'wandaa'"),
    "unknown allocation": ("stages: {prune: {allocation: owll}}", "unknown allocator 'owll'"),
    "unknown format": ("stages: {export: {x: {format: onnxx}}}", "unknown export format 'onnxx'"),
    "missing format": ("stages: {export: {x: {source: dense}}}", "missing 1 required positional argument: 'format'"),
    "absent source stage": (
        "stages: {export: {x: {format: onnx-int4, source: quantize}}}",
        "reads the quantize stage, which the recipe lacks",
    ),
    "bad source": ("stages: {export: {x: {format: onnx, source: pruned}}}", "source 'pruned' must be one of"),
    "bad bits": ("stages: {quantize: {bits: 9}}", "bits 9 is outside 2–8"),
    "sparsity out of range": ("stages: {prune: {sparsity: 1.5}}", "stages.prune: sparsity 1.5 is outside [0, 1)"),
    "empty bench": ("stages: {bench: {threads: [1]}}", "stages.bench has nothing to time"),
    "null format": ("stages: {export: {x: {format: null, source: dense}}}", "stages.export.x.format must name"),
    "structured to deepsparse": (
        "stages: {prune: {structured: {}}, export: {x: {format: deepsparse, source: prune}}}",
        "stages.export.x: the deepsparse format takes one layer shape",
    ),
    "joint without prune": ("stages: {quantize: {joint: true}}", "stages.quantize.joint prunes as stages.prune says"),
    "joint with act-order": (
        "stages: {prune: {}, quantize: {joint: true, act_order: true}}",
        "stages.quantize: --act-order cannot be combined with --joint-with",
    ),
    "structured with a pattern": (
        "stages: {prune: {structured: true, pattern: '2:4'}}",
        "stages.prune: --pattern, --scope and --true-sequential are for unstructured pruning",
    ),
    "allocation without units": (
        "stages: {prune: {structured: {}, allocation: dlp}}",
        "allocation 'dlp' works on weight matrices only",
    ),
    "false is no number": ("eval: {windows: false}", "eval.windows must be int"),
    "unknown zero-shot task": (
        "stages: {zeroshot: {tasks: [boolq, arc_eazy], task_data: local}}",
        "stages.zeroshot: unknown task 'arc_eazy'",
    ),
    "zero-shot limit 0": (
        "stages: {zeroshot: {tasks: [rte], task_data: local, limit: 0}}",
        "stages.zeroshot: --limit 0",
    ),
    "zero-shot of an artifact not exported": (
        "stages: {export: {a: {format: onnx, source: dense}}, zeroshot: {tasks: [rte], task_data: local, artifacts: [b]}}",
        "stages.zeroshot: artifacts ['b'] are not exported by stages.export (a)",
    ),
    "zero-shot data missing": (
        "stages: {zeroshot: {tasks: [rte], task_data: /no/such/dir}}",
        "stages.zeroshot: --task-data '/no/such/dir' is not a directory",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_recipe_is_one_line_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = BAD[case]
    recipe = tmp_path / "recipe.yaml"
    out = tmp_path / "run"
    recipe.write_text(f"out: {out}\n{text}\n" if not text.startswith("-") else text)
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("slimpack: error: recipe ") and expected in err, err
    assert not out.exists()


def test_missing_recipe_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_default_recipe_is_valid_and_complete() -> None:
    recipe = load_recipe()
    st = recipe.stages
    assert recipe.model == "smollm2-135m" and recipe.data.dataset == "offline" and DEFAULT_RECIPE.is_file()
    assert st.prune and st.quantize and st.verify and st.bench and st.zeroshot
    assert st.zeroshot.task_data == "local" and set(st.zeroshot.artifacts or []) <= set(st.export)
    assert {e.format for e in st.export.values()} == {"onnx", "onnx-int4", "deepsparse", "sparse"}
    assert {e.source for e in st.export.values()} == {"dense", "prune", "quantize"}
    assert main(["run", "--check"]) == 0
