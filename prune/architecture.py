"""Where a decoder-only architecture keeps its parts, and what its config means: `DecoderAdapter` (decoder
blocks, prunable linears in true-sequential groups, embedding, final norm, rotary embedding; q/k norms, biases,
tied embeddings, head size, KV heads), registered by ``config.model_type`` in `ADAPTERS`; `adapter_for` a model,
`adapter_of` a config; `check_architecture` names an unsupported one in one line. Exporters and stages ask the
adapter these facts instead of probing transformers' modules or configs themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from prune.errors import SlimpackError
from prune.registry import Registry

LLAMA_GROUPS: tuple[tuple[str, ...], ...] = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
)


@dataclass(frozen=True)
class DecoderAdapter:
    """Where a decoder-only architecture keeps its parts (attribute paths from the CausalLM root)."""

    model_type: str
    blocks_path: str = "model.layers"
    embed_path: str = "model.embed_tokens"
    norm_path: str = "model.norm"
    rotary_path: str | None = "model.rotary_emb"
    groups: tuple[tuple[str, ...], ...] = LLAMA_GROUPS
    qk_norm: bool = False  # a per-head RMSNorm of q and k before the rotary embedding (Qwen3)
    qkv_bias: bool | None = None  # q/k/v biases: always (Qwen2), never (Mistral), or as ``attention_bias`` says
    mlp_bias: bool | None = False  # MLP biases: never, or as ``config.mlp_bias`` says (None: Llama)

    # What the config means (``config``: a transformers config of this model_type) ----------------------------

    def tied_embeddings(self, config: Any) -> bool:
        """Whether ``lm_head`` shares the embedding's weight (then it is not stored)."""
        return bool(getattr(config, "tie_word_embeddings", False))

    def head_dim(self, config: Any) -> int:
        return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)

    def kv_heads(self, config: Any) -> int:
        """The config's KV heads (a structured-pruned model records each layer's: `prune.structured.shapes`)."""
        return int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)

    def attention_biases(self, config: Any) -> bool:
        """Whether q/k/v (and, as ``attention_bias`` says, o) carry biases."""
        return self.qkv_bias if self.qkv_bias is not None else bool(getattr(config, "attention_bias", False))

    def mlp_biases(self, config: Any) -> bool:
        return self.mlp_bias if self.mlp_bias is not None else bool(getattr(config, "mlp_bias", False))

    def activation(self, config: Any) -> str:
        """The MLP's activation (``hidden_act``; SiLU where the config leaves it out, as transformers does)."""
        return str(getattr(config, "hidden_act", "silu"))

    # Where its parts are ----------------------------------------------------------------------------------------

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.blocks_path)  # type: ignore[return-value]

    def block_prefix(self, index: int) -> str:
        return f"{self.blocks_path}.{index}"

    def linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        """Prunable linears of one block, keyed by their path inside the block, in sequential order."""
        return {name: block.get_submodule(name) for group in self.groups for name in group}  # type: ignore[misc]

    def named_linears(self, model: nn.Module) -> dict[str, nn.Linear]:
        """All prunable linears of the model, keyed by full module name."""
        return {
            f"{self.block_prefix(i)}.{name}": lin
            for i, block in enumerate(self.blocks(model))
            for name, lin in self.linears(block).items()
        }

    def block_linear_names(self, model: nn.Module) -> list[list[str]]:
        """Full names of the prunable linears, one list per block."""
        return [
            [f"{self.block_prefix(i)}.{name}" for name in self.linears(b)] for i, b in enumerate(self.blocks(model))
        ]

    def pre_block_modules(self, model: nn.Module) -> list[nn.Module]:
        """Modules that run before block 0 (embedding, rotary)."""
        paths = [self.embed_path] + ([self.rotary_path] if self.rotary_path else [])
        return [model.get_submodule(p) for p in paths]


ADAPTERS: Registry[DecoderAdapter] = Registry("architecture")
ADAPTERS.register("llama")(DecoderAdapter("llama", mlp_bias=None))
ADAPTERS.register("mistral")(DecoderAdapter("mistral", qkv_bias=False))
ADAPTERS.register("qwen2")(DecoderAdapter("qwen2", qkv_bias=True))
ADAPTERS.register("qwen3")(DecoderAdapter("qwen3", qk_norm=True))


MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")  # Mixtral, Qwen-MoE, DeepSeek


def check_architecture(model_type: object, experts: object) -> str:
    """``model_type`` if slimpack has an adapter for it; else one line naming it (a mixture-of-experts model —
    ``experts`` per block — as such)."""
    if experts:
        raise SlimpackError(
            f"{model_type!r} is a mixture-of-experts model ({experts} experts per block); slimpack walks dense MLPs "
            f"(gate/up/down projections) and has no adapter for routed experts yet; supported: "
            f"{', '.join(ADAPTERS.names())}"
        )
    if not isinstance(model_type, str) or model_type not in ADAPTERS:
        raise SlimpackError(
            f"unsupported architecture {model_type!r}; slimpack supports model_type: {', '.join(ADAPTERS.names())}"
        )
    return model_type


def adapter_of(config: Any) -> DecoderAdapter:
    """The adapter of a transformers config (one line for an unsupported architecture)."""
    model_type = getattr(config, "model_type", None)
    experts = next((getattr(config, k) for k in MOE_KEYS if getattr(config, k, None)), None)
    return ADAPTERS.get(check_architecture(model_type, experts))


def adapter_for(model: nn.Module) -> DecoderAdapter:
    return adapter_of(model.config)
