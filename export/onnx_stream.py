"""ONNX export of a model that never sits in memory whole: the graph traced on a weightless skeleton, the
weights written one tensor at a time into the external data file.

1. **Graph** (`skeleton_graph`): the model is built from its config on the meta device and traced with the same
   wrapper, inputs and dynamic axes as `export.onnx_kv` (``torch.onnx.export(dynamo=True)``, eager attention),
   without the optimizer. The trace holds no data: each parameter becomes an initializer *bound* to its
   tensor (`export.graph_cache.Bindings`). A linear's weight reaches its ``MatMul`` through a ``Transpose``,
   which the in-memory export constant-folds; here the transpose is folded by name instead — the initializer
   ``{module}.weight_t`` is bound to ``{module}.weight``, transposed. Buffers computed from the config (rope's
   ``inv_freq``) are stored inline. Then onnxscript's optimizer and fusions run as `torch.onnx` runs them,
   except that no node reading a bound initializer is folded (the data is not there).
2. **Weights** (`write_external`): every external initializer is a `Payload` (name, dtype, shape and how to
   make its values). Offsets are assigned in graph order, ``model.onnx`` is written with the references, then
   ``model.onnx.data`` tensor by tensor: each read from the checkpoint's shards (`prune.lazy`, decoded by its
   kind's codec), made fp32, transposed where bound so, written and dropped. Peak memory: a few copies of the
   largest tensor (as stored, in fp32, transposed).

For onnx-int4 (`export_streamed_int4`) each quantized linear's ``MatMul`` is swapped for ``MatMulNBits`` as in
the in-memory export (`export.onnx_int4.swap_matmul`); its B / scales / zero_points are payloads made from the
checkpoint's packed integers one linear at a time. The skeleton graph is traced for every streamed export (the
graph cache binds initializers by their values, which a skeleton does not have).

The file holds the same operators on the same values as the in-memory export (onnxruntime's outputs are
compared in tests/integration/test_export_stream.py); it is not byte-identical (node names, folding order).
Zero counts read the file back one initializer at a time, memory-mapped (`export.onnx_kv.initializer_arrays`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from export.graph_cache import Bindings
from export.onnx_int4 import NBitsLayout, nbits_tensors, swap_matmul
from export.onnx_kv import (
    ATTENTION,
    ONNX_FILE,
    WEIGHT_T,
    WRAPPER_PREFIX,
    KVCacheWrapper,
    data_file,
    dynamic_shapes,
    example_inputs,
    graph_details,
    input_names,
    kv_shape,
    output_names,
)
from prune.architecture import adapter_of
from prune.lazy import LazyCheckpoint, fresh, skeleton
from quant.checkpoint import SUFFIXES
from quant.pack import from_gptq
from quant.spec import QuantSpec

log = logging.getLogger(__name__)

DATA_FILE = data_file(Path(ONNX_FILE)).name
PLACEHOLDER = "__unwritten__"  # the location of external tensors until `write_external` places them


@dataclass(frozen=True)
class Payload:
    """One external initializer of the file being written."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    make: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def skeleton_graph(lazy: LazyCheckpoint, opset: int | None = None) -> tuple[Any, Bindings, dict[str, Any]]:
    """The KV-cache graph of ``lazy``'s architecture as an ONNX ``ModelProto`` whose bound initializers are
    external references not yet written; their bindings; and the manifest's details (as `onnx_kv`'s)."""
    import onnx_ir as ir
    import onnxscript.optimizer
    import onnxscript.rewriter.onnx_fusions

    start = time.perf_counter()
    config = lazy.model.config
    model = skeleton(config, torch.float32)  # fp32, as the in-memory export, whatever the checkpoint stores
    model.set_attn_implementation(ATTENTION)
    layers = kv_shape(config)[0]
    with torch.no_grad():
        program = torch.onnx.export(
            KVCacheWrapper(model).eval(),
            tuple(t.to("meta") for t in example_inputs(config)),
            dynamo=True,
            input_names=input_names(layers),
            output_names=output_names(layers),
            dynamic_shapes=dynamic_shapes(config),
            opset_version=opset,
            optimize=False,
            verbose=False,
        )
    graph = program.model.graph
    computed = _computed_buffers(model, lazy)
    bindings = _bind(graph, computed)
    bound = {graph.initializers[name] for name in bindings}
    onnxscript.optimizer.optimize_ir(
        program.model, should_fold=lambda node: False if any(v in bound for v in node.inputs) else None
    )
    onnxscript.rewriter.onnx_fusions.fuse(program.model)
    bindings = {name: b for name, b in bindings.items() if name in graph.initializers}  # unused ones pruned
    proto = ir.serde.serialize_model(program.model)
    log.info("traced the %d-block skeleton graph in %.1f s (%d nodes)", layers,
             time.perf_counter() - start, len(proto.graph.node))  # fmt: skip
    weights = {
        source[len(WRAPPER_PREFIX) :].removesuffix(".weight"): name for name, (source, flip) in bindings.items() if flip
    }
    tied = 1 if adapter_of(config).tied_embeddings(config) else None  # read by Gather and (lm_head) Transpose
    details = {**graph_details(proto, config, weights, tied), "streamed": True}
    return proto, bindings, details


