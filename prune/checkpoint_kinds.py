"""The kinds of saved model directories (`CheckpointKind`; `CHECKPOINT_KINDS` lists them, as pyproject.toml's entry
points ``slimpack.checkpoint_kinds`` name them: `prune.models` the structured kind, `quant.checkpoint` GPTQ's,
`export.sparse` the sparse ones; the plain kind is the fallback), and
`load_state_strict`, which a kind's loader uses to fill a model it built.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from prune.architecture import adapter_for
from prune.errors import SlimpackError
from prune.registry import Registry

if TYPE_CHECKING:
    from prune.lazy import TensorCodec


class CheckpointKind(Protocol):
    """One kind of saved model directory, in `CHECKPOINT_KINDS` (an entry point of the package that writes it:
    structured models `prune.models`, GPTQ checkpoints `quant.checkpoint`, sparse artifacts `export.sparse`). `load_model`
    asks each kind whether it ``claims`` a directory's ``config.json``; a directory nobody claims is a plain
    transformers model. The flags answer, in one place, what other stages need to know about a kind."""

    name: str
    quantized: bool  # weights stored as integer codes (formats that re-quantize or need floats refuse it)
    per_layer_shapes: bool  # layers may differ in shape (formats with one static layer shape refuse it)

    def claims(self, config: dict[str, Any]) -> bool: ...

    def load(self, path: Path, dtype: torch.dtype) -> tuple[nn.Module, dict[str, Any]]:
        """The model (fp ``dtype``, eval mode, on the CPU) and kind-specific extras (e.g. quantized weights)."""
        ...

    def codec(self, config: dict[str, Any]) -> TensorCodec | None:
        """How the streamed path (`prune.lazy`) reads this kind's tensors one block at a time; None: it cannot."""
        ...


CHECKPOINT_KINDS: Registry[CheckpointKind] = Registry("checkpoint kind", "slimpack.checkpoint_kinds")


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Load ``state`` into ``model``: every tensor must have a place and every place a tensor (a tied
    ``lm_head`` excepted); the first mismatch is a one-line error naming it."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if adapter_for(model).tied_embeddings(model.config) else set()
    bad = sorted(unexpected) or sorted(set(missing) - tied)
    if bad:
        what = "unexpected" if unexpected else "missing"
        raise SlimpackError(f"weights in {str(where)!r} do not match its config.json ({what} tensor {bad[0]!r})")
    if tied:
        model.tie_weights()
