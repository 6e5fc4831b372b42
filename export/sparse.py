"""``--format sparse`` (slimpack's sparse checkpoint, `export.sparse_format`) and ``--format hf`` (the plain dense
checkpoint back), both written tensor by tensor from the source's shards; and the checkpoint kinds that let every
command read a sparse checkpoint (`prune.checkpoint_kinds.CHECKPOINT_KINDS`: ``sparse``, ``sparse-gptq``).

A sparse checkpoint is a model directory: the source's ``config.json`` with one key added (``slimpack_sparse``:
the format version and the values kind; no ``quantization_config``, which other tools would read), tokenizer
files, and safetensors shards in which each prunable linear's ``weight`` is stored packed (mask or positions,
values, offsets, scales) with its `Layout` in the shard's metadata; every other tensor as the source stores it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from export.base import ZeroCounts
from export.graph_cache import GraphCache
from export.sparse_format import (
    CONFIG_KEY,
    FLOAT_VALUES,
    VALUE_DTYPES,
    VERSION,
    GPTQGrid,
    Layout,
    check,
    decode,
    encode,
    nnz_of,
)
from prune.architecture import adapter_for
from prune.errors import SlimpackError
from prune.io import write_json_atomic
from prune.lazy import LazyCheckpoint, fresh_rotary, read_index
from prune.model_config import drop_remote_code, read_config
from prune.models import LoadedModel, checkpoint_kind
from prune.shards import ShardWriter
from quant.checkpoint import SUFFIXES as GPTQ_SUFFIXES
from quant.checkpoint import read_quantization_config
from quant.grid import group_width
from quant.pack import from_gptq

log = logging.getLogger(__name__)

SUFFIXES = ("mask", "positions", "row_offsets", "values", "scales", "zeros", "perm")  # every stored part's name
SHARD_BYTES = 2 * 2**30


# --- reading: the checkpoint kinds and their codec ----------------------------------------------------------


@dataclass
class SparseCodec:
    """A `prune.lazy.TensorCodec`: a packed weight is decoded from its stored parts (`decode`). Its `Layout`s are
    read from the shards' metadata when the skeleton is checked (`shape`), before any tensor is read."""

    layouts: dict[str, Layout] = field(default_factory=dict)

    def prepare(self, config: Any) -> None:
        vars(config).pop(CONFIG_KEY, None)  # a transformers config keeps an unknown key as an attribute

    def sources(self, name: str, stored: dict[str, Any]) -> tuple[str, ...]:
        if f"{name}.values" not in stored:
            return (name,)
        return tuple(f"{name}.{s}" for s in SUFFIXES if f"{name}.{s}" in stored)

    def shape(self, name: str, headers: dict[str, dict[str, Any]]) -> list[int]:
        if f"{name}.values" not in headers:
            return list(headers[name].get("shape", []))
        layout = self.layout(name, headers)
        want = layout.expected(act_order=f"{name}.perm" in headers)
        for suffix, (shape, dtype) in want.items():
            header = headers.get(f"{name}.{suffix}")
            if header is None:
                raise SlimpackError(
                    f"the packed weight {name!r} has no '{suffix}'; the artifact is damaged — export it again"
                )
            if header.get("dtype") != dtype or (shape is not None and header.get("shape") != shape):
                raise SlimpackError(
                    f"'{name}.{suffix}' is {header.get('dtype')} {header.get('shape')}, its {layout.layout}/"
                    f"{layout.values} layout needs {dtype} {shape or '[n]'}; the artifact is damaged — export it again"
                )
        return list(layout.shape)

    def layout(self, name: str, headers: dict[str, dict[str, Any]]) -> Layout:
        metadata = headers[f"{name}.values"].get("metadata") or {}
        self.layouts[name] = Layout.from_json(metadata.get(name), name)
        return self.layouts[name]

    def decode(self, name: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        if len(tensors) == 1 and name in tensors:
            return tensors[name]
        return decode(name, self.layouts[name], {k.rpartition(".")[2]: v for k, v in tensors.items()})

    def packed(self, lazy: LazyCheckpoint, name: str) -> tuple[Layout, dict[str, torch.Tensor]] | None:
        """The layout and stored parts (checked, `check`) of the weight ``name``; None if stored dense."""
        if name not in self.layouts:
            return None
        sources = self.sources(name, lazy.files)
        raw = lazy.read_stored(list(sources))
        tensors = {k.rpartition(".")[2]: v for k, v in raw.items()}
        check(name, self.layouts[name], tensors)
        return self.layouts[name], tensors


@dataclass(frozen=True)
class SparseCheckpoint:
    """The checkpoint kind of a directory written by ``export --format sparse`` (values ``gptq``: quantized)."""

    name: str
    quantized: bool
    per_layer_shapes: bool = True

    def claims(self, config: dict[str, Any]) -> bool:
        entry = config.get(CONFIG_KEY)
        return isinstance(entry, dict) and (entry.get("values") == "gptq") == self.quantized

    def load(self, path: Path, dtype: torch.dtype) -> tuple[torch.nn.Module, dict[str, Any]]:
        lazy = LazyCheckpoint.open(path, self.codec(read_config(path)))
        lazy.materialize(lazy.model, "", dtype, "cpu")
        fresh_rotary(lazy.model, adapter_for(lazy.model).rotary_path)
        if adapter_for(lazy.model).tied_embeddings(lazy.model.config):
            lazy.model.tie_weights()
        return lazy.model.eval(), {}

    def codec(self, config: dict[str, Any]) -> SparseCodec:
        entry = config.get(CONFIG_KEY) or {}
        if entry.get("version") != VERSION:
            raise SlimpackError(
                f"this sparse checkpoint is version {entry.get('version')!r}; this slimpack reads version {VERSION} "
                "— export it again with this slimpack"
            )
        return SparseCodec()


SPARSE = SparseCheckpoint("sparse", quantized=False)  # entry points ``slimpack.checkpoint_kinds``: sparse,
SPARSE_GPTQ = SparseCheckpoint("sparse-gptq", quantized=True)  # sparse-gptq


def open_source(model_dir: Path) -> LazyCheckpoint:
    """The source model's skeleton and shards, read through its kind's codec."""
    kind = checkpoint_kind(model_dir)
    codec = kind.codec(read_config(model_dir))
    if codec is None:
        raise SlimpackError(f"{str(model_dir)!r} is a {kind.name} checkpoint, which cannot be read tensor by tensor")
    return LazyCheckpoint.open(model_dir, codec)


def stored_tensors(lazy: LazyCheckpoint) -> list[str]:
    """The skeleton's tensors the checkpoint stores (a tied head is not), in the skeleton's order."""
    return [name for name in lazy.model.state_dict() if lazy.stored(name)]


def packed_parts(path: Path) -> Iterator[tuple[str, Layout, dict[str, torch.Tensor]]]:
    """Every packed weight of the sparse checkpoint ``path`` with its layout and checked parts, one at a time."""
    from safetensors import safe_open

    files, headers = read_index(path)
    codec = SparseCodec()
    for stored in files:
        if not stored.endswith(".values") or "metadata" not in headers[stored]:
            continue
        name = stored.removesuffix(".values")
        codec.shape(name, headers)
        parts: dict[str, torch.Tensor] = {}
        for source in codec.sources(name, files):
            with safe_open(str(files[source]), framework="pt") as fh:
                parts[source.rpartition(".")[2]] = fh.get_tensor(source)
        check(name, codec.layouts[name], parts)
        yield name, codec.layouts[name], parts


# --- writing ------------------------------------------------------------------------------------------------


def _grid(lazy: LazyCheckpoint, module: str) -> GPTQGrid:
    """The GPTQ codes and grid of ``module`` in a GPTQ checkpoint."""
    codec = lazy.codec
    raw = lazy.read_stored([f"{module}.{s}" for s in GPTQ_SUFFIXES])
    qw = from_gptq({s: raw[f"{module}.{s}"] for s in GPTQ_SUFFIXES}, codec.spec, codec.fmt)  # type: ignore[attr-defined]
    return GPTQGrid(qw.codes, qw.scales, qw.zeros, qw.g_idx, group_width(qw.spec, qw.codes.shape[1]))


def write_config(model_dir: Path, out: Path, entry: dict[str, Any] | None) -> None:
    """The source's config.json into ``out``: without ``quantization_config`` and the sparse key, with ``entry``
    as the sparse key (None: a plain dense config)."""
    config = json.loads((model_dir / "config.json").read_text())
    config.pop("quantization_config", None)
    config.pop(CONFIG_KEY, None)
    drop_remote_code(config)
    if entry is not None:
        config[CONFIG_KEY] = entry
    write_json_atomic(out / "config.json", config)


class SparseExporter:
    """``--format sparse``: every prunable linear packed (``values``: fp32 | bf16 | fp16 | int8 | gptq; default
    the checkpoint's own dtype), written tensor by tensor from the source's shards (never the whole model)."""

    engine = "sparse"
    per_layer_shapes = True
    model_directory = True  # a checkpoint kind (``sparse``): every command reads it

    def __init__(self, values: str | None = None, layout: str = "auto", shard_mib: int = SHARD_BYTES // 2**20) -> None:
        if values is not None and values not in VALUE_DTYPES:
            raise SlimpackError(
                f"--values {values!r} is not a sparse values kind; choose one of: {', '.join(VALUE_DTYPES)}"
            )
        if layout not in ("auto", "bitmask", "2:4"):
            raise SlimpackError(f"sparse layout {layout!r} is not one of: auto, bitmask, 2:4")
        if not (isinstance(shard_mib, int) and shard_mib > 0):
            raise SlimpackError(f"sparse shard_mib {shard_mib!r} must be a whole number of MiB > 0")
        self.values, self.layout, self.shard_bytes = values, layout, shard_mib * 2**20

    def check_source(self, model_dir: Path) -> None:
        kind = checkpoint_kind(model_dir)
        if self.values == "gptq" and kind.name not in ("gptq", "sparse-gptq"):
            raise SlimpackError(
                f"--values gptq stores a GPTQ checkpoint's codes and {str(model_dir)!r} is not one; quantize it first "
                "(`slimpack quantize`), or choose --values fp32 | bf16 | fp16 | int8"
            )
        if kind.name == "sparse-gptq" and self.values == "gptq":
            raise SlimpackError(
                f"{str(model_dir)!r} is already a sparse gptq checkpoint; export it as --format hf, or choose other values"
            )

    def export(
        self, loaded: LoadedModel, model_dir: Path, out: Path, cache: GraphCache | None = None
    ) -> dict[str, Any]:
        return self.export_from(model_dir, out)

    def export_streamed(self, loaded: LoadedModel, out: Path, progress: bool = True) -> dict[str, Any]:
        assert loaded.path is not None
        return self.export_from(loaded.path, out)

    def export_from(self, model_dir: Path, out: Path) -> dict[str, Any]:
        lazy = open_source(model_dir)
        linears = {f"{name}.weight" for name in adapter_for(lazy.model).named_linears(lazy.model)}
        writer = ShardWriter(out, None, self.shard_bytes)
        kinds: dict[str, int] = {}
        dense_bytes = packed_bytes = 0
        for name in tqdm(stored_tensors(lazy), desc="sparse export", disable=not log.isEnabledFor(logging.INFO)):
            tensor = lazy.read([name], None, "cpu")[name]
            if name not in linears:
                writer.add(name, tensor)
                continue
            module = name.removesuffix(".weight")
            grid = _grid(lazy, module) if self.values == "gptq" else None
            values = self.values or FLOAT_VALUES.get(tensor.dtype, "fp32")
            layout, parts = encode(tensor, values, self.layout, grid)
            dense_bytes += tensor.numel() * tensor.element_size()
            for suffix, part in parts.items():
                packed_bytes += part.numel() * part.element_size()
                meta = {name: layout.to_json()} if suffix == "values" else None
                writer.add(f"{name}.{suffix}", part, meta)
            kinds[f"{layout.layout}/{layout.values}"] = kinds.get(f"{layout.layout}/{layout.values}", 0) + 1
        files = writer.close()
        entry: dict[str, Any] = {"version": VERSION, "values": self.values or "stored"}
        if self.values == "gptq":
            entry["quantization_config"] = read_quantization_config(model_dir)
        write_config(model_dir, out, entry)
        return {
            "files": [f.name for f in files] + ([] if len(files) == 1 else ["model.safetensors.index.json"]),
            "values": self.values or "stored",
            "layouts": kinds,
            "linear_bytes": {"dense": dense_bytes, "packed": packed_bytes},
        }

    def count_zeros(self, out: Path, details: dict[str, Any]) -> ZeroCounts:
        counts: ZeroCounts = {}
        for name, layout, parts in packed_parts(out):
            numel = layout.shape[0] * layout.shape[1]
            if layout.values in ("gptq", "int8"):
                zeros = int((decode(name, layout, parts) == 0).sum())
            else:
                nnz = nnz_of(layout, parts)
                zeros = numel - nnz + int((parts["values"][:nnz] == 0).sum())
            counts[name.removesuffix(".weight")] = {"zeros": zeros, "numel": numel}
        return counts


class DenseExporter:
    """``--format hf``: the plain dense checkpoint of any model slimpack reads (a sparse checkpoint decoded, a GPTQ
    one dequantized), tensor by tensor, for tools that need one; it runs in the ``torch`` engine."""

    engine = "torch"
    per_layer_shapes = True
    model_directory = True

    def __init__(self, shard_mib: int = SHARD_BYTES // 2**20) -> None:
        if not (isinstance(shard_mib, int) and shard_mib > 0):
            raise SlimpackError(f"hf shard_mib {shard_mib!r} must be a whole number of MiB > 0")
        self.shard_bytes = shard_mib * 2**20

    def check_source(self, model_dir: Path) -> None:
        open_source(model_dir)

    def export(
        self, loaded: LoadedModel, model_dir: Path, out: Path, cache: GraphCache | None = None
    ) -> dict[str, Any]:
        return self.export_from(model_dir, out)

    def export_streamed(self, loaded: LoadedModel, out: Path, progress: bool = True) -> dict[str, Any]:
        assert loaded.path is not None
        return self.export_from(loaded.path, out)

    def export_from(self, model_dir: Path, out: Path) -> dict[str, Any]:
        lazy = open_source(model_dir)
        writer = ShardWriter(out, None, self.shard_bytes)
        for name in tqdm(stored_tensors(lazy), desc="hf export", disable=not log.isEnabledFor(logging.INFO)):
            writer.add(name, lazy.read([name], None, "cpu")[name])
        files = writer.close()
        write_config(model_dir, out, None)
        return {"files": [f.name for f in files] + ([] if len(files) == 1 else ["model.safetensors.index.json"])}

    def count_zeros(self, out: Path, details: dict[str, Any]) -> ZeroCounts:
        lazy = LazyCheckpoint.open(out)
        counts: ZeroCounts = {}
        for module in adapter_for(lazy.model).named_linears(lazy.model):
            weight = lazy.read([f"{module}.weight"], None, "cpu")[f"{module}.weight"]
            counts[module] = {"zeros": int((weight == 0).sum()), "numel": weight.numel()}
        return counts


def packed_linear_bytes(details: dict[str, Any]) -> int:
    """The bytes a sparse artifact stores for its packed linear weights (its ``export.json`` details)."""
    return int(details["linear_bytes"]["packed"])
