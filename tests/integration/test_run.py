"""``slimpack run`` on a tiny model: every stage, the report, resuming after a failure, skipping when cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prune.cli import main

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
        import export.api

        real = export.api.export_model

        def fail_on_gptq(config):  # noqa: ANN001, ANN202
            if config.format == "gptq":
                raise KeyboardInterrupt  # the run is killed during this export
            return real(config)

        mp.setattr(export.api, "export_model", fail_on_gptq)
        with pytest.raises(KeyboardInterrupt):
            main(["-q", "run", str(recipe)])
        assert (out / "export" / "onnx" / "export.json").is_file() and not (out / "export" / "gptq").exists()
        mp.setattr(export.api, "export_model", real)
        mp.setattr("prune.api.prune", lambda *a, **k: (_ for _ in ()).throw(AssertionError("pruned again")))
        assert main(["-q", "run", str(recipe)]) == 0
    return out


def test_report_has_every_stage(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
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
    report = (run_dir / "report.md").read_text()
    for heading in ("## Perplexity per stage", "## Perplexity per exported format", "## Speed", "setup-deepsparse.sh"):
        assert heading in report
    assert (run_dir / "sparsity.png").is_file() and (run_dir / "speed.png").is_file()
    assert (run_dir / "prune" / "slimpack.json").is_file() and (run_dir / "verify" / "onnx.json").is_file()


def test_rerun_skips_and_changed_stage_reruns(run_dir: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached step ran again")

    monkeypatch.setenv("SLIMPACK_DEEPSPARSE_PYTHON", str(run_dir / "no-such-python"))
    for target in ("prune.api.prune", "quant.api.quantize", "export.api.export_model", "export.verify.verify"):
        monkeypatch.setattr(target, forbidden)
    recipe = write_recipe(run_dir.parent / "recipe.yaml", tiny_dir, run_dir)
    assert main(["-q", "run", str(recipe)]) == 0
    steps = json.loads((run_dir / "summary.json").read_text())["steps"]
    assert {s["status"] for s in steps} <= {"cached", "skipped"}
    recipe = write_recipe(run_dir.parent / "recipe2.yaml", tiny_dir, run_dir, rounds=2)  # only the bench changed
    assert main(["-q", "run", str(recipe)]) == 0
    steps = {s["stage"]: s["status"] for s in json.loads((run_dir / "summary.json").read_text())["steps"]}
    assert steps["bench"] == "ran" and steps["prune"] == "cached" and steps["export"] == "cached"
