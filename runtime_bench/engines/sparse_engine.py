"""The ``sparse`` engine: a sparse checkpoint (`export.sparse`) run by slimpack's own CPU kernels
(`runtime_bench.kernels`).

The model is the checkpoint's transformers skeleton; each packed linear becomes a `KernelLinear` that keeps the
stored bytes (mask, values, offsets, scales) and multiplies with them: a decode step (≤ 8 rows) reads the
compressed bytes once, a prefill multiplies the nonzeros only (sparse enough) or decompressed rows (the kernels'
own GEMM). A dense head stored in bf16/fp16 runs in the
kernels' dense layout (no fp32 copy); the embedding stays in its stored dtype (looked up, then cast). Everything
else (norms, rotary) is fp32. KV cache and greedy decoding are transformers' (`TorchEngine`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from export.sparse import SparseCheckpoint, SparseCodec
from prune.architecture import adapter_for
from prune.errors import SlimpackError
from prune.io import release_freed_heap
from prune.lazy import LazyCheckpoint, fresh_rotary
from prune.model_config import read_config
from prune.models import checkpoint_kind
from runtime_bench.engines.base import Artifact
from runtime_bench.engines.torch_engine import TorchEngine
from runtime_bench.kernels import PackedWeight, linear, load

log = logging.getLogger(__name__)


class KernelLinear(nn.Module):
    """``y = x Wᵀ + b`` with ``W`` packed (`runtime_bench.kernels.PackedWeight`): ``x [..., in]`` → ``[..., out]``
    in fp32."""

    def __init__(self, packed: object, bias: torch.Tensor | None, isa: str) -> None:
        super().__init__()
        self.packed, self.bias, self.isa = packed, bias, isa

    def forward(self, x: torch.Tensor) -> torch.Tensor:

        return linear(x.float(), self.packed, self.bias, self.isa)  # type: ignore[arg-type]


def load_sparse_model(path: Path, isa: str = "auto") -> nn.Module:
    """The model of the sparse checkpoint ``path`` with kernel-backed linears (see the module docstring)."""
    load()  # one line if the kernels cannot be built or loaded, before any weight is read
    kind = checkpoint_kind(path)
    if not isinstance(kind, SparseCheckpoint):
        raise SlimpackError(
            f"{str(path)!r} is a {kind.name} checkpoint, not a sparse one; export it with --format sparse"
        )
    codec = kind.codec(read_config(path))
    lazy = LazyCheckpoint.open(path, codec)
    model = lazy.model
    adapter = adapter_for(model)
    embed = model.get_submodule(adapter.embed_path)
    lazy.materialize(embed, adapter.embed_path, None, "cpu")  # stored dtype, cast as looked up
    embed.register_forward_hook(lambda module, args, out: out.float())
    tied = adapter.tied_embeddings(model.config)
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear):
            continue
        bias = lazy.read([f"{name}.bias"], torch.float32, "cpu")[f"{name}.bias"] if module.bias is not None else None
        packed = _packed(lazy, codec, f"{name}.weight")
        if packed is None:
            stored = embed.weight if tied and lazy.stored_name(f"{name}.weight") != f"{name}.weight" else None
            weight = stored if stored is not None else lazy.read([f"{name}.weight"], None, "cpu")[f"{name}.weight"]
            packed = PackedWeight.dense(weight.detach())
        owner, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, leaf, KernelLinear(packed, bias, isa))
    for name, module in model.named_modules():
        if any(t.is_meta for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]):
            lazy.materialize(module, name, torch.float32, "cpu")
    fresh_rotary(model, adapter.rotary_path)
    release_freed_heap()  # the load's temporaries; the packed tensors themselves map the checkpoint's shards
    return model.eval()


def _packed(lazy: LazyCheckpoint, codec: SparseCodec, name: str) -> object | None:

    stored = codec.packed(lazy, name)
    return None if stored is None else PackedWeight.from_stored(*stored)


class SparseEngine(TorchEngine):
    """A sparse checkpoint in slimpack's kernels (``isa``: auto | avx512 | avx2 | portable)."""

    name = "sparse"

    def __init__(self, threads: int | None = None, isa: str = "auto") -> None:
        super().__init__(threads, "cpu")
        self.isa = isa

    @classmethod
    def unavailable(cls) -> str | None:

        try:
            load()
        except SlimpackError as err:
            return str(err)
        return None

    def load(self, artifact: Artifact) -> None:
        self.model = load_sparse_model(artifact.path, self.isa)
