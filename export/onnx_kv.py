"""ONNX (fp32) with KV cache, in the layout optimum's ``ORTModelForCausalLM`` loads.

One graph serves prefill and decode (``past`` may have length 0):

    inputs   input_ids                  int64   [batch, seq]
             attention_mask             int64   [batch, past + seq]
             position_ids               int64   [batch, seq]
             past_key_values.{i}.key    float32 [batch, n_kv_heads_i, past, head_dim] (and .value)
    outputs  logits                     float32 [batch, seq, vocab]
             present.{i}.key            float32 [batch, n_kv_heads_i, past + seq, head_dim] (and .value)

``n_kv_heads_i`` is layer ``i``'s: the config's, or what a structured prune left of a multi-head model's
(`prune.structured.shapes.layer_kv_heads`). Such a graph runs in `runtime_bench.engines.ort`, which reads each
input's width; optimum builds every layer's empty cache from the config's one ``num_key_value_heads``.

Made with the dynamo exporter (``torch.onnx.export(dynamo=True)``, onnxscript) on `KVCacheWrapper`, which
turns the flat past tensors into a transformers ``DynamicCache`` and the returned cache back into flat
``present`` tensors. Weights stay fp32 initializers, so pruned zeros stay exactly zero (counted from the
file by `count_zeros`, after `name_linear_weights` names them ``{module}.weight_t``). A tied embedding is
stored once (`tied_embedding_copies` checks it).
Models above 2 GB are saved with external data (``model.onnx.data``).

Decode speed: the graph is traced with transformers' *eager* attention, not SDPA. The exporter decomposes
SDPA into ``q·√s`` and ``kᵀ·√s`` before the product, so every decode step transposes and scales the whole
(GQA-expanded) key cache; the eager form is ``MatMul(q, Transpose(k))``, which onnxruntime fuses into
one ``FusedMatMul(transB=1)``. Measured on SmolLM2 (ORT profile, 20 decode steps after 512 tokens, 2 threads):
Transpose time 4.65 → 0.60 ms/step, 2094 → 1764 nodes after ORT's optimizer, and the decode gap to
optimum-onnx's export closed (docs/results/export.md).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.graph_cache import GraphCache, bind, fill, model_tensors, template_key
from prune.architecture import adapter_of
from prune.structured.shapes import layer_kv_heads

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3  # protobuf's 2 GB limit
# transformers' eager attention: ``matmul(q, kᵀ)`` directly, which onnxruntime fuses (FusedMatMul, transB);
# the SDPA decomposition scales k before the product and transposes the whole cache every step.
ATTENTION = "eager"
WRAPPER_PREFIX = "model."  # `KVCacheWrapper` holds the model as ``.model``: the exporter's tensor names
WEIGHT_T = ".weight_t"  # `name_linear_weights`: ``{module}.weight_t`` holds ``{module}.weight`` transposed


def kv_shape(config: Any) -> tuple[int, list[int], int]:
    """``(layers, each layer's KV heads, head_dim)`` of a decoder config."""
    return config.num_hidden_layers, layer_kv_heads(config), adapter_of(config).head_dim(config)


def input_names(layers: int) -> list[str]:
    past = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past]


def output_names(layers: int) -> list[str]:
    return ["logits", *[f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]]


