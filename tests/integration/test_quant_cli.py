"""``slimpack quantize`` end to end on a tiny model: the GPTQ checkpoint, its loader, zeros, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prune.architecture import adapter_for
from prune.io import sha256_file
from prune.models import load_model
from quant.checkpoint import load_gptq
from runtime_bench.cli import main

FAST = ["--nsamples", "4", "--seqlen", "32"]
EVAL = ["--eval", "--windows", "3"]


def cli(*args: str) -> int:
    return main(["-q", *args])


@pytest.fixture(scope="module")
def pruned_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("q") / "pruned"
    assert (
        cli("prune", "--model", str(tiny_dir), "--method", "sparsegpt", "--sparsity", "0.6", "--out", str(out), *FAST)
        == 0
    )
    return out


def linears(directory: Path) -> dict[str, torch.Tensor]:
    model = load_model(directory).model
    return {n: lin.weight.data for n, lin in adapter_for(model).named_linears(model).items()}


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--act-order"],
        ["--asym", "--bits", "3", "--group-size", "-1"],
        ["--static-groups", "--act-order", "--bits", "8"],
    ],
)
def test_sequential_gptq_checkpoint_keeps_every_pruned_zero(
    pruned_dir: Path, tmp_path: Path, extra: list[str], capsys
) -> None:  # noqa: ANN001
    out = tmp_path / "gptq"
    assert cli("quantize", str(pruned_dir), "--group-size", "32", *extra, "--out", str(out), *FAST, *EVAL) == 0
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "gptq" and config["checkpoint_format"] == "gptq"
    assert config["desc_act"] == ("--act-order" in extra) and config["sym"] == ("--asym" not in extra)
    tensors = load_file(out / "model.safetensors")
    assert "model.layers.0.mlp.down_proj.qweight" in tensors and "model.layers.0.mlp.down_proj.weight" not in tensors
    assert tensors["model.layers.0.mlp.down_proj.qweight"].dtype == torch.int32
    manifest = json.loads((out / "slimpack.json").read_text())
    assert (
        manifest["quantization"]["pruned_zeros"]["fraction_kept"] == 1.0
        and manifest["quantization"]["pruned_zeros"]["pruned"] > 0
    )
    assert manifest["quantization"]["source"]["method"]["name"] == "sparsegpt"
    source, quantized = linears(pruned_dir), linears(out)
    for name, W in source.items():  # every layer: a pruned weight is exactly zero in the checkpoint
        assert (quantized[name][W == 0] == 0).all(), name
        assert not torch.equal(quantized[name], W)
    loaded = load_gptq(out)
    for name, qw in loaded.quantized.items():
        assert torch.equal(qw.dequantize(), quantized[name])
    capsys.readouterr()
    assert cli("eval", str(out), "--windows", "3", "--seqlen", "32", "--json", str(tmp_path / "e.json")) == 0
    again = json.loads((tmp_path / "e.json").read_text())["perplexity"]
    assert again == pytest.approx(manifest["evaluation"]["perplexity"], rel=1e-5)


@pytest.mark.parametrize("pruner,pattern", [("sparsegpt", "2:4"), ("wanda", "unstructured"), ("pgz", "4:8")])
def test_joint_mode_prunes_and_quantizes_in_one_walk(tiny_dir: Path, tmp_path: Path, pruner: str, pattern: str) -> None:
    out = tmp_path / "joint"
    args = ["--joint-with", pruner, "--pattern", pattern, "--sparsity", "0.5", "--group-size", "32"]
    if pruner == "pgz":
        args += ["-J", "iterations=4"]
    assert cli("quantize", str(tiny_dir), *args, "--out", str(out), *FAST) == 0
    manifest = json.loads((out / "slimpack.json").read_text())
    assert manifest["method"]["options"]["joint_with"]["name"] == pruner
    assert manifest["quantization"]["pruned_zeros"]["fraction_kept"] == 1.0
    assert manifest["sparsity"]["overall"] >= 0.5
    for name, W in linears(out).items():
        if pattern != "unstructured":
            m = int(pattern.split(":")[1])
            assert ((W.reshape(W.shape[0], -1, m) == 0).sum(-1) >= m // 2).all(), name


def test_rtn_is_data_free_and_worse_than_gptq(tiny_dir: Path, tmp_path: Path) -> None:
    ppl = {}
    for method in ("rtn", "gptq"):
        out = tmp_path / method
        assert (
            cli(
                "quantize",
                str(tiny_dir),
                "--method",
                method,
                "--bits",
                "3",
                "--group-size",
                "32",
                "--out",
                str(out),
                *FAST,
                *EVAL,
            )
            == 0
        )
        manifest = json.loads((out / "slimpack.json").read_text())
        assert manifest["calibration"]["used"] == (method == "gptq")
        ppl[method] = manifest["evaluation"]["perplexity"]
    assert ppl["gptq"] < ppl["rtn"]


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--group-size", "48"],
            "group size 48 does not divide the 64 input features of model.layers.0.self_attn.q_proj",
        ),
        (["--bits", "9"], "bits 9 is outside 2–8"),
        (["--bits", "5"], "stores (2, 3, 4, 8) bits, not 5"),
        (["--checkpoint-format", "awq"], "unknown checkpoint format 'awq'"),
        (["--method", "rtn", "--act-order"], "RTN has none"),
        (["--method", "rtn", "--joint-with", "wanda"], "with RTN prune first"),
        (["--joint-with", "nonsense"], "unknown method 'nonsense'"),
        (["--method", "awq"], "unknown quantization method 'awq'"),
        (["--joint-with", "wanda", "--sparsity", "1.5"], "sparsity 1.5 is outside [0, 1)"),
        (["--true-sequential"], "--true-sequential applies to joint pruning only; add --joint-with METHOD"),
        (["--joint-with", "sparsegpt", "--act-order"], "--act-order cannot be combined with --joint-with"),
    ],
)
def test_bad_input_is_one_line_nonzero_and_writes_nothing(
    args: list[str],
    message: str,
    tiny_dir: Path,
    tmp_path: Path,
    capsys,  # noqa: ANN001
) -> None:
    before = [sha256_file(p) for p in sorted(tiny_dir.iterdir())]
    assert cli("quantize", str(tiny_dir), "--group-size", "32", *args, "--out", str(tmp_path / "out"), *FAST) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert list(tmp_path.iterdir()) == []
    assert [sha256_file(p) for p in sorted(tiny_dir.iterdir())] == before


def test_dequantized_format_simulates_any_bit_width(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "q5"
    args = ["--bits", "5", "--group-size", "-1", "--checkpoint-format", "dequantized"]
    assert cli("quantize", str(tiny_dir), *args, "--out", str(out), *FAST) == 0
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    manifest = json.loads((out / "slimpack.json").read_text())
    assert manifest["quantization"]["bits"] == 5 and manifest["quantization"]["checkpoint_format"] == "dequantized"
    for W in linears(out).values():  # rows of 64 or 128 weights hold at most 2^5 levels each
        assert max(len(torch.unique(row)) for row in W) <= 32


def test_quantizing_a_quantized_checkpoint_is_refused(tiny_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    first = tmp_path / "q"
    assert cli("quantize", str(tiny_dir), "--method", "rtn", "--group-size", "32", "--out", str(first)) == 0
    capsys.readouterr()
    assert cli("quantize", str(first), "--group-size", "32", "--out", str(tmp_path / "again"), *FAST) == 2
    err = capsys.readouterr().err.strip()
    assert "is already quantized (gptq)" in err and err.count("\n") == 0
    assert not (tmp_path / "again").exists()
