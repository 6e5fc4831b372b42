"""Shared fixtures: a tiny random Llama with a tokenizer trained offline, saved as a model directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prune.data import offline_tokenizer
from prune.models import tiny_llama

VOCAB = 256


def tiny_tokenizer():  # noqa: ANN201
    """A byte-level BPE tokenizer trained on the offline corpus (no download)."""
    return offline_tokenizer(VOCAB)


@pytest.fixture(scope="session")
def tokenizer():  # noqa: ANN201
    return tiny_tokenizer()


def save_tiny(
    directory: Path, tokenizer, model_type: str = "llama", seed: int = 0, *, distinct: bool = False,  # noqa: ANN001
    dtype: torch.dtype = torch.float32, max_shard_size: str | None = None, num_kv_heads: int = 2,
) -> Path:  # fmt: skip
    """A tiny random model directory (4 query heads; ``num_kv_heads`` 4: multi-head attention). ``distinct``: norm
    weights and biases perturbed so that no two are equal, as in a trained model (a fresh one's are all ones and
    zeros); ``max_shard_size``: several shards + index."""
    model = tiny_llama(seed=seed, vocab_size=len(tokenizer), model_type=model_type, num_kv_heads=num_kv_heads)
    if distinct:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(("norm.weight", ".bias")):
                    param.add_(0.1 * torch.randn_like(param))
    shards = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.to(dtype).save_pretrained(directory, safe_serialization=True, **shards)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:  # noqa: ANN001
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model", tokenizer)


@pytest.fixture()
def calib_batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return list(torch.randint(0, VOCAB, (6, 24), generator=gen).split(2))