class KVCacheWrapper(nn.Module):
    """``forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present)`` with flat KV tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layers = model.config.num_hidden_layers

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        present: list[torch.Tensor] = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def example_inputs(config: Any, batch: int = 2, seq: int = 3, past: int = 4) -> tuple[torch.Tensor, ...]:
    """Example inputs for tracing; sizes ≥ 2 so that no dynamic dimension is specialized to 0 or 1."""
    layers, kv_heads, head_dim = kv_shape(config)
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    positions = torch.arange(past, past + seq).expand(batch, seq).contiguous()
    kv = [torch.zeros(batch, n, past, head_dim) for n in kv_heads for _ in ("key", "value")]
    return (ids, mask, positions, *kv)


def export_onnx_kv(
    model: nn.Module, out_dir: Path, opset: int | None = None, cache: GraphCache | None = None
) -> dict[str, Any]:
    """Export ``model`` (fp32, eval) to ``out_dir / model.onnx``; returns what the manifest records."""
    proto, details = onnx_kv_proto(model, opset, cache)
    save_onnx(proto, out_dir / ONNX_FILE)
    return details


def onnx_kv_proto(
    model: nn.Module, opset: int | None = None, cache: GraphCache | None = None
) -> tuple[Any, dict[str, Any]]:
    """The KV-cache graph of ``model`` as an in-memory ``ModelProto`` (weights named) and its details.

    With a ``cache`` (`export.graph_cache`), a graph traced for a model of the same shape is reused and only
    the weights are written; a newly traced graph is stored there for the next export."""
    tensors = model_tensors(model, WRAPPER_PREFIX)
    key = template_key(model, WRAPPER_PREFIX, {"opset": opset, "attention": ATTENTION, "exporter": _source_digest()})
    cached = cache.load(key) if cache is not None else None
    if cached is not None:
        template, bindings, details = cached
        log.info("reusing the exported graph %s… (same architecture); writing the weights only", key[:12])
        proto = fill(template, bindings, tensors)
        return proto, {**details, "tied_embedding_copies": tied_embedding_copies(proto, model), "graph": key}
    proto, details = _trace(model, opset)
    if cache is not None:
        parameters = model_tensors(model, WRAPPER_PREFIX, buffers=False)
        bindings = bind(proto, tensors, parameters, _transposed_source)
        if bindings is not None:
            cache.store(key, proto, bindings, {k: v for k, v in details.items() if k != "tied_embedding_copies"})
    return proto, {**details, "graph": key}


def _source_digest() -> str:
    """The exporter's own code is part of the graph's key (a change here must not reuse an old graph)."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _transposed_source(initializer: str) -> str | None:
    """The tensor a ``{module}.weight_t`` initializer holds transposed (named as `model_tensors` names it)."""
    if initializer.endswith(WEIGHT_T):
        return WRAPPER_PREFIX + initializer[: -len(WEIGHT_T)] + ".weight"
    return None


def dynamic_shapes(config: Any) -> dict[str, Any]:
    """The dynamic axes of `KVCacheWrapper`'s inputs (batch, sequence, past, total length)."""
    from torch.export import Dim

    layers = kv_shape(config)[0]
    batch, seq, past, total = Dim("batch"), Dim("sequence_length"), Dim("past_sequence_length"), Dim("total")
    return {
        "input_ids": {0: batch, 1: seq},
        "attention_mask": {0: batch, 1: total},
        "position_ids": {0: batch, 1: seq},
        "past": tuple({0: batch, 2: past} for _ in range(2 * layers)),
    }


def _trace(model: nn.Module, opset: int | None) -> tuple[Any, dict[str, Any]]:
    config = model.config
    layers = kv_shape(config)[0]
    dynamic = dynamic_shapes(config)
    wrapper = KVCacheWrapper(model).eval()
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION)
    try:
        program = _export(wrapper, config, layers, dynamic, opset)
    finally:
        model.set_attn_implementation(previous)
    proto = program.model_proto
    weights = name_linear_weights(proto, model)
    return proto, graph_details(proto, config, weights, tied_embedding_copies(proto, model))


def graph_details(proto: Any, config: Any, weights: dict[str, str], tied_copies: int | None) -> dict[str, Any]:
    """What ``export.json`` records about a KV-cache graph (in-memory or streamed export)."""
    import onnx

    layers, kv_heads, head_dim = kv_shape(config)
    return {
        "file": ONNX_FILE,
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": proto.ir_version,
        "layers": layers,
        "kv_heads": kv_heads[0] if len(set(kv_heads)) == 1 else kv_heads,  # one count, or one per layer
        "head_dim": head_dim,
        "attention": ATTENTION,
        "tied_embedding_copies": tied_copies,
        "weights": weights,
        "onnx": onnx.__version__,
    }


def _export(wrapper: nn.Module, config: Any, layers: int, dynamic: dict[str, Any], opset: int | None) -> Any:
    with torch.no_grad():
        return torch.onnx.export(
            wrapper,
            example_inputs(config),
            dynamo=True,
            input_names=input_names(layers),
            output_names=output_names(layers),
            dynamic_shapes=dynamic,
            opset_version=opset,
            optimize=True,
            verbose=False,
        )


def data_file(path: Path) -> Path:
    """Where an ONNX file's external tensors go: ``model.onnx`` → ``model.onnx.data``."""
    return path.with_name(path.name + ".data")


