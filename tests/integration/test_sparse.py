"""``export --format sparse`` and ``--format hf``: a checkpoint that shrinks, read by every command, run by the
``sparse`` engine (slimpack's kernels), and refused in one line when damaged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from runtime_bench.cli import main
from tests.conftest import save_tiny
from tests.integration.test_reliability import digest, one_line

FAST = ["--nsamples", "2", "--seqlen", "16"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:  # noqa: ANN001
    root = tmp_path_factory.mktemp("sparse")
    save_tiny(root / "dense", tokenizer, distinct=True)
    assert main(["-q", "prune", "--model", str(root / "dense"), "--method", "magnitude", "--sparsity", "0.6",
                 "--out", str(root / "pruned"), *FAST]) == 0  # fmt: skip
    assert main(["-q", "prune", "--model", str(root / "dense"), "--method", "magnitude", "--pattern", "2:4",
                 "--out", str(root / "pruned24"), *FAST]) == 0  # fmt: skip
    assert main(["-q", "quantize", str(root / "pruned"), "--bits", "4", "--group-size", "32", "--act-order",
                 "--out", str(root / "gptq"), *FAST]) == 0  # fmt: skip
    for values in ("fp32", "bf16", "fp16", "int8"):
        assert main(["-q", "export", str(root / "pruned"), "--format", "sparse", "--values", values,
                     "--out", str(root / f"sparse-{values}")]) == 0  # fmt: skip
    assert main(["-q", "export", str(root / "pruned24"), "--format", "sparse", "--out", str(root / "sparse-24")]) == 0
    assert main(["-q", "export", str(root / "gptq"), "--format", "sparse", "--values", "gptq",
                 "--out", str(root / "sparse-gptq")]) == 0  # fmt: skip
    return root


def weights(directory: Path) -> dict[str, torch.Tensor]:
    from prune.models import load_model

    return {k: v.clone() for k, v in load_model(directory).model.state_dict().items()}


def test_export_records_layouts_and_shrinks(models: Path) -> None:
    record = json.loads((models / "sparse-fp32" / "export.json").read_text())
    assert record["format"] == "sparse" and record["engine"] == "sparse" and record["layouts"] == {"bitmask/fp32": 14}
    assert record["zeros"]["exported_zeros"] == record["zeros"]["source_zeros"] > 0
    config = json.loads((models / "sparse-fp32" / "config.json").read_text())
    assert config["slimpack_sparse"] == {"version": 1, "values": "fp32"} and "quantization_config" not in config
    sizes = {v: json.loads((models / f"sparse-{v}" / "export.json").read_text())["linear_bytes"]["packed"]
             for v in ("fp32", "bf16", "int8")}  # fmt: skip
    dense = record["linear_bytes"]["dense"]
    assert sizes["fp32"] < 0.6 * dense and sizes["bf16"] < 0.6 * sizes["fp32"] and sizes["int8"] < sizes["bf16"]
    with safe_open(str(models / "sparse-fp32" / "model.safetensors"), framework="pt") as fh:
        names = set(fh.keys())
        layout = json.loads(fh.metadata()["model.layers.0.mlp.up_proj.weight"])
    assert {"model.layers.0.mlp.up_proj.weight.mask", "model.layers.0.mlp.up_proj.weight.values",
            "model.layers.0.mlp.up_proj.weight.row_offsets"} <= names and "model.layers.0.mlp.up_proj.weight" not in names  # fmt: skip
    assert layout == {"shape": [128, 64], "dtype": "F32", "layout": "bitmask", "values": "fp32", "group_size": 0}
    assert json.loads((models / "sparse-24" / "export.json").read_text())["layouts"] == {"2:4/fp32": 14}


def test_hf_export_round_trip_bit_for_bit(models: Path, tmp_path: Path) -> None:
    assert main(["-q", "export", str(models / "sparse-fp32"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    source, back = load_file(str(models / "pruned" / "model.safetensors")), load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert source.keys() == back.keys() and all(torch.equal(source[k], back[k]) for k in source)
    assert "slimpack_sparse" not in json.loads((tmp_path / "hf" / "config.json").read_text())
    assert main(["-q", "export", str(models / "sparse-24"), "--format", "hf", "--out", str(tmp_path / "hf24")]) == 0
    source = load_file(str(models / "pruned24" / "model.safetensors"))
    back = load_file(str(tmp_path / "hf24" / "model.safetensors"))
    assert all(torch.equal(source[k], back[k]) for k in source)


def test_every_value_kind_reads_back_as_its_source(models: Path) -> None:
    pruned, gptq = weights(models / "pruned"), weights(models / "gptq")
    assert all(torch.equal(pruned[k], v) for k, v in weights(models / "sparse-fp32").items())
    rounded = {k: v.bfloat16().float() if k.endswith("_proj.weight") else v for k, v in pruned.items()}  # linears only
    assert all(torch.equal(rounded[k], v) for k, v in weights(models / "sparse-bf16").items())
    assert all(torch.equal(gptq[k], v) for k, v in weights(models / "sparse-gptq").items())  # act-order: perm
    int8 = weights(models / "sparse-int8")
    linear = "model.layers.1.self_attn.o_proj.weight"
    assert torch.equal(int8[linear] == 0, pruned[linear] == 0) and not torch.equal(int8[linear], pruned[linear])


def test_commands_read_a_sparse_checkpoint(models: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    art = str(models / "sparse-bf16")
    assert main(["-q", "prune", "--model", art, "--method", "wanda", "--sparsity", "0.7", "--out", str(tmp_path / "p"), *FAST]) == 0
    assert main(["-q", "quantize", art, "--bits", "4", "--group-size", "32", "--out", str(tmp_path / "q"), *FAST]) == 0
    assert main(["-q", "export", art, "--format", "onnx", "--out", str(tmp_path / "onnx"), "--no-graph-cache"]) == 0
    record = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert record["zeros"]["exported_zeros"] >= record["zeros"]["source_zeros"] > 0
    assert main(["-q", "eval", art, "--seqlen", "16", "--windows", "2", "--json", str(tmp_path / "e.json")]) == 0
    assert main(["-q", "eval", str(models / "pruned"), "--seqlen", "16", "--windows", "2", "--json", str(tmp_path / "p.json")]) == 0
    ppl = [json.loads((tmp_path / f).read_text())["perplexity"] for f in ("e.json", "p.json")]
    assert ppl[0] == pytest.approx(ppl[1], rel=1e-2) and ppl[0] != ppl[1]  # bf16 values: close, not equal
    assert not any(json.loads((tmp_path / "p" / "config.json").read_text()).get(k) for k in ("slimpack_sparse",))


def damage(source: Path, target: Path, edit) -> Path:  # noqa: ANN001
    shutil.copytree(source, target)
    file = target / "model.safetensors"
    with safe_open(str(file), framework="pt") as fh:
        metadata = fh.metadata()
    tensors = load_file(str(file))
    edit(tensors)
    save_file(tensors, str(file), metadata=metadata)
    return target


@pytest.mark.parametrize(
    ("case", "message"),
    [("values", "holds"), ("mask", "do not count"), ("dtype", "its bitmask/fp32 layout needs F32"), ("truncated", "truncated")],
)
def test_damaged_sparse_checkpoint_is_one_line(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture, case: str, message: str
) -> None:
    up = "model.layers.0.mlp.up_proj.weight"
    edits = {
        "values": lambda t: t.update({f"{up}.values": t[f"{up}.values"][:-1]}),
        "mask": lambda t: t.update({f"{up}.mask": t[f"{up}.mask"] ^ 1}),
        "dtype": lambda t: t.update({f"{up}.values": t[f"{up}.values"].half()}),
        "truncated": lambda t: None,
    }
    art = damage(models / "sparse-fp32", tmp_path / "art", edits[case])
    if case == "truncated":
        data = (art / "model.safetensors").read_bytes()
        (art / "model.safetensors").write_bytes(data[: len(data) - 1000])
    before = digest(art)
    capsys.readouterr()
    assert main(["-q", "eval", str(art), "--seqlen", "16", "--windows", "2"]) == 2
    line = one_line(capsys)
    assert message in line, line
    assert digest(art) == before


def test_values_option_refusals(models: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert main(["-q", "export", str(models / "pruned"), "--format", "onnx", "--values", "bf16", "--out", str(tmp_path / "a")]) == 2
    assert "--values bf16 applies to --format sparse" in one_line(capsys)
    assert main(["-q", "export", str(models / "pruned"), "--format", "sparse", "--values", "gptq", "--out", str(tmp_path / "b")]) == 2
    assert "--values gptq stores a GPTQ checkpoint's codes" in one_line(capsys)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --- the sparse engine (slimpack's kernels) -----------------------------------------------------------------


def kernels_or_skip() -> None:
    from runtime_bench.engines.sparse_engine import SparseEngine

    reason = SparseEngine.unavailable()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("values", ["fp32", "bf16", "int8", "24", "gptq"])
def test_engine_greedy_tokens_equal_torch(models: Path, values: str) -> None:
    kernels_or_skip()
    from export.artifact import Artifact
    from prune.models import load_model
    from runtime_bench.engines import open_artifact
    from runtime_bench.engines.torch_engine import TorchEngine

    art = Artifact.open(models / f"sparse-{values}")
    engine = open_artifact(art, threads=2)
    reference = TorchEngine.from_model(load_model(art.path).model)  # the same weights, decoded, in torch
    ids = np.random.RandomState(0).randint(0, 200, (1, 12)).astype(np.int64)
    assert np.array_equal(engine.generate(ids, 8), reference.generate(ids, 8))
    np.testing.assert_allclose(engine.logits(ids), reference.logits(ids), rtol=1e-4, atol=1e-4)
    batch = np.random.RandomState(1).randint(0, 200, (3, 12)).astype(np.int64)
    np.testing.assert_allclose(engine.logits(batch), reference.logits(batch), rtol=1e-4, atol=1e-4)


def test_verify_in_the_sparse_engine(models: Path, tmp_path: Path) -> None:
    kernels_or_skip()
    out = tmp_path / "verify.json"
    assert main(["-q", "verify", str(models / "sparse-fp32"), "--reference", str(models / "pruned"), "--seqlen", "16",
                 "--windows", "2", "--prompt", "8", "--tokens", "4", "--json", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["passed"] and report["engine"] == "sparse" and report["greedy"]["match"] == 1.0
    assert abs(report["perplexity"]["relative_diff"]) <= 1e-5  # fp32 values: the kernels compute the same model


def test_zero_shot_through_the_sparse_engine_equals_torch_to_the_last_example(models: Path) -> None:
    kernels_or_skip()
    from runtime_bench.zeroshot import TaskData, ZeroShotConfig, zeroshot

    tasks = ["boolq", "arc_easy"]
    engine = zeroshot(ZeroShotConfig(str(models / "sparse-fp32"), tasks, TaskData("local"), limit=8))
    torch_run = zeroshot(ZeroShotConfig(str(models / "pruned"), tasks, TaskData("local"), limit=8))
    assert engine.runtime == "sparse" and torch_run.runtime == "torch"
    for name in tasks:
        assert engine.tasks[name].examples == torch_run.tasks[name].examples, name


def test_prefill_tiles_run_in_inference_mode_on_every_thread() -> None:
    """The engines run in ``torch.inference_mode``; the prefill GEMM writes its tiles from torch's worker threads."""
    kernels_or_skip()
    from export.sparse_format import encode
    from runtime_bench.kernels import PackedWeight, linear

    w = torch.randn(1000, 64)
    w[torch.rand(1000, 64) < 0.5] = 0
    packed = PackedWeight.from_stored(*encode(w, "fp32"))
    x = torch.randn(40, 64)
    torch.set_num_threads(2)
    with torch.inference_mode():
        y = linear(x, packed)
    torch.testing.assert_close(y, x @ w.T, rtol=1e-5, atol=1e-5)
