"""Shared fixtures: a tiny random Llama with a tokenizer trained offline, saved as a model directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prune.models import tiny_llama

VOCAB = 256


def tiny_tokenizer():  # noqa: ANN201
    """A byte-level BPE tokenizer trained on the offline corpus (no download)."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    texts = [topics[k] for k in sorted(topics)][:200]
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="session")
def tokenizer():  # noqa: ANN201
    return tiny_tokenizer()


def save_tiny(directory: Path, tokenizer, model_type: str = "llama", seed: int = 0) -> Path:  # noqa: ANN001
    model = tiny_llama(seed=seed, vocab_size=len(tokenizer), model_type=model_type)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:  # noqa: ANN001
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model", tokenizer)


@pytest.fixture()
def calib_batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return list(torch.randint(0, VOCAB, (6, 24), generator=gen).split(2))
