"""DeepSparse export: Llama-family decoders as static-shape ONNX graphs that DeepSparse 1.8.0 compiles whole.

The graphs are built node by node with ``onnx.helper`` (opset 13, IR 7: onnx 1.14, which DeepSparse 1.8 pins,
reads them; DeepSparse compiled the same graphs at opsets 11–18 and IR 6–9 alike). Three graphs share one
``weights.bin`` (ONNX external data, so the ~540 MB of SmolLM2 are stored once):

    prefill.onnx  input_ids [1, T]                           → logits [1, T, V], present.{i}.key/value [1, Hkv, T, D]
    prompt.onnx   input_ids [1, C], attention_mask [1, L],   → logits [1, C, V], present.{i}.key/value [1, Hkv, L, D]
                  positions [1, C], past_key_values.{i}.key/value [1, Hkv, L-C, D]
    decode.onnx   the same with C = 1 (past [1, Hkv, L-1, D])

T = ``prefill_len`` (right-padded prompts; the attention is causal), C = ``prompt_len``, L = ``cache_len``.
``prompt``/``decode`` use DeepSparse's TextGeneration KV-cache layout: the cache holds the last slots, oldest
first; ``attention_mask`` marks the valid ones (the last C are the new tokens); ``present`` is past + new,
keys stored after rope. The worker (`runtime_bench.engines.deepsparse_worker`) runs them with DeepSparse's
internal KV cache (``cached_outputs``: the engine keeps ``present`` as the next ``past`` itself).

What DeepSparse rejects (each found with a minimal graph that onnxruntime runs; the engine aborts the process):

- a tensor that is a graph output *and* goes through ``Identity`` into a ``MatMul`` (``present.{i}.value =
  Identity(v)``, ``v`` also feeding ``probs @ v``) → ``Assertion at ./src/include/wand/utility/map_utils.hpp:82``.
  So every ``present`` tensor is produced under its output name by the op that computes it.
- a ``Concat`` listing the same tensor more than once, e.g. ``Concat(k, k, k)`` as repeat_kv for grouped-query
  attention → ``Assertion at src/lib/engine/execution/graph.cpp:925``. Here GQA is folded instead: the g query
  heads of one KV head become g·T rows of one 4-D attention (``[1, Hkv, g·T, D]``), so K/V are never repeated
  (``Unsqueeze``/``Expand``/``Reshape``, HF's repeat_kv, also compiles, but copies K/V). Rope's cos/sin
  (HF builds them with ``cat(freqs, freqs)``) are precomputed ``[L, D]`` tables, gathered by ``positions``.
- dynamic dims: accepted, but "Optimized runtime disabled": everything falls back (fraction of supported ops 0).
  All shapes here are static. ``Where`` on a bool mask, ``Trilu`` and ``Gather`` of activations also fall
  back to DeepSparse's bundled onnxruntime, so masks are additive (``(1 - mask) · -1e9``) and causal masks
  are constants; every graph here runs with fraction of supported ops 1.0.
- the internal KV cache gives NaN logits or ``meta_view.hpp:180`` assertions for multi-token cached graphs
  whose C is large relative to L (NaN at C=512/L=1024, 256/512, 128/256; assertions at 512/600, 200/401;
  fine at 64/1024 … 256/1024, 100/250) or not a multiple of 4 (assertions at 170/512, 199/400; DeepSparse's own
  pipeline requires 4 | C), while the plain engine (cache through numpy) runs the C=512/L=1024 graph correctly.
  Hence a separate no-past ``prefill`` graph for logits and a small ``prompt`` chunk graph feeding the cache;
  `export_deepsparse` enforces 4 | C and 4·C ≤ L.

Weights: every prunable linear is a ``MatMul`` with a constant ``[in, out]`` initializer named
``{module}.weight_t`` (the transposed fp32 ``nn.Linear`` weight, so zeros stay exactly zero): DeepSparse reports
those as sparse GEMV/GEMM kernels (``ks_gevm_be-90.0%`` in its layer analysis). A tied lm_head is
``MatMul(x, Transpose(embedding))``: the embedding is stored once, and DeepSparse runs it as fast as a stored
``[H, V]`` copy (measured on SmolLM2); an untied one is ``lm_head.weight_t``. Each weight is read when the
first graph needs it and written to ``weights.bin`` at once (`SharedWeights`); the graphs only reference it,
so an export holds one weight at a time — from a model in memory, or (``--stream``) from a streamed model's
shards: a 50 % LLaMA-2-7B shape exported in 1.34 GiB (docs/results/scale.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from export.base import ZeroCounts
from export.graph_cache import GraphCache
from export.onnx_kv import count_zeros as onnx_initializer_zeros
from prune.architecture import adapter_for
from prune.errors import SlimpackError
from prune.models import LoadedModel, checkpoint_kind

log = logging.getLogger(__name__)

PREFILL_FILE = "prefill.onnx"
PROMPT_FILE = "prompt.onnx"
DECODE_FILE = "decode.onnx"
WEIGHTS_FILE = "weights.bin"
CONFIG_FILE = "deepsparse.json"
OPSET = 13
IR_VERSION = 7
MASK_MIN = -1e9  # additive mask of a slot that must not be attended to
SUPPORTED = ("llama", "mistral", "qwen2")


def weight_name(module: str) -> str:
    """The initializer of ``module``'s weight, transposed to ``[in, out]`` (MatMul's B)."""
    return f"{module}.weight_t"


Reader = Callable[[], np.ndarray]  # a weight's fp32 values, read only when it is first written


class SharedWeights:
    """``weights.bin``: the named weights of the three graphs, each written once — when a graph first uses it,
    64-byte aligned — and referenced by every graph as ONNX external data, so no graph holds a weight's bytes
    and an export holds one weight at a time (a model streamed from its shards included)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.entries: dict[str, tuple[int, int, tuple[int, ...]]] = {}  # name → offset, bytes, shape

    def tensor(self, name: str, read: Reader) -> Any:
        """The external-data initializer ``name``; its values (``read()``) are written on first use."""
        from onnx import TensorProto

        if name not in self.entries:
            array = np.ascontiguousarray(read(), dtype=np.float32)
            self.fh.write(b"\0" * (-self.fh.tell() % 64))
            self.entries[name] = (self.fh.tell(), array.nbytes, array.shape)
            self.fh.write(memoryview(array).cast("B"))
            del array
        offset, length, shape = self.entries[name]
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        return tensor

    def close(self) -> None:
        self.fh.close()


