"""``slimpack run`` on a tiny model: every stage, the report, resuming after a failure, skipping when cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime_bench.cli import main
from runtime_bench.pipeline.summary import RunSummary

RECIPE = """
model: {model}
out: {out}
data: {{dataset: offline, nsamples: 4, seqlen: 64, seed: 0}}
eval: {{dataset: offline, seqlen: 64, windows: 2}}
stages:
  prune: {{method: wanda, sparsity: 0.5, allocation: dlp}}
  quantize: {{bits: 4, group_size: 32}}
  export:
    dense-onnx: {{format: onnx, source: dense}}
    onnx: {{format: onnx, source: prune}}
    gptq: {{format: gptq, source: quantize}}
    deepsparse: {{format: deepsparse, source: prune}}
  verify: {{windows: 2, prompt: 8, tokens: 4}}
  zeroshot: {{tasks: [boolq, arc_easy], task_data: local, limit: 4, artifacts: [onnx, gptq, deepsparse]}}
  bench: {{threads: [1], prompt: 8, tokens: 4, rounds: {rounds}, batch: 2, torch: true}}
"""


def write_recipe(path: Path, model: Path, out: Path, rounds: int = 1) -> Path:
    path.write_text(RECIPE.format(model=model, out=out, rounds=rounds))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """A first run interrupted by a failing export (as if killed), then resumed."""
    root = tmp_path_factory.mktemp("run")
    out = root / "run"
    recipe = write_recipe(root / "recipe.yaml", tiny_dir, out)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLIMPACK_DEEPSPARSE_PYTHON", str(root / "no-such-python"))
        import runtime_bench.pipeline.stages as stages

        real = stages.export_model  # where the run's export step calls it

        def fail_on_gptq(config):  # noqa: ANN001, ANN202
            if config.format == "gptq":
                raise KeyboardInterrupt  # the run is killed during this export
            return real(config)

        mp.setattr(stages, "export_model", fail_on_gptq)
        with pytest.raises(KeyboardInterrupt):
            main(["-q", "run", str(recipe)])
        assert (out / "export" / "onnx" / "export.json").is_file() and not (out / "export" / "gptq").exists()
        mp.setattr(stages, "export_model", real)
        mp.setattr(stages, "prune", lambda *a, **k: (_ for _ in ()).throw(AssertionError("pruned again")))
        assert main(["-q", "run", str(recipe)]) == 0
    return out


def test_report_has_every_stage(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert RunSummary.read(run_dir / "summary.json").to_dict() == summary  # read typed, nothing lost
    assert summary["passed"] and set(summary["models"]) == {"dense", "prune", "quantize"}
    status = {(s["stage"], s["step"]): s["status"] for s in summary["steps"]}
    assert status[("export", "onnx")] == "cached" and status[("export", "gptq")] == "ran"
    assert status[("verify", "deepsparse")] == "skipped" and status[("bench", "deepsparse")] == "skipped"
    assert summary["verify"]["onnx"]["passed"] and summary["verify"]["gptq"]["relative_diff"] < 1e-3
    (m,) = summary["bench"]["measurements"]
    assert set(m["results"]) == {"dense-onnx", "onnx", "gptq", "torch-dense", "torch-prune"}
    assert (
        summary["bench"]["bases"]["onnx"] == "dense-onnx" and summary["bench"]["bases"]["torch-prune"] == "torch-dense"
    )
    zeroshot = summary["zeroshot"]
    assert zeroshot["tasks"] == ["boolq", "arc_easy"] and set(zeroshot["model"]) == {"dense", "prune", "quantize"}
    assert (
        set(zeroshot["artifact"]) == {"onnx", "gptq", "deepsparse"} and "skipped" in zeroshot["artifact"]["deepsparse"]
    )
    onnx = zeroshot["artifact"]["onnx"]
    assert onnx["runtime"] == "onnxruntime" and onnx["source"] == "prune"
    assert onnx["equal_examples"] == [12, 12] and onnx["mean"] == zeroshot["model"]["prune"]["mean"]  # acc, acc_norm
    assert zeroshot["model"]["dense"]["runtime"] == "torch" and 0 <= zeroshot["model"]["dense"]["mean"] <= 1
    report = (run_dir / "report.md").read_text()
    for heading in ("## Perplexity per stage", "## Perplexity per exported format", "## Speed", "setup-deepsparse.sh",
                    "## Zero-shot accuracy", "| zero-shot mean |", "| 12 / 12 |"):  # fmt: skip
        assert heading in report
    assert (run_dir / "sparsity.png").is_file() and (run_dir / "speed.png").is_file()
    assert (run_dir / "prune" / "slimpack.json").is_file() and (run_dir / "verify" / "onnx.json").is_file()


def test_rerun_skips_and_changed_stage_reruns(run_dir: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached step ran again")

    monkeypatch.setenv("SLIMPACK_DEEPSPARSE_PYTHON", str(run_dir / "no-such-python"))
    for target in (  # where the run's steps call them
        "runtime_bench.pipeline.stages.prune",
        "runtime_bench.pipeline.stages.quantize",
        "runtime_bench.pipeline.stages.export_model",
        "runtime_bench.pipeline.run.verify",
        "runtime_bench.pipeline.run.zeroshot",
    ):
        monkeypatch.setattr(target, forbidden)
    recipe = write_recipe(run_dir.parent / "recipe.yaml", tiny_dir, run_dir)
    assert main(["-q", "run", str(recipe)]) == 0
    steps = json.loads((run_dir / "summary.json").read_text())["steps"]
    assert {s["status"] for s in steps} <= {"cached", "skipped"}
    recipe = write_recipe(run_dir.parent / "recipe2.yaml", tiny_dir, run_dir, rounds=2)  # only the bench changed
    assert main(["-q", "run", str(recipe)]) == 0
    records = json.loads((run_dir / "summary.json").read_text())["steps"]
    steps = {s["stage"]: s["status"] for s in records}
    assert steps["bench"] == "ran" and steps["prune"] == "cached" and steps["export"] == "cached"
    assert {s["status"] for s in records if s["stage"] == "zeroshot"} == {"cached", "skipped"}  # deepsparse: skipped


CAPABILITIES = """
model: {model}
out: {out}
data: {{dataset: offline, nsamples: 4, seqlen: 64, seed: 0}}
eval: {{dataset: offline, seqlen: 64, windows: 2}}
stages:
  prune: {prune}
  quantize: {quantize}
  export:
    onnx: {{format: onnx, source: prune}}
    int4: {{format: {int4}, source: quantize}}
  verify: {{windows: 2, prompt: 8, tokens: 4}}