def save_onnx(proto: Any, path: Path) -> None:
    """Save ``proto`` to ``path``; tensors go to `data_file` when the model exceeds protobuf's 2 GB."""
    import onnx

    size = sum(_initializer_bytes(t) for t in proto.graph.initializer)
    if size > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(proto, str(path), save_as_external_data=True, location=data_file(path).name)
    else:
        onnx.save_model(proto, str(path))


def _initializer_bytes(tensor: Any) -> int:
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return int(np.prod(tensor.dims, dtype=np.int64)) * 4


def name_linear_weights(proto: Any, model: nn.Module) -> dict[str, str]:
    """Rename the exporter's anonymous ``[in, out]`` weight initializers to ``{module}.weight_t``.

    The dynamo exporter folds each ``nn.Linear``'s transpose into a new initializer (``val_83``); we find it by
    content (sha256 of the bytes of ``weight.T``) so that later passes (zero counts, int4, tied embeddings)
    can address weights by module name. Returns ``{module name: initializer name}``.
    """
    from onnx import numpy_helper

    def digest(array: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()

    by_digest: dict[str, list[Any]] = {}
    for tensor in proto.graph.initializer:
        if len(tensor.dims) == 2:
            by_digest.setdefault(digest(numpy_helper.to_array(tensor)), []).append(tensor)
    renames: dict[str, str] = {}
    found: dict[str, str] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        candidates = [t for t in by_digest.get(digest(module.weight.detach().numpy().T), []) if t.name not in renames]
        if not candidates:
            continue
        tensor = candidates[0]
        new = name + WEIGHT_T
        renames[tensor.name] = new
        found[name] = new
    for tensor in proto.graph.initializer:
        tensor.name = renames.get(tensor.name, tensor.name)
    for node in proto.graph.node:
        for i, value in enumerate(node.input):
            if value in renames:
                node.input[i] = renames[value]
    return found


def tied_embedding_copies(proto: Any, model: nn.Module) -> int | None:
    """How many copies of a tied embedding the file holds (``None`` if the model does not tie them).

    The dynamo exporter keeps the tied ``[vocab, hidden]`` parameter once and feeds the lm_head through a
    ``Transpose`` node, which onnxruntime constant-folds at session creation (measured: same decode time as
    a graph with a pre-transposed copy), so the file stores it once at no run-time cost.
    """
    from onnx import numpy_helper

    if not adapter_of(model.config).tied_embeddings(model.config):
        return None
    embed = model.get_input_embeddings().weight.detach().numpy()
    wanted = {hashlib.sha256(a.tobytes()).hexdigest() for a in (embed, np.ascontiguousarray(embed.T))}
    shapes = {embed.shape, embed.shape[::-1]}
    return sum(
        1
        for t in proto.graph.initializer
        if tuple(t.dims) in shapes and hashlib.sha256(numpy_helper.to_array(t).tobytes()).hexdigest() in wanted
    )


def initializer_arrays(path: Path) -> dict[str, Callable[[], np.ndarray]]:
    """``{initializer: read}`` of an ONNX file: each ``read()`` gives that initializer's values, memory-mapped
    from the external data file when it has one, so a file larger than memory is read one tensor at a time."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path), load_external_data=False)

    def reader(tensor: Any) -> Callable[[], np.ndarray]:
        def read() -> np.ndarray:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                return numpy_helper.to_array(tensor)
            info = {e.key: e.value for e in tensor.external_data}
            dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
            count = int(np.prod(tensor.dims, dtype=np.int64))
            return np.memmap(path.parent / info["location"], dtype=dtype, mode="r",
                             offset=int(info.get("offset", 0)), shape=(count,)).reshape(tuple(tensor.dims))  # fmt: skip

        return read

    return {tensor.name: reader(tensor) for tensor in proto.graph.initializer}


def count_zeros(path: Path, weights: dict[str, str]) -> dict[str, dict[str, int]]:
    """Zeros of each exported weight, read back from the ONNX file: ``{module: {zeros, numel}}``."""
    arrays = initializer_arrays(path)
    counts: dict[str, dict[str, int]] = {}
    for module, init in weights.items():
        array = arrays[init]()
        counts[module] = {"zeros": int((array == 0).sum()), "numel": int(array.size)}
    return counts