@dataclass
class _Graph:
    """Nodes and initializers of one graph; named weights go to ``weights.bin`` (``store``)."""

    opset: int
    store: SharedWeights
    nodes: list[Any] = field(default_factory=list)
    inits: list[Any] = field(default_factory=list)
    _n: int = 0
    _consts: dict[Any, str] = field(default_factory=dict)

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def weight(self, name: str, read: Reader) -> str:
        self.inits.append(self.store.tensor(name, read))
        return name

    def const(self, value: Any, dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        array = np.ascontiguousarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.fresh("const")
            self.inits.append(numpy_helper.from_array(array, self._consts[key]))
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        output = out or self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=self.fresh(op_type), **attrs))
        return output

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const(axes, np.int64)])
        return self.op("Unsqueeze", [x], axes=axes)

    def reduce_mean(self, x: str, axes: list[int]) -> str:
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.const(axes, np.int64)], keepdims=1)
        return self.op("ReduceMean", [x], axes=axes, keepdims=1)


def dims_of(model: nn.Module) -> dict[str, Any]:
    config, adapter = model.config, adapter_for(model)
    return {
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "heads": config.num_attention_heads,
        "kv_heads": adapter.kv_heads(config),
        "head_dim": adapter.head_dim(config),
        "vocab": config.vocab_size,
        "eps": float(config.rms_norm_eps),
    }


