"""`quant.external.autogptq_check.misreadings`: what AutoGPTQ 0.7.1 (transformers 4.38) would misread in a
checkpoint — found on SmolLM2's — is named before AutoGPTQ runs (no AutoGPTQ environment needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from quant.external.autogptq_check import misreadings


def checkpoint(tmp_path: Path, tied: bool, theta: float, legacy: bool, fmt: str = "gptq") -> Path:
    tensors = {"model.embed_tokens.weight": torch.zeros(8, 4)}
    if not tied:
        tensors["lm_head.weight"] = torch.zeros(8, 4)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    config = {"model_type": "llama", "tie_word_embeddings": tied, "rope_parameters": {"rope_theta": theta, "rope_type": "default"},
              "quantization_config": {"quant_method": "gptq", "checkpoint_format": fmt},
              "vocab_size": 8, "hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 1,
              "num_attention_heads": 1}  # fmt: skip  (sizes a config must give: `prune.model_config.check_config`)
    if legacy:
        config["rope_theta"] = theta
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_smollm2_like_checkpoint_is_misread_twice(tmp_path: Path) -> None:
    found = misreadings(checkpoint(tmp_path, tied=True, theta=100000.0, legacy=False))
    assert len(found) == 2 and "tied embeddings" in found[0] and "rope_theta 10000, not 100000" in found[1], found


def test_what_autogptq_reads_right_is_not_flagged(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    assert misreadings(checkpoint(tmp_path / "a", tied=False, theta=100000.0, legacy=True)) == []
    assert misreadings(checkpoint(tmp_path / "b", tied=False, theta=10000.0, legacy=False)) == []  # its default
    (v2,) = misreadings(checkpoint(tmp_path / "c", tied=False, theta=10000.0, legacy=False, fmt="gptq_v2"))
    assert "only checkpoint_format 'gptq'" in v2


def test_the_copy_is_read_right_and_the_checkpoint_is_untouched(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from prune.errors import SlimpackError
    from quant.external.autogptq_check import autogptq_copy

    source = tmp_path / "src"
    source.mkdir()
    checkpoint(source, tied=True, theta=100000.0, legacy=False)
    before = {f.name: f.read_bytes() for f in source.iterdir()}
    copy = autogptq_copy(source, tmp_path / "copy")
    assert misreadings(copy) == [] and {f.name: f.read_bytes() for f in source.iterdir()} == before
    tensors = load_file(str(copy / "model.safetensors"))
    assert torch.equal(tensors["lm_head.weight"], tensors["model.embed_tokens.weight"])
    config = json.loads((copy / "config.json").read_text())
    assert config["rope_theta"] == 100000.0 and config["tie_word_embeddings"] is False
    with pytest.raises(SlimpackError, match="exists"):
        autogptq_copy(source, tmp_path / "copy")


def test_a_sharded_copy_gets_an_lm_head_shard_in_its_index(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from quant.external.autogptq_check import autogptq_copy

    source = tmp_path / "src"
    source.mkdir()
    checkpoint(source, tied=True, theta=10000.0, legacy=False)
    (source / "model.safetensors").rename(source / "model-00001-of-00001.safetensors")
    index = {
        "metadata": {"total_size": 128},
        "weight_map": {"model.embed_tokens.weight": "model-00001-of-00001.safetensors"},
    }
    (source / "model.safetensors.index.json").write_text(json.dumps(index))
    copy = autogptq_copy(source, tmp_path / "copy")
    written = json.loads((copy / "model.safetensors.index.json").read_text())
    assert written["weight_map"]["lm_head.weight"] == "lm_head.safetensors" and written["metadata"]["total_size"] == 256
    assert torch.equal(load_file(str(copy / "lm_head.safetensors"))["lm_head.weight"], torch.zeros(8, 4))
    assert misreadings(copy) == []
