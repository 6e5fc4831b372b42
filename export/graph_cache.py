"""Exported graphs reused across models of one shape: trace once, then only write the weights.

Tracing and optimizing a decoder with the dynamo exporter dominates an ONNX export (SmolLM2-135M: 114 s of
the 120 s; half in onnxscript's rewriter), yet the graph depends only on the architecture — the config, the
parameter names, shapes and dtypes, the exporter code and the library versions. A dense model, its pruned
copy and its dequantized GPTQ checkpoint therefore share one graph, and only the initializers differ.

A *template* is that graph with the weights taken out: every initializer that holds a parameter or buffer is
*bound* to it (``{initializer: [tensor name, transposed]}``) and its data cleared; the remaining initializers
are the graph's own small constants (shapes, axes, scalars) and stay. `fill` writes a model's tensors back
into the bound initializers, which gives the proto the exporter would have produced for that model (tested
byte for byte against a direct export on tiny Llama, Qwen2 and Mistral models, dense, pruned and structured).

A graph is only cached when the binding is complete and unambiguous (`bind`): every parameter is bound, every
bound initializer holds exactly its tensor's values, and no unbound initializer or ``Constant`` node is larger
than ``MAX_CONSTANT`` elements — a weight-derived constant folded by the optimizer would break that rule, and
such a graph is exported directly every time instead. The key (`template_key`) is a sha256 over everything the
graph depends on; a template that cannot be read is ignored and replaced. Templates are written atomically
(a temporary file renamed into place), so concurrent exports of one shape at worst trace twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prune.io import umask
from prune.models import cache_root

log = logging.getLogger(__name__)

MAX_CONSTANT = 64  # elements: an unbound initializer or Constant node above this may hold weight data
META_KEY = "slimpack.graph_template"
VERSIONED = ("torch", "transformers", "onnx", "onnxscript", "onnx-ir")
FLOAT = 1  # onnx.TensorProto.FLOAT

Tensors = dict[str, torch.Tensor]
Bindings = dict[str, tuple[str, bool]]  # initializer → (tensor name, transposed)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def template_key(model: nn.Module, prefix: str, extra: dict[str, Any]) -> str:
    """sha256 of what the graph depends on: the config, every tensor's name, shape and dtype, the exporter's
    own settings (``extra``: opset, attention, the source of the exporting module) and library versions."""
    config = model.config.to_dict()  # type: ignore[union-attr]
    for volatile in ("_name_or_path", "transformers_version"):
        config.pop(volatile, None)
    described = {
        "config": config,
        "tensors": [[n, list(t.shape), str(t.dtype)] for n, t in sorted(model_tensors(model, prefix).items())],
        "extra": extra,
        "versions": {p: _version(p) for p in VERSIONED},
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def model_tensors(model: nn.Module, prefix: str, buffers: bool = True) -> Tensors:
    """Every parameter (and buffer) under every name it has (a tied weight appears under each), as the
    exporter names them (``prefix``: the path of the model inside the traced wrapper, e.g. ``"model."``)."""
    named = list(model.named_parameters(remove_duplicate=False))
    if buffers:
        named += list(model.named_buffers(remove_duplicate=False))
    return {prefix + name: tensor for name, tensor in named}


def _array(tensor: torch.Tensor, transposed: bool) -> np.ndarray:
    array = tensor.detach().cpu().numpy()
    return np.ascontiguousarray(array.T if transposed else array)


def _numel(dims: Any) -> int:
    return int(np.prod(list(dims), dtype=np.int64))


def bind(proto: Any, tensors: Tensors, parameters: Tensors, transposed: Callable[[str], str | None]) -> Bindings | None:
    """The bindings of ``proto``'s initializers to ``tensors`` (parameters and buffers), or ``None`` (with the
    reason logged) when the graph cannot be a template: every one of ``parameters`` must be bound (buffers
    follow from the config: rope's ``inv_freq`` is bound when the graph reads it, an unused one is not).
    ``transposed(initializer)`` names the tensor an initializer holds transposed (the exporter's
    ``{module}.weight_t``), or ``None``."""
    from onnx import numpy_helper

    bindings: Bindings = {}
    for init in proto.graph.initializer:
        source = transposed(init.name)
        name, flip = (source, True) if source is not None else (init.name, False)
        tensor = tensors.get(name)
        if tensor is None:
            if _numel(init.dims) > MAX_CONSTANT:
                log.debug("graph not cached: initializer %s (%s) is bound to no tensor", init.name, list(init.dims))
                return None
            continue
        expected = _array(tensor, flip)
        stored = init.data_type == FLOAT and init.HasField("raw_data")  # the layout `fill` writes back
        if not stored or not np.array_equal(numpy_helper.to_array(init), expected):
            log.debug("graph not cached: initializer %s does not hold %s", init.name, name)
            return None
        bindings[init.name] = (name, flip)
    large = [n.name for n in proto.graph.node if n.op_type == "Constant" and _constant_numel(n) > MAX_CONSTANT]
    bound = {id(tensors[name]) for name, _ in bindings.values()}
    unbound = [name for name, t in parameters.items() if id(t) not in bound and t.numel() > 0]
    if large or unbound:
        log.debug("graph not cached: large constants %s, tensors without an initializer %s", large[:3], unbound[:3])
        return None
    return bindings


def _constant_numel(node: Any) -> int:
    return max((_numel(a.t.dims) for a in node.attribute if a.HasField("t")), default=0)


def _without_weights(proto: Any, bindings: Bindings, key: str, details: dict[str, Any]) -> bytes:
    """The serialized template: ``proto`` with its bound initializers' data taken out for the serialization
    and put back after (no copy of the weights is made)."""
    taken = {}
    for init in proto.graph.initializer:
        if init.name in bindings:
            taken[init.name] = init.raw_data
            init.ClearField("raw_data")
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps({"key": key, "bindings": bindings, "details": details})
    try:
        return proto.SerializeToString()
    finally:
        proto.metadata_props.remove(entry)
        for init in proto.graph.initializer:
            if init.name in taken:
                init.raw_data = taken[init.name]


def default_root() -> Path:
    """Where ``slimpack export`` and ``slimpack run`` keep templates: ``$SLIMPACK_CACHE/onnx-graphs``."""
    return cache_root() / "onnx-graphs"


class GraphCache:
    """Templates under ``root`` (one ``{key}.onnx`` file each)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.onnx"

    def load(self, key: str) -> tuple[Any, Bindings, dict[str, Any]] | None:
        """The template of ``key`` (proto, bindings, details), or ``None`` if absent or unreadable."""
        import onnx

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            template = onnx.load(str(path))
            meta = json.loads(next(p.value for p in template.metadata_props if p.key == META_KEY))
            if meta["key"] != key:
                raise ValueError(f"key {meta['key']} in a file named {key}")
        except Exception as exc:  # a damaged cache entry is ignored, then replaced
            log.warning("ignoring unreadable graph template %s (%s); exporting again", path, exc)
            return None
        for entry in list(template.metadata_props):
            if entry.key == META_KEY:
                template.metadata_props.remove(entry)
        bindings = {init: (name, bool(flip)) for init, (name, flip) in meta["bindings"].items()}
        return template, bindings, meta["details"]

    def store(self, key: str, proto: Any, bindings: Bindings, details: dict[str, Any]) -> None:
        """Write the template of ``proto`` atomically; a cache that cannot be written only costs time later."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.root)
            os.fchmod(fd, 0o666 & ~umask())
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(_without_weights(proto, bindings, key, details))
                os.replace(tmp, self.path(key))
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:
            log.warning("could not cache the exported graph in %s (%s); the next export traces again", self.root, exc)


def fill(template: Any, bindings: Bindings, tensors: Tensors) -> Any:
    """``template`` with every bound initializer holding its tensor's values (``template`` is filled in place)."""
    for init in template.graph.initializer:
        if init.name not in bindings:
            continue
        name, flip = bindings[init.name]
        array = _array(tensors[name], flip).astype(np.float32, copy=False)
        if list(array.shape) != list(init.dims):
            raise ValueError(f"{name} has shape {list(array.shape)}, the template's {init.name} {list(init.dims)}")
        init.raw_data = array.tobytes()
    return template
