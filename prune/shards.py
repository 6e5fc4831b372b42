"""Write a model's tensors as they are finished: sharded safetensors with the Hugging Face index.

`ShardWriter(directory, dtype, max_shard_bytes)`: ``add(name, tensor)`` converts the tensor to the output
dtype (floating tensors only; integer tensors are stored as they are) on the CPU and writes its bytes straight
into the current shard file, after room left for the header; a tensor that would overflow the shard starts
the next one. A shard is finished by writing its header (the names, dtypes, shapes and offsets it already
knows, padded with spaces to the room left — safetensors allows that — or, for a header larger than the room,
the file is rewritten once with a larger one, copied in chunks). No shard is ever held in memory: the peak
is the tensor being added. `close()` names the shards as
transformers expects (``model-00001-of-00003.safetensors``, or ``model.safetensors`` when one suffices) and
writes ``model.safetensors.index.json`` (``metadata.total_size``, ``weight_map``). The directory is the
temporary output directory of `prune.io.atomic_output_dir`, so a failed run leaves nothing behind.
A tensor added twice under one name is an error; tied tensors are added once, under the name transformers
saves (the embedding), by the caller.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import BinaryIO

import torch

from prune.lazy import INDEX_FILE, SAFETENSORS_DTYPES

log = logging.getLogger(__name__)

DEFAULT_SHARD_BYTES = 2 * 2**30


STORED_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}  # torch dtype → its header name
HEADER_ROOM = 64 * 2**10  # bytes left for a shard's header before its first tensor (a multiple of 8)


class Shard:
    """One shard file being written: the room for its header, then each tensor's bytes as it comes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO = path.open("wb")
        self.file.seek(8 + HEADER_ROOM)
        self.entries: dict[str, dict] = {}
        self.metadata: dict[str, str] = {}
        self.size = 0

    def write(self, name: str, value: torch.Tensor) -> None:
        nbytes = value.numel() * value.element_size()
        if nbytes:
            self.file.write(memoryview(value.reshape(-1).view(torch.uint8).numpy()))
        self.entries[name] = {"dtype": STORED_NAMES[value.dtype], "shape": list(value.shape),
                              "data_offsets": [self.size, self.size + nbytes]}  # fmt: skip
        self.size += nbytes

    def finish(self) -> None:
        """Write the header into its room (or rewrite the file with a larger room) and close the file."""
        header = json.dumps({"__metadata__": self.metadata, **self.entries}, separators=(",", ":")).encode()
        if len(header) <= HEADER_ROOM:
            self.file.seek(0)
            self.file.write(HEADER_ROOM.to_bytes(8, "little") + header + b" " * (HEADER_ROOM - len(header)))
            self.file.close()
            return
        self.file.close()
        room = -(-len(header) // 8) * 8
        moved = self.path.with_name(self.path.name + ".body")
        os.replace(self.path, moved)
        with moved.open("rb") as src, self.path.open("wb") as dst:
            dst.write(room.to_bytes(8, "little") + header + b" " * (room - len(header)))
            src.seek(8 + HEADER_ROOM)
            shutil.copyfileobj(src, dst, 64 * 2**20)
        moved.unlink()


class ShardWriter:
    def __init__(
        self, directory: Path, dtype: torch.dtype | None = None, max_shard_bytes: int = DEFAULT_SHARD_BYTES
    ) -> None:
        """``dtype``: what floating tensors are stored as (``None``: as given)."""
        if max_shard_bytes <= 0:
            raise ValueError(f"shard size {max_shard_bytes} must be > 0")
        self.directory = Path(directory)
        self.dtype = dtype
        self.max_shard_bytes = max_shard_bytes
        self.shard: Shard | None = None
        self.parts: list[tuple[Path, list[str]]] = []
        self.names: set[str] = set()
        self.total = 0

    def add(self, name: str, tensor: torch.Tensor, metadata: dict[str, str] | None = None) -> torch.Tensor:
        """Write ``tensor`` (converted) into the current shard; returns it as it is stored. ``metadata``: keys
        for the safetensors metadata of the shard that holds it (a packed weight's layout)."""
        if name in self.names:
            raise ValueError(f"tensor {name!r} written twice")
        self.names.add(name)
        value = tensor.detach()
        if self.dtype is not None and value.is_floating_point():
            value = value.to(self.dtype)
        value = value.to("cpu").contiguous()
        size = value.numel() * value.element_size()
        if self.shard is not None and self.shard.entries and self.shard.size + size > self.max_shard_bytes:
            self.flush()
        if self.shard is None:
            self.shard = Shard(self.directory / f".part-{len(self.parts) + 1:05d}.safetensors")
        self.shard.write(name, value)
        self.shard.metadata.update({"format": "pt", **(metadata or {})})
        self.total += size
        return value

    def flush(self) -> None:
        """Finish the current shard (if any): the next tensor starts a new one."""
        if self.shard is None:
            return
        shard, self.shard = self.shard, None
        shard.finish()
        self.parts.append((shard.path, list(shard.entries)))
        log.debug("wrote %s (%d tensors, %.1f MiB)", shard.path.name, len(shard.entries), shard.size / 2**20)

    def close(self) -> list[Path]:
        """Finish the last shard, name every shard, write the index (several shards); returns the shards."""
        self.flush()
        count = len(self.parts)
        if count == 1:
            final = self.directory / "model.safetensors"
            os.replace(self.parts[0][0], final)
            return [final]
        weight_map: dict[str, str] = {}
        shards = []
        for i, (part, names) in enumerate(self.parts, start=1):
            final = self.directory / f"model-{i:05d}-of-{count:05d}.safetensors"
            os.replace(part, final)
            shards.append(final)
            weight_map.update({n: final.name for n in names})
        index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(weight_map.items()))}
        (self.directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return shards
