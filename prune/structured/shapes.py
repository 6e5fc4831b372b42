"""Per-layer shapes of a structured-pruned decoder: head/channel counting, the surgery that removes them,
and the record that lets `prune.models.load_model` rebuild the smaller model exactly.

Units (SparsitySolver `003_…` §3.1; SlimGPT `004_…` §4.1): each decoder block has two prunable units,
``{block}.self_attn`` (heads: rows of q_proj, columns of o_proj, and in multi-head attention the head's k/v
rows too) and ``{block}.mlp`` (FFN channels: rows of gate_proj/up_proj, columns of down_proj). A unit's
*ratio* is the share of its removable parameters that goes: a query head costs ``2·d_head·hidden`` (q rows +
o columns), a multi-head attention head ``4·d_head·hidden`` (q, k, v rows + o columns), a channel
``3·hidden``.

Multi-head attention (LLaMA-2-7B: 32 query heads, 32 KV heads): every query head has its own KV head, and a
removed head takes its k/v rows with it, as SlimGPT removes LLaMA-7B's heads. Heads go one at a time, and the
layer's KV cache becomes ``[batch, n_kv_left, past, d_head]``: each layer has its own cache width, which the
ONNX exporter (`export.onnx_kv`), onnxruntime's engine and transformers' ``DynamicCache`` take per layer.

Grouped-query attention. HF's Llama repeats every KV head for ``n_q / n_kv`` query heads (``repeat_kv``),
so a layer stays valid only if every KV group keeps the same number of query heads. slimpack removes
query heads *evenly within the groups* — one query head per KV group per round — and keeps every KV head:
with SmolLM2's 9 query / 3 KV heads a layer keeps 9, 6 or 3 query heads, and its k/v projections and KV
cache stay whole. (`cut_heads` and the record can also drop whole KV groups; no method chooses that, and a
GQA layer cut to one query head per group stays GQA: `BlockShape.multi_head` reads the config.) A
block's attention ratio is rounded to the nearest whole round (one head in multi-head attention); its FFN
absorbs the rounding so the block removes its planned share of parameters (`block_counts`).

Shapes: ``q_proj.weight [n_q·d, hidden]``, ``k/v_proj.weight [n_kv·d, hidden]``, ``o_proj.weight [hidden,
n_q·d]``, ``gate/up.weight [I, hidden]``, ``down_proj.weight [hidden, I]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from prune.architecture import adapter_of
from prune.errors import SlimpackError

STRUCTURE_KEY = "slimpack_structure"  # the config.json entry that records per-layer shapes


@dataclass(frozen=True)
class BlockShape:
    """One decoder block's prunable structure."""

    heads: int  # query heads
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    # the architecture's attention (its config, not this block's current shape): one query head per KV head,
    # so a removed head takes its KV head along. A GQA layer cut down to one query head per group stays GQA.
    multi_head: bool

    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.heads // self.kv_heads

    @property
    def step(self) -> int:
        """Query heads removed at a time: one in multi-head attention, one per KV group (a round) in GQA."""
        return 1 if self.multi_head else self.kv_heads

    @property
    def head_params(self) -> int:
        """Weights one removed query head takes: q rows and o columns, and k/v rows in multi-head attention."""
        return (4 if self.multi_head else 2) * self.head_dim * self.hidden

    @property
    def channel_params(self) -> int:
        return 3 * self.hidden

    @property
    def attn_params(self) -> int:
        return self.heads * self.head_params

    @property
    def mlp_params(self) -> int:
        return self.intermediate * self.channel_params


def block_shape(block: nn.Module) -> BlockShape:
    attn, mlp = block.self_attn, block.mlp
    d = attn.head_dim
    config = attn.config  # transformers' attention modules keep their model's config
    return BlockShape(
        heads=attn.q_proj.out_features // d,
        kv_heads=attn.k_proj.out_features // d,
        head_dim=d,
        hidden=attn.o_proj.out_features,
        intermediate=mlp.down_proj.in_features,
        multi_head=config.num_attention_heads == adapter_of(config).kv_heads(config),
    )


def unit_names(prefix: str) -> tuple[str, str]:
    return f"{prefix}.self_attn", f"{prefix}.mlp"


def unit_numel(shape: BlockShape) -> tuple[int, int]:
    """Removable parameters of the attention and FFN units."""
    return shape.attn_params, shape.mlp_params