"""


def run_recipe(root: Path, model: Path, prune: str, quantize: str, int4: str = "onnx-int4") -> dict:
    out = root / "run"
    recipe = root / "recipe.yaml"
    recipe.write_text(CAPABILITIES.format(model=model, out=out, prune=prune, quantize=quantize, int4=int4))
    assert main(["-q", "run", str(recipe)]) == 0
    return json.loads((out / "summary.json").read_text())


def test_structured_prune_then_gptq_with_act_order(tmp_path: Path, tiny_dir: Path) -> None:
    """A recipe reaches structured pruning (SlimGPT, ridge reconstruction, uniform units) and GPTQ with act-order
    and static groups; the smaller model is quantized (per-row groups: the cut FFN has 98 channels), exported to
    fp32 ONNX and as the GPTQ checkpoint, and both verify."""
    summary = run_recipe(
        tmp_path, tiny_dir,
        "{method: slimgpt, sparsity: 0.3, allocation: uniform, structured: {reconstruct: true, keep_heads: 2}}",
        "{bits: 4, group_size: -1, act_order: true, static_groups: true}",
        int4="gptq",
    )  # fmt: skip
    manifest = json.loads((tmp_path / "run" / "prune" / "slimpack.json").read_text())
    assert manifest["pattern"] == "structured" and manifest["structure"]["reconstruct"]["enabled"]
    assert (
        manifest["structure"]["parameters"]["after"]["total"] < manifest["structure"]["parameters"]["before"]["total"]
    )
    config = json.loads((tmp_path / "run" / "quantize" / "config.json").read_text())
    assert config["quantization_config"]["desc_act"] and config["quantization_config"]["static_groups"]
    assert [layer["num_attention_heads"] for layer in config["slimpack_structure"]["layers"]] == [2, 2]
    assert summary["passed"] and {summary["verify"][n]["passed"] for n in ("onnx", "int4")} == {True}


def test_joint_gptq_with_a_plan_file_and_true_sequential(tmp_path: Path, tiny_dir: Path) -> None:
    """A recipe reaches a plan file, true-sequential calibration and joint pruning + GPTQ: the quantize stage
    prunes from the dense model in its own walk with the prune stage's spec, and keeps every pruned zero."""
    plan = tmp_path / "plan.json"
    assert main(["-q", "plan", "--model", str(tiny_dir), "--allocation", "owl", "--sparsity", "0.5",
                 "--nsamples", "4", "--seqlen", "64", "--out", str(plan)]) == 0  # fmt: skip
    summary = run_recipe(
        tmp_path, tiny_dir,
        f"{{method: sparsegpt, plan: {plan}, true_sequential: true, options: {{blocksize: 32}}}}",
        "{bits: 4, group_size: 32, joint: true}",
    )  # fmt: skip
    run = tmp_path / "run"
    pruned = json.loads((run / "prune" / "slimpack.json").read_text())
    joint = json.loads((run / "quantize" / "slimpack.json").read_text())
    assert pruned["true_sequential"] and pruned["allocation"]["plan_file"] == str(plan)
    assert pruned["allocation"]["plan"] == json.loads(plan.read_text())["plan"]
    assert joint["source_model"] == str(tiny_dir) and joint["method"]["options"]["joint_with"]["name"] == "sparsegpt"
    assert joint["true_sequential"] and joint["allocation"]["plan"] == pruned["allocation"]["plan"]
    assert joint["quantization"]["pruned_zeros"]["fraction_kept"] == 1.0
    assert joint["sparsity"]["overall"] >= 0.5 and summary["passed"]


def test_joint_needs_a_prune_stage(tmp_path: Path, tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {tiny_dir}\nout: {tmp_path / 'run'}\nstages: {{quantize: {{joint: true}}}}\n")
    assert main(["-q", "run", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "stages.quantize.joint prunes as stages.prune says" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