def _computed_buffers(model: torch.nn.Module, lazy: LazyCheckpoint) -> dict[str, torch.Tensor]:
    """Buffers the checkpoint does not store, computed from the config (rope's ``inv_freq``: its module made
    afresh, `prune.lazy.fresh`), by traced name."""
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        computed = [leaf for leaf, _ in module.named_buffers(recurse=False) if not lazy.stored(f"{name}.{leaf}")]
        if computed:
            real = fresh(module, lazy.model.config)
            for leaf in computed:
                out[f"{WRAPPER_PREFIX}{name}.{leaf}"] = getattr(real, leaf).detach()
    return out


def _bind(graph: Any, computed: dict[str, torch.Tensor]) -> Bindings:
    """Fold each single-use 2-D ``Transpose`` of a parameter into a ``{module}.weight_t`` initializer, make every
    parameter initializer an unwritten external reference, store computed buffers inline; the bindings."""
    import onnx_ir as ir

    bindings: Bindings = {}
    for name, value in list(graph.initializers.items()):
        if name in computed:
            value.const_value = ir.tensor(computed[name].numpy(), name=name)
            continue
        uses = list(value.uses())
        node = uses[0].node if len(uses) == 1 else None
        perm = node.attributes.get_ints("perm", None) if node is not None and node.op_type == "Transpose" else None
        if (
            node is not None
            and node.op_type == "Transpose"
            and len(value.shape) == 2
            and list(perm or [1, 0]) == [1, 0]
        ):
            new = name[len(WRAPPER_PREFIX) :].removesuffix(".weight") + WEIGHT_T
            folded = ir.Value(name=new, shape=ir.Shape(list(reversed(value.shape))), type=value.type)
            folded.const_value = _unwritten(new, value.dtype, folded.shape)
            graph.register_initializer(folded)
            node.outputs[0].replace_all_uses_with(folded)
            graph.remove(node, safe=True)
            graph.initializers.pop(name)
            bindings[new] = (name, True)
        else:
            value.const_value = _unwritten(name, value.dtype, value.shape)
            bindings[name] = (name, False)
    return bindings


def _unwritten(name: str, dtype: Any, shape: Any) -> Any:
    import onnx_ir as ir

    class Unwritten(ir.ExternalTensor):
        """A reference to data not written yet. The optimizer's initializer deduplication compares every
        initializer's bytes: this one's are its name, so it equals no other (equal weights stay two tensors,
        as the checkpoint stores them)."""

        def tobytes(self) -> bytes:
            return self.name.encode()

    return Unwritten(PLACEHOLDER, 0, 0, dtype, shape=ir.Shape(list(shape)), name=name)


def write_external(proto: Any, payloads: list[Payload], out: Path, progress: bool = True) -> int:
    """Write ``proto`` to ``out / model.onnx`` and ``payloads`` (in order) to ``out / model.onnx.data``, each
    initializer pointing at its bytes; returns the data file's size. Nothing else in ``proto`` may be
    external and unwritten."""
    from onnx import TensorProto

    inits = {t.name: t for t in proto.graph.initializer}
    offset = 0
    for p in payloads:
        tensor = inits[p.name]
        del tensor.external_data[:]
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", DATA_FILE), ("offset", str(offset)), ("length", str(p.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        offset += p.nbytes
    left = [t.name for t in proto.graph.initializer if _location(t) == PLACEHOLDER]
    if left:
        raise RuntimeError(f"initializers without data: {left[:3]}")
    total = offset
    with (out / DATA_FILE).open("wb") as fh, tqdm(total=total, unit="B", unit_scale=True, desc="onnx weights",
                                                 disable=not progress) as bar:  # fmt: skip
        for p in payloads:
            array = np.ascontiguousarray(p.make(), dtype=p.dtype)
            if tuple(array.shape) != tuple(p.shape):
                raise RuntimeError(f"{p.name}: made {list(array.shape)}, the graph says {list(p.shape)}")
            fh.write(memoryview(array.reshape(-1).view(np.uint8)))
            bar.update(p.nbytes)
        fh.flush()
        os.fsync(fh.fileno())
    _write_proto(proto, out / ONNX_FILE)
    return total


