"""Models too big for memory: a skeleton whose weights stay in their safetensors shards until a block's turn.

`LazyCheckpoint.open(path)` builds the model on the meta device (no weights in memory) and indexes the
tensors of the directory's shards (``model.safetensors.index.json``, or every ``*.safetensors`` file). A
structured-pruned model's skeleton is cut to the per-layer shapes its config records. The checkpoint must
match the skeleton exactly — a missing, extra or wrongly shaped tensor (decoded ones too: `TensorCodec.shape`)
is one clear error, before any work. `materialize(module, prefix, dtype, device)` reads the module's tensors
(each shard opened, read and closed again, so that its pages leave the process's resident memory), converts
them to ``dtype`` on ``device``; `release(module)` puts them back on the meta device. Buffers the checkpoint
does not store (rope's ``inv_freq``) are computed by re-creating their module from the config (`fresh`).

A checkpoint kind whose files do not store the skeleton's tensors as they are (a GPTQ checkpoint stores a
linear's ``weight`` as ``qweight/qzeros/scales/g_idx``) gives a `TensorCodec`: which stored tensors make each
skeleton tensor, and how to decode them. Plain directories use `PLAIN_CODEC` (each tensor as it is).

The in-memory path (`prune.models.load_model`) and this one hold the same tensors: fp32 → fp32 is a copy,
so a streamed walk in fp32 gives bit-identical results (tests/integration/test_stream.py).
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from prune.architecture import adapter_for
from prune.errors import SlimpackError
from prune.model_config import check_sizes, drop_remote_code, read_config
from prune.paths import inside, regular_file
from prune.structured.shapes import STRUCTURE_KEY, apply_structure

log = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
SAFETENSORS_DTYPES = {  # safetensors' dtype names (shard headers), declared once: readers and writers use this
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip
FLOAT_DTYPES = {name: dtype for name, dtype in SAFETENSORS_DTYPES.items() if dtype.is_floating_point}


def read_index(path: Path) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """``{tensor name: shard file}`` of a model directory (its index, else the shards' own headers) and every
    shard's header (``{name: {dtype, shape, …}}``), each header read once. Every shard the index names lies
    inside the directory and is a regular file (`prune.paths.inside`); a damaged index is one line."""
    index = path / INDEX_FILE
    damaged = "the model directory is damaged — copy it again"
    if index.exists():
        regular_file(index, "shard index", damaged)
        try:
            data = json.loads(index.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SlimpackError(f"{str(index)!r} is not a safetensors index (not JSON); {damaged}") from None
        except OSError as err:
            raise SlimpackError(f"{str(index)!r} cannot be read ({err.strerror}); check its permissions") from None
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(data, dict):
            problem = f"it holds a JSON {type(data).__name__}, not an object"
        elif not isinstance(weight_map, dict) or not weight_map:
            what = (
                "no weight_map" if weight_map is None
                else "an empty weight_map" if isinstance(weight_map, dict)
                else f"a {type(weight_map).__name__} as its weight_map"
            )  # fmt: skip
            problem = f"it has {what}, not a table of tensor → shard file"
        elif not isinstance(data.get("metadata"), dict):
            problem = "its metadata is missing or not a table"
        else:
            problem = None
        if problem is not None:
            raise SlimpackError(f"{str(index)!r} is not a safetensors index ({problem}); {damaged}")
        listed: dict[str, Path] = {}
        for f in weight_map.values():  # a name that is not a string is refused before it is hashed
            if not isinstance(f, str) or f not in listed:
                listed[f] = inside(path, f, index)
        missing = sorted(f for f, file in listed.items() if not file.is_file())
        if missing:
            raise SlimpackError(
                f"shard {missing[0]!r} listed in {str(index)!r} is missing ({len(missing)} missing); "
                "copy the complete model directory"
            )
        files = {name: listed[f] for name, f in weight_map.items()}
        shards = sorted(set(files.values()))
    else:
        shards = sorted(path.glob("*.safetensors"))
        if not shards:
            raise SlimpackError(f"{str(path)!r} has no .safetensors weights; pass a safetensors model directory")
        files = {}
    headers: dict[str, dict[str, Any]] = {}
    held: dict[Path, dict[str, Any]] = {}
    for shard in shards:
        held[shard] = header = _header(shard)
        headers.update(header)
        if not index.exists():
            files.update({name: shard for name in header})
    wrong = next((name for name, shard in files.items() if name not in held[shard]), None)
    if wrong is not None:
        raise SlimpackError(
            f"{str(index)!r} lists tensor {wrong[:80]!r} in {files[wrong].name!r}, which does not hold it; {damaged}"
        )
    return files, headers


def _header(file: Path) -> dict[str, dict[str, Any]]:
    """The tensors a safetensors file declares (``{name: {dtype, shape, …}}``), read from its header only. A file
    that is not one is named with the reason, never with its bytes (it may be any file)."""
    regular_file(file, "weights file", "the model directory is damaged — copy it again")

    def refuse(reason: str) -> SlimpackError:
        return SlimpackError(f"{str(file)!r} is not a safetensors file ({reason}); the model directory is damaged")

    try:
        with file.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 0 < size < 100 * 2**20:
                raise refuse("its first 8 bytes are not a header length")
            header = json.loads(fh.read(size))
    except OSError as err:
        raise refuse(f"it cannot be read: {err.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise refuse("its header is not JSON") from None
    if not isinstance(header, dict):
        raise refuse("its header is not a table")
    metadata = header.pop("__metadata__", None)
    if isinstance(metadata, dict) and set(metadata) - {"format"}:  # a format's own keys (export.sparse_format)
        for entry in header.values():
            if isinstance(entry, dict):
                entry["metadata"] = metadata  # one dict, shared by the file's tensors
    try:
        end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
        bad = [n for n, t in header.items() if not isinstance(t["dtype"], str) or not _is_shape(t["shape"])]
    except (KeyError, TypeError, ValueError, IndexError):
        raise refuse("bad tensor entries") from None
    if bad:
        raise refuse(f"tensor {bad[0][:80]!r} has no dtype name or a shape that is not whole numbers")
    have = file.stat().st_size - 8 - size
    if have < end:
        raise SlimpackError(
            f"{str(file)!r} is truncated: its header declares {end} bytes of tensors, the file holds {max(have, 0)}; "
            "the model directory is damaged — copy it again"
        )
    return header


def _is_shape(shape: object) -> bool:
    return isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)


STORED_BYTES = {name: dtype.itemsize for name, dtype in SAFETENSORS_DTYPES.items()}


def output_bytes(directory: Path, float_bytes: float | None, linear_bytes: float | None = None) -> int:
    """An estimate of the bytes an output made from the model ``directory`` takes, from its shards' headers alone:
    each stored floating tensor's elements × ``float_bytes`` (None: as stored) — ``linear_bytes`` for the blocks'
    linear weights, when the output stores them otherwise (4-bit codes) — and every other tensor as stored."""
    total = 0.0
    for name, header in read_index(Path(directory))[1].items():
        stored = STORED_BYTES.get(str(header.get("dtype")), 4)
        elements = math.prod(int(n) for n in header.get("shape", []))
        per = stored
        if header.get("dtype") in FLOAT_DTYPES:
            per = linear_bytes if linear_bytes is not None and name.endswith("_proj.weight") else float_bytes or stored
        total += elements * per
    return int(total)


class TensorCodec(Protocol):
    """How a checkpoint kind stores the skeleton's tensors (`prune.checkpoint_kinds.CheckpointKind.codec`)."""

    def prepare(self, config: Any) -> None:
        """Make the transformers config build the plain skeleton (e.g. drop ``quantization_config``)."""
        ...

    def sources(self, name: str, stored: dict[str, Path]) -> tuple[str, ...]:
        """The stored tensors that make the skeleton's tensor ``name`` (``(name,)``: stored as it is)."""
        ...

    def decode(self, name: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """The tensor ``name`` from its `sources` (read as stored, on the CPU)."""
        ...

    def shape(self, name: str, headers: dict[str, dict[str, Any]]) -> list[int]:
        """The shape ``name`` decodes to, from its sources' headers alone (checked against the skeleton before
        any work); sources that disagree with one another are one clear error naming them."""
        ...


class PlainCodec:
    """Every tensor stored as it is."""

    def prepare(self, config: Any) -> None:
        pass

    def sources(self, name: str, stored: dict[str, Path]) -> tuple[str, ...]:
        return (name,)

    def shape(self, name: str, headers: dict[str, dict[str, Any]]) -> list[int]:
        return list(headers[name].get("shape", []))

    def decode(self, name: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        return tensors[name]


PLAIN_CODEC = PlainCodec()


@dataclass
class LazyCheckpoint:
    """A model skeleton (meta device) and where each of its tensors lies on disk."""

    path: Path
    model: nn.Module
    files: dict[str, Path]  # stored tensor name → shard
    headers: dict[str, dict[str, Any]]  # stored tensor name → {dtype, shape, data_offsets} as the shard declares it
    codec: TensorCodec = PLAIN_CODEC
    aliases: dict[str, str] = field(default_factory=dict)  # a tied tensor the checkpoint does not store → its twin

    @classmethod
    def open(cls, path: Path, codec: TensorCodec = PLAIN_CODEC) -> LazyCheckpoint:
        from transformers import AutoConfig

        path = Path(path)
        sizes = read_config(path)  # checked: an architecture slimpack builds, sizes that are whole numbers
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        drop_remote_code(config)  # no config saved from this one names code it does not carry
        codec.prepare(config)
        files, headers = read_index(path)
        check_sizes(path, sizes, headers)  # before a skeleton of the config's sizes is built
        model = skeleton(config)
        lazy = cls(path, model, files, headers, codec)
        lazy.check()
        shared: dict[int, list[str]] = defaultdict(list)  # read before any tensor is materialized (untied then)
        for name, param in model.named_parameters(remove_duplicate=False):
            shared[id(param)].append(name)
        for group in shared.values():
            stored = [n for n in group if lazy.stored(n)]
            lazy.aliases.update({n: stored[0] for n in group if stored and n not in stored})
        return lazy

    def check(self) -> None:
        """Every tensor of the skeleton is listed (index) and stored (shard header) — with its shape, when it is
        stored as it is — and nothing else is listed (a tied head excepted)."""
        headers = self.headers
        expected = dict(self.model.state_dict())
        tied = adapter_for(self.model).tied_embeddings(self.model.config)
        used: set[str] = set()
        for name, tensor in expected.items():
            sources = self.codec.sources(name, self.files)
            absent = [s for s in sources if s not in self.files or s not in headers]
            if absent:
                if tied and name == "lm_head.weight":
                    continue
                raise SlimpackError(
                    f"weights in {str(self.path)!r} do not match its config.json (missing tensor {absent[0]!r})"
                )
            used.update(sources)
            stored = self.codec.shape(name, headers)
            if stored != list(tensor.shape):
                raise SlimpackError(
                    f"tensor {name!r} in {str(self.path)!r} has shape {stored}, its config.json says {list(tensor.shape)}"
                )
        extra = sorted(set(self.files) - used)
        if extra:
            raise SlimpackError(
                f"weights in {str(self.path)!r} do not match its config.json (unexpected tensor {extra[0]!r})"
            )

    def stored_dtype(self) -> torch.dtype:
        """The floating dtype most of the checkpoint's weights (by element count) are stored in."""
        counts: dict[torch.dtype, int] = defaultdict(int)
        for header in self.headers.values():
            if header.get("dtype") in FLOAT_DTYPES:
                counts[FLOAT_DTYPES[header["dtype"]]] += math.prod(header.get("shape", []))
        if not counts:
            raise SlimpackError(f"{str(self.path)!r} stores no floating-point weights; the streamed path needs them")
        return max(counts, key=counts.__getitem__)

    def stored_name(self, name: str) -> str:
        """The name the checkpoint stores the skeleton's tensor ``name`` under: itself, or for a tied tensor (an
        lm_head sharing the embedding) the name of the one it shares that is stored."""
        return self.aliases.get(name, name)

    def stored(self, name: str) -> bool:
        """Whether the skeleton's tensor ``name`` is in the checkpoint (a tied head is not)."""
        return all(s in self.files for s in self.codec.sources(name, self.files))

    def read_stored(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Stored tensors ``names`` (e.g. a GPTQ linear's ``qweight``) as stored, on the CPU; each shard is opened
        once and closed after."""
        from safetensors import SafetensorError, safe_open

        by_file: dict[Path, list[str]] = defaultdict(list)
        for name in names:
            by_file[self.files[name]].append(name)
        out: dict[str, torch.Tensor] = {}
        for file, members in by_file.items():
            try:
                with safe_open(str(file), framework="pt") as fh:
                    for name in members:
                        out[name] = fh.get_tensor(name)
            except FileNotFoundError:
                raise SlimpackError(
                    f"shard {file.name!r} of {str(self.path)!r} vanished while slimpack read it (deleted or moved by "
                    "another process); nothing was written — restore the model directory and run again"
                ) from None
            except (OSError, SafetensorError):
                raise SlimpackError(
                    f"shard {file.name!r} of {str(self.path)!r} changed while slimpack read it (no longer the file "
                    "it opened, or unreadable); nothing was written — restore the model directory and run again"
                ) from None
        return out

    def read(self, names: list[str], dtype: torch.dtype | None, device: torch.device | str) -> dict[str, torch.Tensor]:
        """The skeleton's tensors ``names`` as ``dtype`` (``None``: as stored, or as decoded) on ``device``."""
        sources = {name: self.codec.sources(name, self.files) for name in names}
        raw = self.read_stored(sorted({s for group in sources.values() for s in group}))
        out: dict[str, torch.Tensor] = {}
        for name, group in sources.items():
            tensor = self.codec.decode(name, {s: raw.pop(s) for s in group})
            out[name] = tensor.to(device=device, dtype=dtype or tensor.dtype)
        return out

    def materialize(
        self, module: nn.Module, prefix: str, dtype: torch.dtype | None, device: torch.device | str
    ) -> None:
        """Give ``module`` (named ``prefix`` in the model) its stored tensors as ``dtype`` (``None``: as stored)
        on ``device``; a tied tensor (lm_head) gets its own copy of its twin's (the embedding's)."""
        names = {f"{prefix}.{n}" if prefix else n: n for n, _ in module.state_dict().items()}
        sources = {full: self.stored_name(full) for full in names}
        tensors = self.read(sorted({s for s in sources.values() if self.stored(s)}), dtype, device)
        for full, local in names.items():
            if sources[full] in tensors:
                _set(module, local, tensors[sources[full]])

    @staticmethod
    def release(module: nn.Module) -> None:
        """Drop ``module``'s tensors (back to the meta device)."""
        module.to("meta")


def skeleton(config: Any, dtype: torch.dtype | None = None) -> nn.Module:
    """The model of ``config`` on the meta device (no weights; ``dtype``: its parameters' dtype), in eval mode,
    its blocks cut to the per-layer shapes a structured-pruned model records in its config
    (`prune.structured.shapes`; plain or GPTQ-quantized alike)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    structure = getattr(config, STRUCTURE_KEY, None)
    if structure is not None:
        apply_structure(adapter_for(model).blocks(model), structure)
    return model.eval()


def _set(module: nn.Module, name: str, value: torch.Tensor) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    else:
        owner._buffers[leaf] = value


def fresh(module: nn.Module, config: Any, device: torch.device | str = "cpu") -> nn.Module:
    """A new instance of a module built from the config alone (rope: its ``inv_freq`` computed, not stored)."""
    with torch.device(device):
        return type(module)(config=config)


def fresh_rotary(model: nn.Module, rotary_path: str | None) -> None:
    """Replace the model's rotary module (at ``rotary_path``; None: it has none) by one built from the config: its
    ``inv_freq`` is computed, never stored, so a skeleton's stays on the meta device."""
    if rotary_path:
        owner, _, leaf = rotary_path.rpartition(".")
        setattr(model.get_submodule(owner), leaf, fresh(model.get_submodule(rotary_path), model.config))