def heads_for_ratio(ratio: float, shape: BlockShape) -> int:
    """Query heads to remove: the nearest whole number of steps (`BlockShape.step`) to ``ratio``."""
    steps = round(ratio * shape.heads / shape.step)
    return int(steps * shape.step)


def check_keep_heads(keep: int, shape: BlockShape, layer: str) -> None:
    if shape.multi_head:
        if not 0 < keep <= shape.heads:
            raise SlimpackError(f"--keep-heads {keep}: {layer} has {shape.heads} heads; keep 1 to {shape.heads}")
        return
    if keep <= 0 or keep > shape.heads or keep % shape.kv_heads:
        options = ", ".join(str(shape.kv_heads * k) for k in range(1, shape.group + 1))
        raise SlimpackError(
            f"--keep-heads {keep}: {layer} has {shape.kv_heads} KV heads shared by {shape.heads} query heads, and "
            f"grouped-query attention needs the same number of query heads per KV head; keep one of {options}"
        )


def block_counts(
    attn_ratio: float, mlp_ratio: float, shape: BlockShape, layer: str, keep_heads: int | None = None
) -> tuple[int, int]:
    """``(heads, channels)`` to remove from one block: heads by whole steps (or ``keep_heads``), channels so
    that the block removes ``attn_ratio·attn_params + mlp_ratio·mlp_params`` parameters."""
    if keep_heads is not None:
        check_keep_heads(keep_heads, shape, layer)
        heads = shape.heads - keep_heads
    else:
        heads = heads_for_ratio(attn_ratio, shape)
    if heads >= shape.heads:
        top = math.floor(100 * (shape.heads - shape.step / 2) / shape.heads) / 100  # a ratio below it keeps one
        least = "one" if shape.multi_head else "one per KV group"
        raise SlimpackError(
            f"structured ratio {attn_ratio:.2f} would remove all {shape.heads} query heads of {layer}; keep at least "
            f"{least}: lower --sparsity (attention ratio below {top:.2f}) or pass --keep-heads"
        )
    budget = attn_ratio * shape.attn_params + mlp_ratio * shape.mlp_params
    channels = round((budget - heads * shape.head_params) / shape.channel_params)
    channels = max(0, channels)
    if channels >= shape.intermediate:
        raise SlimpackError(
            f"structured ratio {mlp_ratio:.2f} would remove all {shape.intermediate} FFN channels of {layer}; "
            "lower --sparsity"
        )
    return heads, channels


# --- surgery ---------------------------------------------------------------------------------------


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    lin.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(bias.contiguous(), requires_grad=False)
    return lin


def _rows(lin: nn.Linear, index: torch.Tensor) -> nn.Linear:
    return _linear(lin.weight.data[index], None if lin.bias is None else lin.bias.data[index])


def _cols(lin: nn.Linear, index: torch.Tensor) -> nn.Linear:
    return _linear(lin.weight.data[:, index], None if lin.bias is None else lin.bias.data)


def head_columns(heads: Sequence[int], head_dim: int) -> torch.Tensor:
    """Column (or row) indices of ``heads`` in a ``[*, n·d]`` projection."""
    return torch.tensor([h * head_dim + j for h in heads for j in range(head_dim)], dtype=torch.long)


