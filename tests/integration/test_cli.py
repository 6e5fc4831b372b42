"""``slimpack`` end to end on a tiny model directory: outputs, manifest, inspect, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prune.io import sha256_file
from runtime_bench.cli import main

FAST = ["--nsamples", "4", "--seqlen", "32"]


def cli(*args: str) -> int:
    return main(["-q", *args])


def test_prune_writes_model_manifest_and_inspect_agrees(tiny_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "pruned"
    assert (
        cli("prune", "--model", str(tiny_dir), "--method", "sparsegpt", "--pattern", "2:4", "--out", str(out), *FAST)
        == 0
    )
    assert {"config.json", "model.safetensors", "tokenizer.json", "slimpack.json"} <= {p.name for p in out.iterdir()}
    manifest = json.loads((out / "slimpack.json").read_text())
    assert manifest["method"] == {"name": "sparsegpt", "options": {"blocksize": 128, "percdamp": 0.01}}
    assert manifest["pattern"] == "2:4" and manifest["target_sparsity"] == 0.5
    assert manifest["calibration"] == {
        "dataset": "offline",
        "nsamples": 4,
        "seqlen": 32,
        "seed": 0,
        "used": True,
        "tokens": 128,
    }
    assert manifest["sparsity"]["overall"] == 0.5 and len(manifest["sparsity"]["modules"]) == 14
    for name, digest in manifest["files"].items():
        assert sha256_file(out / name) == digest
    weights = load_file(out / "model.safetensors")
    q = weights["model.layers.1.self_attn.q_proj.weight"]
    assert ((q.reshape(q.shape[0], -1, 4) == 0).sum(-1) == 2).all()
    assert not list(tmp_path.glob(".pruned.tmp-*"))
    capsys.readouterr()
    assert cli("inspect", str(out), "--json", str(tmp_path / "inspect.json")) == 0
    shown = capsys.readouterr().out
    assert "model.layers.0.mlp.down_proj" in shown and "50.00 %" in shown
    report = json.loads((tmp_path / "inspect.json").read_text())
    assert report["files"]["verified"] and report["sparsity"]["overall"] == 0.5


def test_inspect_detects_a_tampered_file(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    assert cli("prune", "--model", str(tiny_dir), "--method", "magnitude", "--sparsity", "0.3", "--out", str(out)) == 0
    weights = load_file(out / "model.safetensors")
    weights["model.layers.0.mlp.up_proj.weight"] = torch.ones_like(weights["model.layers.0.mlp.up_proj.weight"])
    from safetensors.torch import save_file

    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    assert cli("inspect", str(out)) == 1


def test_eval_writes_json(tiny_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n" * 200)
    target = tmp_path / "e" / "eval.json"
    assert (
        cli("eval", str(tiny_dir), "--dataset", str(text), "--seqlen", "16", "--windows", "3", "--json", str(target))
        == 0
    )
    result = json.loads(target.read_text())
    assert result["windows"] == 3 and result["tokens"] == 3 * 15 and result["perplexity"] > 1


def test_existing_output_is_kept_without_overwrite(tiny_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli("prune", "--model", str(tiny_dir), "--method", "magnitude", "--out", str(out)) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert cli("prune", "--model", str(tiny_dir), "--method", "magnitude", "--out", str(out), "--overwrite") == 2
    assert "holds files slimpack did not write" in capsys.readouterr().err  # --overwrite: slimpack's outputs only
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    ours = tmp_path / "ours"
    assert cli("prune", "--model", str(tiny_dir), "--method", "magnitude", "--out", str(ours)) == 0
    (ours / "stale.txt").write_text("from before")
    assert cli("prune", "--model", str(tiny_dir), "--method", "magnitude", "--out", str(ours), "--overwrite") == 0
    assert (ours / "slimpack.json").is_file() and not (ours / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "ours"]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:  # noqa: ANN001
    from transformers import AutoConfig, AutoModelForCausalLM

    d = tmp_path_factory.mktemp("gpt2") / "model"
    cfg = AutoConfig.for_model("gpt2", n_layer=1, n_embd=32, n_head=2, vocab_size=len(tokenizer))
    AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.mark.parametrize(
    "args,message",
    [
        (["--sparsity", "1.0"], "sparsity 1.0 is outside [0, 1)"),
        (["--sparsity", "-0.2"], "sparsity -0.2 is outside [0, 1)"),
        (["--pattern", "4:4"], "bad N:M pattern '4:4'"),
        (["--pattern", "5:4"], "bad N:M pattern '5:4'"),
        (["--pattern", "2:7"], "M=7 does not divide its 64 input features"),
        (["--method", "obs"], "unknown method 'obs'; choose one of: magnitude, pgz, pruner-zero, sparsegpt, wanda"),
        (["--allocation", "magic"], "unknown allocator 'magic'"),
        (["--scope", "column"], "unknown scope 'column'"),
        (["-O", "blocksize"], "bad option 'blocksize'"),
        (["--method", "wanda", "-O", "blocksize=3"], "bad options"),
        (["--model", "/nonexistent/model"], "model path '/nonexistent/model' does not exist"),
        (["--dataset", "nope.txt"], "unknown dataset 'nope.txt'"),
        (["--nsamples", "0"], "nsamples 0 must be ≥ 1"),
        (["--model", "GPT2"], "unsupported architecture 'gpt2'"),
    ],
)
def test_bad_input_is_one_line_nonzero_and_writes_nothing(
    args: list[str],
    message: str,
    tiny_dir: Path,
    gpt2_dir: Path,
    tmp_path: Path,
    capsys,  # noqa: ANN001
) -> None:
    model = str(gpt2_dir) if "GPT2" in args else str(tiny_dir)
    args = [model if a == "GPT2" else a for a in args]
    base = ["prune", "--model", model, "--out", str(tmp_path / "out"), *FAST]
    before = sorted(p.name for p in tiny_dir.iterdir()), [sha256_file(p) for p in sorted(tiny_dir.iterdir())]
    assert cli(*base, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert list(tmp_path.iterdir()) == []
    assert (sorted(p.name for p in tiny_dir.iterdir()), [sha256_file(p) for p in sorted(tiny_dir.iterdir())]) == before


def test_report_renders_a_table_and_png(tiny_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    dense = tmp_path / "dense.json"
    assert cli("eval", str(tiny_dir), "--seqlen", "32", "--windows", "2", "--json", str(dense)) == 0
    for pattern in ("2:4", "unstructured"):
        out = tmp_path / pattern.replace(":", "of")
        assert (
            cli(
                "prune",
                "--model",
                str(tiny_dir),
                "--method",
                "wanda",
                "--pattern",
                pattern,
                "--out",
                str(out),
                *FAST,
                "--eval",
                "--windows",
                "2",
            )
            == 0
        )
    capsys.readouterr()
    png = tmp_path / "fig" / "ppl.png"
    assert cli("report", str(dense), str(tmp_path / "2of4"), str(tmp_path / "unstructured"), "--png", str(png)) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| method | allocation | pattern | measured sparsity | perplexity")
    assert [row.split("|")[1].strip() for row in table[2:]] == ["dense", "wanda", "wanda"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli("report", "--pivot", str(tmp_path / "2of4"), str(tmp_path / "unstructured")) == 0
    pivot = capsys.readouterr().out.splitlines()
    assert pivot[0] == "| method | allocation | 50 % | 2:4 |" and pivot[2].startswith("| wanda | uniform | ")
