"""Random-weight models with the real shapes of the models users prune (memory, time and speed do not depend
on the values): built from a config, tensor by tensor, straight into bf16 shards — never a whole model in
memory, so a 7B shape is built on a 24 GB machine in a few minutes.

``SHAPES`` holds the published configs' shapes (hidden, FFN, depth, heads, KV heads, vocabulary, biases, tied
embeddings). Weights ~ N(0, 0.02²); norm weights 1 + N(0, 0.05²) and biases N(0, 0.02²), so that no two
tensors are equal (a graph exporter would otherwise share them). The tokenizer is a byte-level BPE trained
on the offline corpus (ids below the vocabulary size; no download).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from prune.data import offline_tokenizer
from prune.io import atomic_output_dir, write_json_atomic
from prune.shards import ShardWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shape:
    model_type: str
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tie: bool = False
    rope_theta: float = 10000.0
    max_positions: int = 4096

    def config(self, layers: int | None = None) -> Any:
        from transformers import AutoConfig

        return AutoConfig.for_model(
            self.model_type,
            hidden_size=self.hidden,
            intermediate_size=self.ffn,
            num_hidden_layers=layers or self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            vocab_size=self.vocab,
            tie_word_embeddings=self.tie,
            rope_theta=self.rope_theta,
            max_position_embeddings=self.max_positions,
            rms_norm_eps=1e-5,
        )


SHAPES: dict[str, Shape] = {
    "llama2-7b": Shape("llama", 4096, 11008, 32, 32, 32, 32000),
    "llama2-70b": Shape("llama", 8192, 28672, 80, 64, 8, 32000),
    "llama3-8b": Shape("llama", 4096, 14336, 32, 32, 8, 128256, rope_theta=500000.0, max_positions=8192),
    "llama3.2-1b": Shape("llama", 2048, 8192, 16, 32, 8, 128256, tie=True, rope_theta=500000.0),
    "llama3.2-3b": Shape("llama", 3072, 8192, 28, 24, 8, 128256, tie=True, rope_theta=500000.0),
    "qwen2.5-7b": Shape("qwen2", 3584, 18944, 28, 28, 4, 152064, rope_theta=1000000.0),
}


def _value(name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return 1 + 0.05 * torch.randn(shape, generator=gen)
    return 0.02 * torch.randn(shape, generator=gen)


SHAPE_RECORD = "slimpack-shape.json"  # marks a random-weight model this module built


def build(
    shape_name: str, out: Path, layers: int | None = None, dtype: torch.dtype = torch.bfloat16,
    shard_mib: int = 2048, seed: int = 0, overwrite: bool = False, progress: bool = True,
) -> Path:  # fmt: skip
    """Write the random model ``shape_name`` (``layers``: fewer blocks) to ``out``; returns ``out``."""
    from transformers import AutoModelForCausalLM

    shape = SHAPES[shape_name]
    config = shape.config(layers)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    names = [(n, t.shape) for n, t in skeleton.state_dict().items() if not (shape.tie and n == "lm_head.weight")]
    gen = torch.Generator().manual_seed(seed)
    with atomic_output_dir(out, overwrite, record=SHAPE_RECORD) as tmp:  # --overwrite: only a model built here
        writer = ShardWriter(tmp, dtype, shard_mib * 2**20)
        for name, size in tqdm(names, desc=f"{shape_name} tensors", disable=not progress):
            writer.add(name, _value(name, size, gen).to(dtype))
        writer.close()
        config.dtype = dtype
        config.save_pretrained(tmp)
        offline_tokenizer(min(shape.vocab, 8000)).save_pretrained(tmp)
        write_json_atomic(tmp / SHAPE_RECORD, {"shape": shape_name, "layers": config.num_hidden_layers, "seed": seed})
    return out
