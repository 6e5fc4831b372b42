"""Allocation through the CLI: plan files, allocators inside prune, mixed N:M, bad plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from runtime_bench.cli import main

FAST = ["--nsamples", "4", "--seqlen", "32"]


def cli(*args: str) -> int:
    return main(["-q", *args])


def test_plan_then_prune_with_it(tiny_dir: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    assert (
        cli(
            "plan",
            "--model",
            str(tiny_dir),
            "--allocation",
            "dlp",
            "--sparsity",
            "0.6",
            "-A",
            "alpha=0.1",
            "--out",
            str(plan),
            *FAST,
        )
        == 0
    )
    data = json.loads(plan.read_text())
    assert data["options"]["alpha"] == 0.1 and len(data["block_ratios"]) == 2
    assert plan.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    out = tmp_path / "pruned"
    assert (
        cli("prune", "--model", str(tiny_dir), "--method", "wanda", "--plan", str(plan), "--out", str(out), *FAST) == 0
    )
    manifest = json.loads((out / "slimpack.json").read_text())
    assert manifest["allocation"]["plan"] == data["plan"]
    for name, module in manifest["sparsity"]["modules"].items():
        assert module["sparsity"] == pytest.approx(data["plan"][name], abs=1 / 64)


@pytest.mark.parametrize("allocation", ["owl", "dlp"])
def test_a_plan_is_the_same_from_either_store(
    allocation: str, tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`slimpack plan` reads the model through its store: streamed (one block at a time from the shards) and
    resident give the same plan in fp32; an allocator that runs the whole model refuses the streamed store."""
    plans = {}
    for store in ("--stream", "--resident"):
        out = tmp_path / f"{store[2:]}.json"
        assert cli("plan", "--model", str(tiny_dir), "--allocation", allocation, "--sparsity", "0.5", store,
                   "--out", str(out), *FAST) == 0  # fmt: skip
        plans[store] = json.loads(out.read_text())
    assert plans["--stream"]["plan"] == plans["--resident"]["plan"]
    assert plans["--stream"]["importance"] == plans["--resident"]["importance"]
    refused = tmp_path / "rl.json"
    assert cli("plan", "--model", str(tiny_dir), "--allocation", "rl-search", "--stream", "--out", str(refused)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "runs the whole model" in err and not refused.exists()


@pytest.mark.parametrize("allocation", ["owl", "dlp", "log-increase"])
def test_prune_with_an_allocator_hits_the_target(allocation: str, tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / allocation
    assert (
        cli(
            "prune",
            "--model",
            str(tiny_dir),
            "--method",
            "sparsegpt",
            "--sparsity",
            "0.7",
            "--allocation",
            allocation,
            "--out",
            str(out),
            *FAST,
        )
        == 0
    )
    manifest = json.loads((out / "slimpack.json").read_text())
    assert manifest["sparsity"]["overall"] == pytest.approx(0.7, abs=0.005)
    ratios = manifest["allocation"]["block_ratios"]
    assert sum(ratios) / len(ratios) == pytest.approx(0.7) and len(set(ratios)) > 1


def test_mixed_nm_keeps_the_uniform_parameter_count(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "mixed"
    assert (
        cli(
            "prune",
            "--model",
            str(tiny_dir),
            "--method",
            "wanda",
            "--pattern",
            "4:8",
            "--allocation",
            "dlp",
            "-A",
            "alpha=0.2",
            "--out",
            str(out),
            *FAST,
        )
        == 0
    )
    manifest = json.loads((out / "slimpack.json").read_text())
    ns = manifest["allocation"]["options"]["block_n"]
    assert sum(ns) == 4 * len(ns)
    weights = load_file(out / "model.safetensors")
    for block, n in enumerate(ns):
        w = weights[f"model.layers.{block}.mlp.up_proj.weight"]
        assert ((w.reshape(w.shape[0], -1, 8) == 0).sum(-1) == n).all()
    assert manifest["sparsity"]["overall"] == 0.5


def _write(path: Path, plan: dict) -> Path:
    path.write_text(json.dumps(plan))
    return path


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda p: {**p, "model.layers.9.mlp.up_proj": 0.5}, "lacks, e.g. 'model.layers.9.mlp.up_proj'"),
        (lambda p: {k: v for k, v in p.items() if "down_proj" not in k}, "misses 2 prunable module(s)"),
        (
            lambda p: {**p, "model.layers.0.mlp.up_proj": 1.0},
            "ratio 1.0 for 'model.layers.0.mlp.up_proj' is outside [0, 1)",
        ),
    ],
)
def test_bad_plan_files_are_one_line_errors(edit, message: str, tiny_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    good = {
        f"model.layers.{i}.{n}": 0.5
        for i in range(2)
        for n in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        )
    }
    plan = _write(tmp_path / "plan.json", edit(good))
    out = tmp_path / "out"
    assert cli("prune", "--model", str(tiny_dir), "--method", "magnitude", "--plan", str(plan), "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--allocation", "dlp", "-A", "alpha=0.4", "--sparsity", "0.7"], "is outside [0, 1)"),
        (["--allocation", "owl", "-A", "lam=0.5", "--sparsity", "0.6"], "is outside [0, 1)"),
        (["--allocation", "log-increase", "-A", "first=0.1", "--sparsity", "0.9"], "is outside [0, 1)"),
        (["--allocation", "dlp", "-A", "beta=1"], "bad options"),
        (["--plan", "missing.json"], "plan file 'missing.json' does not exist"),
    ],
)
def test_allocations_pushing_ratios_out_of_range_fail_cleanly(
    args: list[str],
    message: str,
    tiny_dir: Path,
    tmp_path: Path,
    capsys,  # noqa: ANN001
) -> None:
    out = tmp_path / "out"
    assert cli("prune", "--model", str(tiny_dir), "--method", "wanda", "--out", str(out), *FAST, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not out.exists()
