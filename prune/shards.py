"""Write a model's tensors as they are finished: sharded safetensors with the Hugging Face index.

`ShardWriter(directory, dtype, max_shard_bytes)`: ``add(name, tensor)`` converts the tensor to the output
dtype (floating tensors only; integer tensors are stored as they are) on the CPU and buffers it; a full buffer
is written as the next shard, so at most one shard is held in memory. `close()` names the shards as
transformers expects (``model-00001-of-00003.safetensors``, or ``model.safetensors`` when one suffices) and
writes ``model.safetensors.index.json`` (``metadata.total_size``, ``weight_map``). The directory is the
temporary output directory of `prune.io.atomic_output_dir`, so a failed run leaves nothing behind.
A tensor added twice under one name is an error; tied tensors are added once, under the name transformers
saves (the embedding), by the caller. The writer keeps what it is given until its shard is written: callers
must not modify a tensor after adding it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from prune.lazy import INDEX_FILE

log = logging.getLogger(__name__)

DEFAULT_SHARD_BYTES = 2 * 2**30


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
        self.buffer: dict[str, torch.Tensor] = {}
        self.metadata: dict[str, str] = {}  # the current shard's own metadata keys (`add`'s ``metadata``)
        self.buffered = 0
        self.parts: list[tuple[Path, list[str]]] = []
        self.names: set[str] = set()
        self.total = 0

    def add(self, name: str, tensor: torch.Tensor, metadata: dict[str, str] | None = None) -> torch.Tensor:
        """Buffer ``tensor`` (converted) for the current shard; returns it as it will be stored. ``metadata``:
        keys for the safetensors metadata of the shard that holds it (a packed weight's layout)."""
        if name in self.names:
            raise ValueError(f"tensor {name!r} written twice")
        self.names.add(name)
        value = tensor.detach()
        if self.dtype is not None and value.is_floating_point():
            value = value.to(self.dtype)
        value = value.to("cpu").contiguous()
        size = value.numel() * value.element_size()
        if self.buffer and self.buffered + size > self.max_shard_bytes:
            self.flush()
        self.buffer[name] = value
        self.metadata.update(metadata or {})
        self.buffered += size
        self.total += size
        return value

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.buffer:
            return
        part = self.directory / f".part-{len(self.parts) + 1:05d}.safetensors"
        save_file(self.buffer, str(part), metadata={"format": "pt", **self.metadata})
        self.parts.append((part, list(self.buffer)))
        log.debug("wrote %s (%d tensors, %.1f MiB)", part.name, len(self.buffer), self.buffered / 2**20)
        self.buffer, self.metadata, self.buffered = {}, {}, 0

    def close(self) -> list[Path]:
        """Write the last shard, name every shard, write the index (several shards); returns the shards."""
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
