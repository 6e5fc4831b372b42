"""Whole heads of a multi-head-attention model (one KV head per query head, as LLaMA-2-7B): a structured prune
removes each head's q, k and v rows and its o_proj columns, so each layer ends with its own KV cache width. The
smaller model reloads exactly, decodes with its cache as it computes without, streams bit for bit, and its ONNX
and onnx-int4 exports (in memory and streamed) carry a KV cache per layer and verify against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from prune.models import load_model
from runtime_bench.cli import main
from tests.conftest import save_tiny
from tests.integration.test_export_stream import ort_outputs
from tests.integration.test_stream import tensors

FAST = ["--nsamples", "4", "--seqlen", "32"]
HEADS, HEAD_DIM = 4, 16  # `save_tiny`'s: hidden 64


def cli(*args: str) -> int:
    return main(["-q", *args])


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> dict[str, Path]:  # noqa: ANN001
    """A sharded multi-head tiny Llama, structured-pruned (SlimGPT, log-increase 40 %) in memory and streamed."""
    root = tmp_path_factory.mktemp("mha")
    source = save_tiny(root / "dense", tokenizer, seed=5, distinct=True, max_shard_size="100KB", num_kv_heads=HEADS)
    base = ["prune", "--model", str(source), "--structured", "--sparsity", "0.4", *FAST, "--eval", "--windows", "3"]
    assert cli(*base, "--out", str(root / "memory")) == 0
    assert cli(*base, "--stream", "--shard-size", "0.1", "--out", str(root / "streamed")) == 0
    return {"dense": source, "memory": root / "memory", "streamed": root / "streamed"}


def test_heads_leave_with_their_kv_heads_and_every_layer_keeps_its_own_width(slim: dict[str, Path]) -> None:
    layers = json.loads((slim["memory"] / "config.json").read_text())["slimpack_structure"]["layers"]
    kv = [layer["num_key_value_heads"] for layer in layers]
    assert [layer["num_attention_heads"] for layer in layers] == kv  # multi-head attention stays multi-head
    assert max(kv) < HEADS and len(set(kv)) == 2  # log-increase: the deeper layer loses more heads
    loaded = load_model(slim["memory"])
    for layer, n in zip(loaded.model.model.layers, kv):
        attn = layer.self_attn
        assert attn.k_proj.out_features == attn.v_proj.out_features == attn.q_proj.out_features == n * HEAD_DIM
        assert attn.o_proj.in_features == n * HEAD_DIM and attn.num_key_value_groups == 1
    manifest = json.loads((slim["memory"] / "slimpack.json").read_text())
    after = manifest["structure"]["parameters"]["after"]
    assert sum(p.numel() for p in loaded.model.parameters()) == after["total"]
    assert manifest["structure"]["units"][0]["after"] == kv[0]


def test_the_streamed_prune_is_the_in_memory_one_bit_for_bit(slim: dict[str, Path]) -> None:
    a, b = tensors(slim["memory"]), tensors(slim["streamed"])
    assert sorted(a) == sorted(b) and all(torch.equal(a[n], b[n]) for n in a)
    ca, cb = (json.loads((slim[k] / "config.json").read_text()) for k in ("memory", "streamed"))
    assert ca["slimpack_structure"] == cb["slimpack_structure"]
    ma, mb = (json.loads((slim[k] / "slimpack.json").read_text()) for k in ("memory", "streamed"))
    assert ma["evaluation"]["perplexity"] == mb["evaluation"]["perplexity"]


@torch.no_grad()
def test_decoding_with_per_layer_caches_equals_the_full_forward(slim: dict[str, Path]) -> None:
    model = load_model(slim["memory"]).model
    ids = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    full = model(ids).logits
    prefill = model(ids[:, :8], use_cache=True)
    widths = [layer.keys.shape[1] for layer in prefill.past_key_values.layers]
    assert len(set(widths)) == 2
    past, steps = prefill.past_key_values, []
    for t in range(8, 12):
        out = model(ids[:, t : t + 1], past_key_values=past, use_cache=True)
        past = out.past_key_values
        steps.append(out.logits[:, -1])
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 8:], rtol=1e-5, atol=1e-5)


def verify(artifact: Path, reference: Path, report: Path, *extra: str) -> dict:
    assert cli("verify", str(artifact), "--reference", str(reference), "--seqlen", "32", "--windows", "2",
               "--prompt", "8", "--tokens", "4", "--json", str(report), *extra) == 0  # fmt: skip
    return json.loads(report.read_text())


def test_onnx_exports_carry_a_cache_per_layer_and_verify(slim: dict[str, Path], tmp_path: Path) -> None:
    source = slim["streamed"]
    kv = [la["num_key_value_heads"] for la in json.loads((source / "config.json").read_text())["slimpack_structure"]["layers"]]  # fmt: skip
    memory, streamed = tmp_path / "memory", tmp_path / "streamed"
    assert cli("export", str(source), "--format", "onnx", "--out", str(memory), "--no-graph-cache") == 0
    assert cli("export", str(source), "--format", "onnx", "--out", str(streamed), "--stream") == 0
    a, b = ort_outputs(memory, source), ort_outputs(streamed, source)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert [a[1 + 2 * i].shape[1] for i in range(len(kv))] == kv  # present.{i}.key: [batch, kv_i, past, d]
    for directory in (memory, streamed):
        assert json.loads((directory / "export.json").read_text())["kv_heads"] == kv
    assert verify(memory, source, tmp_path / "v.json")["passed"]


def test_the_quantized_smaller_model_exports_to_onnx_int4_and_verifies_streamed(
    slim: dict[str, Path], tokenizer: Any, tmp_path: Path
) -> None:
    """Heads cut by hand (3 and 2 KV heads left; the FFNs whole, as MatMulNBits needs widths in multiples of
    16), quantized 4-bit g16 and exported streamed to onnx-int4."""
    from prune.models import save_model
    from prune.structured.shapes import cut_heads, record_structure

    loaded = load_model(slim["dense"])
    blocks = loaded.model.model.layers
    for block, keep in zip(blocks, ([0, 1, 3], [1, 2])):
        cut_heads(block.self_attn, keep)
    record_structure(loaded.model.config, blocks)
    save_model(loaded.model, tokenizer, tmp_path / "cut")
    gptq, int4 = tmp_path / "gptq", tmp_path / "int4"
    assert cli("quantize", str(tmp_path / "cut"), "--group-size", "16", *FAST, "--stream", "--out", str(gptq)) == 0
    assert cli("export", str(gptq), "--format", "onnx-int4", "--out", str(int4), "--stream") == 0
    assert json.loads((int4 / "export.json").read_text())["kv_heads"] == [3, 2]
    report = verify(int4, gptq, tmp_path / "v.json", "--stream")
    assert report["passed"] and report["greedy"]["artifact"] == report["greedy"]["reference"]


def test_deepsparse_names_the_per_layer_shapes(slim: dict[str, Path], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "ds"
    assert cli("export", str(slim["memory"]), "--format", "deepsparse", "--out", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(per-layer shapes); export it with --format onnx" in err[0] and not out.exists()