def check_model(model: nn.Module) -> None:
    """One-line `SlimpackError` for what these graphs do not compute."""
    config = model.config
    adapter = adapter_for(model)  # an unknown model_type is refused here, in one line
    if adapter.model_type not in SUPPORTED:
        raise SlimpackError(
            f"the deepsparse format supports model_type {', '.join(SUPPORTED)}, not {adapter.model_type!r}"
        )
    if adapter.activation(config) != "silu":
        raise SlimpackError(f"the deepsparse format needs a SiLU MLP, this model uses {adapter.activation(config)!r}")
    if adapter.mlp_biases(config):
        raise SlimpackError("the deepsparse format does not support MLP biases")
    if adapter.qk_norm:
        raise SlimpackError("the deepsparse format does not support per-head q/k norms")
    if dims_of(model)["heads"] % dims_of(model)["kv_heads"]:
        raise SlimpackError("attention heads must be a multiple of the KV heads")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy()


def rope_tables(model: nn.Module, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [length, head_dim] from the model's own rotary embedding (its rope scaling included)."""
    rotary = model.get_submodule(adapter_for(model).rotary_path or "model.rotary_emb")
    with torch.no_grad():
        cos, sin = rotary(torch.zeros(1, length, 1), torch.arange(length).unsqueeze(0))
    return _np(cos[0]), _np(sin[0])


class GraphBuilder:
    """Writes the decoder's forward pass as ONNX nodes. The model gives the structure (shapes, rope, config: a
    weightless skeleton will do); ``tensor(name)`` gives a weight's values when the graph first needs them —
    the model's own (`of_model`) or read from the shards of a streamed model (`of_checkpoint`)."""

    def __init__(
        self, model: nn.Module, tensor: Callable[[str], torch.Tensor], tied: bool, opset: int = OPSET,
        progress: bool = False,
    ) -> None:  # fmt: skip
        check_model(model)
        self.model, self.tensor, self.tied = model, tensor, tied
        self.adapter = adapter_for(model)
        self.d = dims_of(model)
        self.opset = opset
        self.group = self.d["heads"] // self.d["kv_heads"]
        self.progress = progress

    @classmethod
    def of_model(cls, model: nn.Module) -> GraphBuilder:
        """The weights of a model in memory (a tied lm_head: the embedding, stored once)."""
        tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        return cls(model, model.get_parameter, tied)

    @classmethod
    def of_checkpoint(cls, loaded: LoadedModel, progress: bool = True) -> GraphBuilder:
        """The weights of a streamed model (`prune.stream.open_streamed`), each read from its shard when written."""
        lazy = loaded.lazy
        assert lazy is not None

        def tensor(name: str) -> torch.Tensor:
            stored = lazy.stored_name(name)
            return lazy.read([stored], torch.float32, "cpu")[stored]

        return cls(loaded.model, tensor, lazy.stored_name("lm_head.weight") != "lm_head.weight", progress=progress)

    def values(self, name: str, transpose: bool = False) -> Reader:
        def read() -> np.ndarray:
            array = _np(self.tensor(name))
            return array.T if transpose else array

        return read

    # --- pieces -----------------------------------------------------------------------------------

    def rmsnorm(self, g: _Graph, x: str, name: str) -> str:
        mean = g.reduce_mean(g.op("Mul", [x, x]), [-1])
        std = g.op("Sqrt", [g.op("Add", [mean, g.const(self.d["eps"])])])
        return g.op("Mul", [g.op("Div", [x, std]), g.weight(name, self.values(name))])

    def linear(self, g: _Graph, x: str, module: nn.Linear, name: str) -> str:
        y = g.op("MatMul", [x, g.weight(weight_name(name), self.values(f"{name}.weight", transpose=True))])
        if module.bias is not None:
            y = g.op("Add", [y, g.weight(f"{name}.bias", self.values(f"{name}.bias"))])
        return y

    def heads(self, g: _Graph, x: str, n: int, t: int, out: str | None = None) -> str:
        """[1, T, n·D] → [1, n, T, D]."""
        r = g.op("Reshape", [x, g.const([1, t, n, self.d["head_dim"]], np.int64)])
        return g.op("Transpose", [r], out=out, perm=[0, 2, 1, 3])

    def rope(self, g: _Graph, x: str, cos: str, sin: str, out: str | None = None) -> str:
        """x [1, H, T, D]: x·cos + rotate_half(x)·sin, rotate_half(x) = [-x2, x1]."""
        half = self.d["head_dim"] // 2
        axis = g.const([3], np.int64)
        x1 = g.op("Slice", [x, g.const([0], np.int64), g.const([half], np.int64), axis])
        x2 = g.op("Slice", [x, g.const([half], np.int64), g.const([2 * half], np.int64), axis])
        rotated = g.op("Concat", [g.op("Neg", [x2]), x1], axis=3)
        return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [rotated, sin])], out=out)

    def attention(self, g: _Graph, q: str, k: str, v: str, mask: str, t: int) -> str:
        """q [1, Hq, T, D], k/v [1, Hkv, S, D], additive mask [1, 1, g·T or 1, S] → [1, T, Hq·D].

        Grouped-query attention without repeating K/V: query head h uses KV head h // g, so the g query heads of
        one KV head are g·T consecutive rows of ``q`` reshaped to [1, Hkv, g·T, D].
        """
        hq, hkv, hd = self.d["heads"], self.d["kv_heads"], self.d["head_dim"]
        qf = g.op("Reshape", [q, g.const([1, hkv, self.group * t, hd], np.int64)])
        scores = g.op("MatMul", [qf, g.op("Transpose", [k], perm=[0, 1, 3, 2])])
        scores = g.op("Add", [g.op("Mul", [scores, g.const(1.0 / np.sqrt(hd))]), mask])
        ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])  # [1, Hkv, g·T, D]
        ctx = g.op("Reshape", [ctx, g.const([1, hq, t, hd], np.int64)])
        ctx = g.op("Transpose", [ctx], perm=[0, 2, 1, 3])
        return g.op("Reshape", [ctx, g.const([1, t, hq * hd], np.int64)])

    # --- graphs -----------------------------------------------------------------------------------

    def build(self, t: int, cache_len: int | None, store: SharedWeights) -> Any:
        """``cache_len=None``: T tokens from position 0, no past (prefill). Else T new tokens after a past of
        ``cache_len - T`` slots, in DeepSparse's KV-cache layout (prompt chunks, and decode with T = 1). The
        weights are referenced in ``store`` (written there by the first graph that uses them)."""
        from onnx import TensorProto, helper

        d, model = self.d, self.model
        hq, hkv, hd, rows = d["heads"], d["kv_heads"], d["head_dim"], self.group * t
        g = _Graph(self.opset, store)
        writes = len(store.entries) == 0
        inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, t])]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, t, d["vocab"]])]
        if cache_len is None:
            cos_np, sin_np = rope_tables(model, t)
            cos, sin = g.const(cos_np.reshape(1, 1, t, hd)), g.const(sin_np.reshape(1, 1, t, hd))
            causal = np.triu(np.full((t, t), MASK_MIN, np.float32), 1)
            mask = g.const(np.tile(causal, (self.group, 1)).reshape(1, 1, rows, t))
            kv_len = t
        else:
            inputs += [
                helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, cache_len]),
                helper.make_tensor_value_info("positions", TensorProto.INT64, [1, t]),
            ]
            cos_np, sin_np = rope_tables(model, cache_len)
            # positions [1, T] → Gather → [1, T, D] → [1, 1, T, D]
            cos = g.unsqueeze(g.op("Gather", [g.weight("rope.cos", lambda: cos_np), "positions"], axis=0), [1])
            sin = g.unsqueeze(g.op("Gather", [g.weight("rope.sin", lambda: sin_np), "positions"], axis=0), [1])
            valid = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
            mask = g.op("Mul", [g.op("Sub", [g.const(1.0), valid]), g.const(MASK_MIN)])
            mask = g.op("Reshape", [mask, g.const([1, 1, 1, cache_len], np.int64)])
            if t > 1:  # new token r sits in slot L-T+r and sees the slots up to its own
                causal = np.triu(np.full((t, cache_len), MASK_MIN, np.float32), cache_len - t + 1)
                mask = g.op("Add", [mask, g.const(np.tile(causal, (self.group, 1)).reshape(1, 1, rows, cache_len))])
            kv_len = cache_len
        embed = f"{self.adapter.embed_path}.weight"
        embed_name = g.weight(embed, self.values(embed))
        x = g.op("Gather", [embed_name, "input_ids"], axis=0)
        blocks = self.adapter.blocks(model)
        for i in tqdm(range(len(blocks)), desc="weights.bin blocks", disable=not (self.progress and writes)):
            p, block = self.adapter.block_prefix(i), blocks[i]
            att, mlp = block.self_attn, block.mlp
            h = self.rmsnorm(g, x, f"{p}.input_layernorm.weight")
            key, value = f"present.{i}.key", f"present.{i}.value"
            # no past: the present tensors are made under their output names (no Identity, see the docstring)
            kout, vout = (key, value) if cache_len is None else (None, None)
            q = self.heads(g, self.linear(g, h, att.q_proj, f"{p}.self_attn.q_proj"), hq, t)
            q = self.rope(g, q, cos, sin)
            k = self.heads(g, self.linear(g, h, att.k_proj, f"{p}.self_attn.k_proj"), hkv, t)
            k = self.rope(g, k, cos, sin, out=kout)
            v = self.heads(g, self.linear(g, h, att.v_proj, f"{p}.self_attn.v_proj"), hkv, t, out=vout)
            if cache_len is not None:
                for name in (f"past_key_values.{i}.key", f"past_key_values.{i}.value"):
                    inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, hkv, cache_len - t, hd]))
                k = g.op("Concat", [f"past_key_values.{i}.key", k], out=key, axis=2)
                v = g.op("Concat", [f"past_key_values.{i}.value", v], out=value, axis=2)
            for name in (key, value):
                outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, hkv, kv_len, hd]))
            a = self.attention(g, q, k, v, mask, t)
            x = g.op("Add", [x, self.linear(g, a, att.o_proj, f"{p}.self_attn.o_proj")])
            h = self.rmsnorm(g, x, f"{p}.post_attention_layernorm.weight")
            gate = self.linear(g, h, mlp.gate_proj, f"{p}.mlp.gate_proj")
            up = self.linear(g, h, mlp.up_proj, f"{p}.mlp.up_proj")
            act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])  # silu(gate) · up
            x = g.op("Add", [x, self.linear(g, act, mlp.down_proj, f"{p}.mlp.down_proj")])
        norm = f"{self.adapter.norm_path}.weight"
        x = self.rmsnorm(g, x, norm)
        if self.tied:  # the embedding transposed in the graph (stored once; DeepSparse folds it)
            g.op("MatMul", [x, g.op("Transpose", [embed_name], perm=[1, 0])], out="logits")
        else:
            head = self.values("lm_head.weight", transpose=True)
            g.op("MatMul", [x, g.weight(weight_name("lm_head"), head)], out="logits")
        graph = helper.make_graph(g.nodes, "prefill" if cache_len is None else f"cached_{t}", inputs, outputs, g.inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="slimpack")
        proto.ir_version = IR_VERSION
        return proto