def _write_proto(proto: Any, path: Path) -> None:
    """The graph alone (its weights are in the data file): small, so no external-data handling."""
    with path.open("wb") as fh:
        fh.write(proto.SerializeToString())


def _location(tensor: Any) -> str | None:
    for entry in tensor.external_data:
        if entry.key == "location":
            return entry.value
    return None


def bound_payloads(proto: Any, bindings: Bindings, lazy: LazyCheckpoint, skip: set[str] = frozenset()) -> list[Payload]:
    """A `Payload` for each bound initializer of ``proto`` (graph order), read from ``lazy`` as fp32."""
    from onnx import helper

    payloads = []
    for tensor in proto.graph.initializer:
        if tensor.name not in bindings or tensor.name in skip:
            continue
        source, flip = bindings[tensor.name]
        payloads.append(
            Payload(
                tensor.name,
                helper.tensor_dtype_to_np_dtype(tensor.data_type),
                tuple(tensor.dims),
                _reader(lazy, lazy.stored_name(source[len(WRAPPER_PREFIX) :]), flip),
            )  # fmt: skip
        )
    return payloads


def _reader(lazy: LazyCheckpoint, name: str, flip: bool) -> Callable[[], np.ndarray]:
    def make() -> np.ndarray:
        tensor = lazy.read([name], torch.float32, "cpu")[name]
        return (tensor.T if flip else tensor).contiguous().numpy()

    return make


def export_streamed_onnx(lazy: LazyCheckpoint, out: Path, opset: int | None, progress: bool) -> dict[str, Any]:
    """``--format onnx --stream``: the fp32 KV-cache graph with every weight written from the shards."""
    proto, bindings, details = skeleton_graph(lazy, opset)
    size = write_external(proto, bound_payloads(proto, bindings, lazy), out, progress)
    return {**details, "external_data": DATA_FILE, "external_bytes": size}


def export_streamed_int4(
    lazy: LazyCheckpoint, spec: QuantSpec, fmt: str, out: Path, opset: int | None, accuracy_level: int,
    progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """``--format onnx-int4 --stream``: the graph with each quantized linear swapped for ``MatMulNBits``
    (`export.onnx_int4.swap_matmul`), its packed tensors made from the checkpoint's integers (no re-quantization)
    one linear at a time, as the data file reaches them."""
    from onnx import helper

    proto, bindings, details = skeleton_graph(lazy, opset)
    modules = sorted(name.removesuffix(".qweight") for name in lazy.files if name.endswith(".qweight"))
    payloads = {p.name: p for p in bound_payloads(proto, bindings, lazy)}
    placed: dict[str, dict[str, Any]] = {}
    for module in modules:
        g_idx = lazy.read_stored([f"{module}.g_idx"])[f"{module}.g_idx"].numpy()
        layout = NBitsLayout.of(spec, g_idx, int(lazy.headers[f"{module}.scales"]["shape"][1]))
        placed[module] = swap_matmul(proto, module, details["weights"].get(module), layout, accuracy_level)
        payloads.pop(details["weights"][module])
        arrays = _NBitsArrays(lazy, module, spec, fmt, layout)
        for key, (shape, dtype) in layout.shapes().items():
            name = placed[module][key]
            tensor = proto.graph.initializer.add()
            tensor.name, tensor.data_type = name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
            tensor.dims.extend(shape)
            payloads[name] = Payload(name, np.dtype(dtype), shape, partial(arrays.take, key))
    order = [payloads[t.name] for t in proto.graph.initializer if t.name in payloads]
    size = write_external(proto, order, out, progress)
    weights = {m: n for m, n in details["weights"].items() if m not in placed}
    return {**details, "weights": weights, "int4": placed, "accuracy_level": accuracy_level,
            "external_data": DATA_FILE, "external_bytes": size}  # fmt: skip


class _NBitsArrays:
    """One linear's MatMulNBits tensors, made from its four GPTQ tensors when the first is asked for and each
    dropped once taken (the writer takes B, scales and zero_points one after the other)."""

    def __init__(self, lazy: LazyCheckpoint, module: str, spec: QuantSpec, fmt: str, layout: Any) -> None:
        self.lazy, self.module, self.spec, self.fmt, self.layout = lazy, module, spec, fmt, layout
        self.arrays: dict[str, np.ndarray] | None = None

    def take(self, key: str) -> np.ndarray:

        if self.arrays is None:
            stored = self.lazy.read_stored([f"{self.module}.{s}" for s in SUFFIXES])
            qw = from_gptq({s: stored[f"{self.module}.{s}"] for s in SUFFIXES}, self.spec, self.fmt)
            self.arrays = nbits_tensors(qw, self.layout)
        return self.arrays.pop(key)
