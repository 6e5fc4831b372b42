"""The checkpoint kind of a structured-pruned model (`StructuredCheckpoint`, which `prune.models` lists in
`prune.checkpoint_kinds.CHECKPOINT_KINDS`): the original architecture, cut block by block to the shapes
its ``config.json`` records (`prune.structured.shapes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prune.architecture import adapter_for
from prune.checkpoint_kinds import load_state_strict
from prune.io import read_safetensors
from prune.lazy import PLAIN_CODEC, TensorCodec
from prune.structured.shapes import STRUCTURE_KEY, apply_structure


@dataclass(frozen=True)
class StructuredCheckpoint:
    """The checkpoint kind of a structured-pruned model (`prune.checkpoint_kinds.CheckpointKind`): ``config.json`` keeps
    the original architecture plus ``slimpack_structure``; the loader builds the full-size architecture, cuts
    every block to its recorded shape, then loads the safetensors strictly."""

    name: str = "structured"
    quantized: bool = False
    per_layer_shapes: bool = True

    def claims(self, config: dict[str, Any]) -> bool:
        return STRUCTURE_KEY in config

    def load(self, path: Any, dtype: torch.dtype) -> tuple[nn.Module, dict[str, Any]]:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
        apply_structure(adapter_for(model).blocks(model), getattr(config, STRUCTURE_KEY))
        load_state_strict(model, read_safetensors(path), path)
        return model.to(dtype).eval(), {}

    def codec(self, config: dict[str, Any]) -> TensorCodec:
        return PLAIN_CODEC  # tensors as stored; `prune.lazy` cuts the skeleton to the recorded shapes first
