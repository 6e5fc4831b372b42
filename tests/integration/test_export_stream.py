"""Streamed export (`export.onnx_stream`): the graph traced on a weightless skeleton, the weights written from
the shards one tensor at a time — onnxruntime computes exactly what it computes on the in-memory export; and
a streamed verify (`prune.stream.StreamedForward` as the reference) agrees with the in-memory one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from export.onnx_kv import example_inputs, input_names
from runtime_bench.cli import main
from tests.conftest import save_tiny

FAST = ["--nsamples", "4", "--seqlen", "32"]


def cli(*args: str) -> int:
    return main(["-q", *args])


def ort_outputs(artifact: Path, config_dir: Path) -> list[np.ndarray]:
    import onnxruntime as ort
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(config_dir)
    torch.manual_seed(0)
    feeds = {n: t.numpy() for n, t in zip(input_names(config.num_hidden_layers), example_inputs(config))}
    return ort.InferenceSession(str(artifact / "model.onnx")).run(None, feeds)


def assert_same_artifact(memory: Path, streamed: Path, source: Path) -> None:
    a, b = ort_outputs(memory, source), ort_outputs(streamed, source)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    ma, mb = (json.loads((d / "export.json").read_text()) for d in (memory, streamed))
    assert ma["zeros"] == mb["zeros"] and mb["zeros"]["exported_zeros"] == mb["zeros"]["source_zeros"] > 0
    assert mb["streamed"] and (streamed / "model.onnx.data").stat().st_size == mb["external_bytes"]
    assert sorted(ma["weights"]) == sorted(mb["weights"]) and sorted(ma.get("int4", {})) == sorted(mb.get("int4", {}))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> dict[str, Path]:  # noqa: ANN001
    """A sharded tiny Llama and Qwen2 (biases), each pruned (wanda 50 %, streamed) and quantized (4-bit g32,
    act-order, streamed)."""
    root = tmp_path_factory.mktemp("export-stream")
    out: dict[str, Path] = {}
    for arch in ("llama", "qwen2"):
        source = save_tiny(root / arch, tokenizer, arch, seed=5, distinct=True, max_shard_size="100KB")
        out[f"{arch}-pruned"] = root / f"{arch}-pruned"
        out[f"{arch}-gptq"] = root / f"{arch}-gptq"
        assert cli("prune", "--model", str(source), "--method", "wanda", "--sparsity", "0.5", *FAST, "--stream",
                   "--shard-size", "0.1", "--out", str(out[f"{arch}-pruned"])) == 0  # fmt: skip
        assert cli("quantize", str(out[f"{arch}-pruned"]), "--group-size", "32", "--act-order", *FAST, "--stream",
                   "--out", str(out[f"{arch}-gptq"])) == 0  # fmt: skip
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("fmt", ["onnx", "onnx-int4"])
def test_a_streamed_export_computes_what_the_in_memory_export_computes(
    fmt: str, arch: str, models: dict[str, Path], tmp_path: Path
) -> None:
    source = models[f"{arch}-pruned" if fmt == "onnx" else f"{arch}-gptq"]
    memory, streamed = tmp_path / "memory", tmp_path / "streamed"
    assert cli("export", str(source), "--format", fmt, "--out", str(memory), "--no-graph-cache") == 0
    assert cli("export", str(source), "--format", fmt, "--out", str(streamed), "--stream") == 0
    assert_same_artifact(memory, streamed, source)


def test_a_structured_model_exports_streamed(tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    """Layers of differing shapes: the skeleton is cut to the recorded shapes before the trace."""
    source = save_tiny(tmp_path / "dense", tokenizer, "llama", seed=5, distinct=True, max_shard_size="100KB")
    slim = tmp_path / "slim"
    assert cli("prune", "--model", str(source), "--structured", "--sparsity", "0.4", *FAST, "--stream",
               "--shard-size", "0.1", "--out", str(slim)) == 0  # fmt: skip
    memory, streamed = tmp_path / "memory", tmp_path / "streamed"
    assert cli("export", str(slim), "--format", "onnx", "--out", str(memory), "--no-graph-cache") == 0
    assert cli("export", str(slim), "--format", "onnx", "--out", str(streamed), "--stream") == 0
    a, b = ort_outputs(memory, slim), ort_outputs(streamed, slim)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    ma, mb = (json.loads((d / "export.json").read_text()) for d in (memory, streamed))
    assert ma["weights"] == mb["weights"] and mb["streamed"]


def test_a_tied_bf16_model_exports_streamed(tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    """The embedding stored once and read by both Gather and lm_head; bf16 shards read as fp32."""
    from transformers import AutoModelForCausalLM

    from prune.models import tiny_llama

    model = tiny_llama(seed=2, vocab_size=len(tokenizer))
    model.config.tie_word_embeddings = True
    tied = AutoModelForCausalLM.from_config(model.config)
    tied.load_state_dict(model.state_dict(), strict=False)
    tied.tie_weights()
    source = tmp_path / "tied"
    tied.to(torch.bfloat16).save_pretrained(source, max_shard_size="100KB")
    tokenizer.save_pretrained(source)
    memory, streamed = tmp_path / "memory", tmp_path / "streamed"
    assert cli("export", str(source), "--format", "onnx", "--out", str(memory), "--no-graph-cache") == 0
    assert cli("export", str(source), "--format", "onnx", "--out", str(streamed), "--stream") == 0
    a, b = ort_outputs(memory, source), ort_outputs(streamed, source)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    manifest = json.loads((streamed / "export.json").read_text())
    assert manifest["tied_embedding_copies"] == 1 and "lm_head" not in manifest["weights"]
    options = ["--format", "deepsparse", "-O", "prefill_len=16", "-O", "cache_len=64", "-O", "prompt_len=8"]
    assert cli("export", str(source), *options, "--out", str(tmp_path / "ds-memory")) == 0
    assert cli("export", str(source), *options, "--out", str(tmp_path / "ds-streamed"), "--stream") == 0
    for name in ("prefill.onnx", "decode.onnx", "weights.bin"):  # the embedding stored once, read transposed
        assert (tmp_path / "ds-memory" / name).read_bytes() == (tmp_path / "ds-streamed" / name).read_bytes(), name


def test_a_streamed_verify_agrees_with_the_in_memory_one(models: dict[str, Path], tmp_path: Path) -> None:
    source = models["llama-gptq"]
    artifact = tmp_path / "int4"
    assert cli("export", str(source), "--format", "onnx-int4", "--out", str(artifact), "--stream") == 0
    reports = {}
    for name, extra in (("memory", []), ("streamed", ["--stream"])):
        path = tmp_path / f"{name}.json"
        assert cli("verify", str(artifact), "--reference", str(source), "--seqlen", "32", "--windows", "3",
                   "--prompt", "8", "--tokens", "4", "--json", str(path), *extra) == 0  # fmt: skip
        reports[name] = json.loads(path.read_text())
    memory, streamed = reports["memory"], reports["streamed"]
    assert memory["perplexity"]["artifact"]["perplexity"] == streamed["perplexity"]["artifact"]["perplexity"]
    assert memory["perplexity"]["reference"]["perplexity"] == pytest.approx(
        streamed["perplexity"]["reference"]["perplexity"], rel=1e-6
    )
    assert memory["greedy"]["reference"] == streamed["greedy"]["reference"] and streamed["passed"]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_a_streamed_deepsparse_export_is_the_in_memory_one_byte_for_byte(
    arch: str, models: dict[str, Path], tmp_path: Path
) -> None:
    """The same three graphs and the same weights.bin, weights read from the shards one tensor at a time."""
    source = models[f"{arch}-pruned"]
    memory, streamed = tmp_path / "memory", tmp_path / "streamed"
    options = ["-O", "prefill_len=16", "-O", "cache_len=64", "-O", "prompt_len=8"]
    assert cli("export", str(source), "--format", "deepsparse", *options, "--out", str(memory)) == 0
    assert cli("export", str(source), "--format", "deepsparse", *options, "--out", str(streamed), "--stream") == 0
    files = sorted(p.name for p in memory.iterdir() if p.name != "export.json")
    assert files == sorted(p.name for p in streamed.iterdir() if p.name != "export.json")
    for name in files:
        assert (memory / name).read_bytes() == (streamed / name).read_bytes(), name
    ma, mb = (json.loads((d / "export.json").read_text()) for d in (memory, streamed))
    assert ma["zeros"] == mb["zeros"] and mb["zeros"]["exported_zeros"] == mb["zeros"]["source_zeros"] > 0
    assert mb["streamed"]


@pytest.mark.parametrize("fmt", ["semi24", "gptq"])
def test_formats_that_load_the_model_whole_refuse_stream(
    fmt: str, models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    assert cli("export", str(models["llama-pruned"]), "--format", fmt, "--out", str(out), "--stream") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and f"--format {fmt} loads the model whole; --stream writes deepsparse, hf, onnx, onnx-int4, sparse" in err[0]
    )
    assert not out.exists() and not list(tmp_path.glob(".out*"))
