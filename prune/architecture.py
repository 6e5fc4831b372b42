"""Where a decoder-only architecture keeps its parts: `DecoderAdapter` (decoder blocks, prunable linears in
true-sequential groups, embedding, final norm, rotary embedding), registered by ``config.model_type`` in
`ADAPTERS`; `adapter_for` a model; `check_architecture` names an unsupported one in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

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
for _model_type in ("llama", "mistral", "qwen2", "qwen3"):
    ADAPTERS.register(_model_type)(DecoderAdapter(_model_type))


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


def adapter_for(model: nn.Module) -> DecoderAdapter:
    model_type = getattr(model.config, "model_type", None)
    experts = next((getattr(model.config, k) for k in MOE_KEYS if getattr(model.config, k, None)), None)
    return ADAPTERS.get(check_architecture(model_type, experts))