def even_choices(alive: Sequence[int], heads: int, kv_heads: int) -> list[int]:
    """Positions in ``alive`` (surviving query heads) that may go next so that every KV group loses one head
    per round: the heads of the groups that still hold the most."""
    group = heads // kv_heads
    counts = [sum(1 for h in alive if h // group == g) for g in range(kv_heads)]
    return [i for i, h in enumerate(alive) if counts[h // group] == max(counts)]


def cut_heads(attn: nn.Module, keep: Sequence[int]) -> None:
    """Keep only query heads ``keep``: q_proj rows, o_proj columns. A KV group left without query heads goes
    too (its k_proj/v_proj rows); the groups that stay must keep the same number of query heads."""
    d = attn.head_dim
    n_kv = attn.k_proj.out_features // d
    heads = attn.q_proj.out_features // d
    keep = sorted(keep)
    group = heads // n_kv
    per_group = [sum(1 for h in keep if h // group == g) for g in range(n_kv)]
    kept_groups = [g for g, n in enumerate(per_group) if n]
    if not kept_groups or len({per_group[g] for g in kept_groups}) != 1:
        raise ValueError(f"heads {keep} are not the same non-zero count per kept KV group (groups of {group})")
    index = head_columns(keep, d).to(attn.q_proj.weight.device)
    attn.q_proj = _rows(attn.q_proj, index)
    attn.o_proj = _cols(attn.o_proj, index)
    if len(kept_groups) < n_kv:
        kv_index = head_columns(kept_groups, d).to(attn.k_proj.weight.device)
        attn.k_proj = _rows(attn.k_proj, kv_index)
        attn.v_proj = _rows(attn.v_proj, kv_index)
    attn.num_key_value_groups = per_group[kept_groups[0]]


def cut_channels(mlp: nn.Module, keep: Sequence[int]) -> None:
    """Keep only FFN channels ``keep``: gate/up rows, down_proj columns."""
    index = torch.tensor(sorted(keep), dtype=torch.long, device=mlp.down_proj.weight.device)
    mlp.gate_proj = _rows(mlp.gate_proj, index)
    mlp.up_proj = _rows(mlp.up_proj, index)
    mlp.down_proj = _cols(mlp.down_proj, index)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)


# --- the saved record --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerRecord:
    num_attention_heads: int
    intermediate_size: int
    num_key_value_heads: int  # (records written before KV heads could go lack it: the config's)


def structure_of(blocks: Sequence[nn.Module]) -> list[LayerRecord]:
    return [LayerRecord(s.heads, s.intermediate, s.kv_heads) for s in (block_shape(b) for b in blocks)]


def layer_kv_heads(config: Any) -> list[int]:
    """Each layer's KV heads: the config's, or a structured-pruned model's recorded per layer."""
    kv = adapter_of(config).kv_heads(config)
    record = getattr(config, STRUCTURE_KEY, None)
    if not record:
        return [kv] * config.num_hidden_layers
    return [int(layer.get("num_key_value_heads", kv)) for layer in record["layers"]]


def recorded_structure(config: dict[str, Any]) -> list[LayerRecord]:
    """The per-layer shapes a structured model's config.json (read as JSON) records (`record_structure`)."""
    return [LayerRecord(**layer) for layer in config[STRUCTURE_KEY]["layers"]]


def record_structure(config: Any, blocks: Sequence[nn.Module]) -> None:
    """Write the per-layer shapes into ``config`` (saved in config.json as ``slimpack_structure``)."""
    setattr(config, STRUCTURE_KEY, {"layers": [asdict(r) for r in structure_of(blocks)]})


def apply_structure(blocks: Sequence[nn.Module], record: dict[str, Any]) -> None:
    """Resize freshly built full-size blocks to the recorded shapes (weights to be loaded afterwards)."""
    layers = record.get("layers") if isinstance(record, dict) else None
    if not isinstance(layers, list) or len(layers) != len(blocks):
        raise SlimpackError(
            f"config.json's {STRUCTURE_KEY} lists {len(layers or [])} layers for a {len(blocks)}-layer model; "
            "the model directory is damaged — prune it again"
        )
    for i, (block, layer) in enumerate(zip(blocks, layers)):
        shape = block_shape(block)
        try:
            heads, inter = int(layer["num_attention_heads"]), int(layer["intermediate_size"])
            kv = int(layer.get("num_key_value_heads", shape.kv_heads))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise SlimpackError(
                f"config.json's {STRUCTURE_KEY} layer {i} is {layer!r}, not whole numbers of heads and channels; the "
                "model directory is damaged — prune it again"
            ) from None
        if not (0 < kv <= shape.kv_heads and heads % kv == 0 and 0 < heads // kv <= shape.group):
            raise SlimpackError(
                f"config.json's {STRUCTURE_KEY} gives layer {i} {heads} query heads over {kv} KV heads, which a "
                f"{shape.heads} / {shape.kv_heads}-head layer cannot become; the model directory is damaged — prune "
                "it again"
            )
        if heads != shape.heads or kv != shape.kv_heads:
            per = heads // kv
            cut_heads(block.self_attn, [g * shape.group + j for g in range(kv) for j in range(per)])
        if inter != shape.intermediate:
            cut_channels(block.mlp, range(inter))


def parameter_count(model: nn.Module) -> dict[str, int]:
    """Total parameters (a tied embedding once) and those inside the decoder blocks."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    blocks = sum(p.numel() for name, p in model.named_parameters() if ".layers." in name)
    return {"total": total, "blocks": blocks}