def export_deepsparse(
    model: nn.Module,
    out_dir: Path,
    prefill_len: int = 512,
    cache_len: int = 1024,
    prompt_len: int = 64,
    builder: GraphBuilder | None = None,
) -> dict[str, Any]:
    """Write ``prefill.onnx``, ``prompt.onnx``, ``decode.onnx``, ``weights.bin`` and ``deepsparse.json`` (what the
    worker reads) into the empty directory ``out_dir``; returns the details for the export manifest.
    ``builder``: where the weights come from (default: ``model``'s own, `GraphBuilder.of_model`)."""
    if not 0 < prefill_len < cache_len:
        raise SlimpackError(f"prefill_len ({prefill_len}) must be positive and below cache_len ({cache_len})")
    if prompt_len % 4 or not 0 < 4 * prompt_len <= cache_len:
        raise SlimpackError(
            f"prompt_len ({prompt_len}) must be a multiple of 4 and at most cache_len / 4 ({cache_len // 4}): "
            "DeepSparse's internal KV cache gives wrong logits for larger prompt chunks"
        )
    hf = model.config
    window = getattr(hf, "sliding_window", None) if getattr(hf, "use_sliding_window", True) else None
    if window and window < cache_len:
        raise SlimpackError(f"cache_len ({cache_len}) exceeds the model's sliding window ({window}), not modelled here")
    import onnx

    builder = builder or GraphBuilder.of_model(model)
    out_dir = Path(out_dir)
    weights_file = SharedWeights(out_dir / WEIGHTS_FILE)
    try:
        for file, t, length in (
            (PREFILL_FILE, prefill_len, None),
            (PROMPT_FILE, prompt_len, cache_len),
            (DECODE_FILE, 1, cache_len),
        ):
            proto = builder.build(t, length, weights_file)  # one graph in memory at a time, weights by reference
            onnx.save_model(proto, str(out_dir / file))
            outputs = [o.name for o in proto.graph.output]
            del proto
    finally:
        weights_file.close()
    linears = adapter_for(model).named_linears(model)
    weights = {name: weight_name(name) for name in linears}
    config = {
        "prefill": PREFILL_FILE,
        "prompt": PROMPT_FILE,
        "decode": DECODE_FILE,
        "prefill_len": prefill_len,
        "prompt_len": prompt_len,
        "cache_len": cache_len,
        "outputs": outputs,  # decode's (prompt's are the same)
        **builder.d,
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return {
        "files": [PREFILL_FILE, PROMPT_FILE, DECODE_FILE, WEIGHTS_FILE, CONFIG_FILE],
        "opset": OPSET,
        "ir_version": IR_VERSION,
        "prefill_len": prefill_len,
        "prompt_len": prompt_len,
        "cache_len": cache_len,
        "weights": weights,
    }


def _references(path: Path, names: set[str]) -> dict[str, Any]:
    """Where each initializer ``names`` of an ONNX file lies: its external-data entries (or its inline bytes)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {
        t.name: tuple((e.key, e.value) for e in t.external_data) or t.raw_data
        for t in proto.graph.initializer
        if t.name in names
    }


def count_zeros(out_dir: Path, weights: dict[str, str]) -> ZeroCounts:
    """Zeros of each prunable weight as the graphs read it back: all three graphs must reference the same bytes
    of ``weights.bin`` for it (checked), which are counted once, memory-mapped."""
    out_dir = Path(out_dir)
    names = set(weights.values())
    refs = [_references(out_dir / file, names) for file in (PREFILL_FILE, PROMPT_FILE, DECODE_FILE)]
    if any(r != refs[0] for r in refs[1:]) or set(refs[0]) != names:
        raise RuntimeError(f"the graphs in {str(out_dir)!r} do not read the same weights; export it again")
    return onnx_initializer_zeros(out_dir / PREFILL_FILE, weights)


class DeepSparseExporter:
    """``--format deepsparse``: fp32 static-shape ONNX graphs for DeepSparse 1.8.0 (sparse CPU kernels)."""

    engine = "deepsparse"
    per_layer_shapes = False  # one head count and FFN width for every layer
    model_directory = False

    def __init__(self, prefill_len: int = 512, cache_len: int = 1024, prompt_len: int = 64) -> None:
        self.prefill_len, self.cache_len, self.prompt_len = prefill_len, cache_len, prompt_len

    def check_source(self, model_dir: Path) -> None:
        kind = checkpoint_kind(model_dir)
        if kind.quantized:
            raise SlimpackError(
                f"{str(model_dir)!r} is a quantized checkpoint; the deepsparse format exports the fp model it came from"
            )
        if kind.per_layer_shapes and not self.per_layer_shapes:
            raise SlimpackError(
                "the deepsparse graph builder takes one head count and FFN width for all layers, and this model is "
                f"{kind.name}-pruned (per-layer shapes); export it with --format onnx (onnxruntime runs it)"
            )

    def export(
        self, loaded: LoadedModel, model_dir: Path, out: Path, cache: GraphCache | None = None
    ) -> dict[str, Any]:
        return export_deepsparse(loaded.model, out, self.prefill_len, self.cache_len, self.prompt_len)

    def export_streamed(self, loaded: LoadedModel, out: Path, progress: bool = True) -> dict[str, Any]:
        builder = GraphBuilder.of_checkpoint(loaded, progress)
        details = export_deepsparse(loaded.model, out, self.prefill_len, self.cache_len, self.prompt_len, builder)
        return {**details, "streamed": True}

    def count_zeros(self, out: Path, details: dict[str, Any]) -> ZeroCounts:
        return count_zeros(out, details["weights"])
