"""PyTorch 2:4 semi-structured checkpoint: 2:4 layers stored compressed (kept values + CUTLASS metadata).

Every prunable linear of the source must be 2:4 along its input dimension (at most 2 non-zeros in each
run of 4 consecutive weights of a row), which is what NVIDIA's sparse tensor cores and
``torch.sparse.to_sparse_semi_structured`` take. For ``W [out, in]`` (fp16 or bf16):

    {module}.weight_packed  [out, in/2]   the kept values, row-major
    {module}.weight_meta    int16 [out, in/16]   CUTLASS's reordered 2-bit indices of the kept values

made by ``torch.sparse._semi_structured_conversions.sparse_semi_structured_from_dense_cutlass`` (a private
torch module, pinned by ``constraints.txt`` and tested by ``tests/test_export_semi24.py``), which runs on the
CPU. Everything else (embeddings, norms) is stored dense in the same dtype. ``semi24.json`` lists the
compressed modules. `load_semi24` returns an HF model: on CUDA with ``SparseSemiStructuredTensor``
weights, on the CPU with the exact dense weights (decompressed with the inverse conversion, bit-exact).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from export.base import ZeroCounts
from export.graph_cache import GraphCache
from prune.architecture import adapter_for
from prune.errors import SlimpackError
from prune.models import LoadedModel, checkpoint_kind

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
INDEX = "semi24.json"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def _conversions() -> Any:
    from torch.sparse import _semi_structured_conversions

    return _semi_structured_conversions


def is_2of4(weight: torch.Tensor) -> bool:
    """At most 2 non-zeros in every run of 4 consecutive inputs of every row."""
    rows, cols = weight.shape
    return cols % 4 == 0 and bool((weight.reshape(rows, cols // 4, 4) != 0).sum(-1).le(2).all())


def compress(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2:4 ``[out, in]`` fp16/bf16 matrix → ``(packed [out, in/2], meta int16 [out, in/16])`` (CPU)."""
    return _conversions().sparse_semi_structured_from_dense_cutlass(weight.contiguous())


def decompress(packed: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Exact inverse of `compress`."""
    return _conversions().sparse_semi_structured_to_dense_cutlass(packed, meta)


def check_2of4(model: nn.Module) -> list[str]:
    """The prunable linears, after checking each is 2:4 and fits CUTLASS's tiles (rows % 32, cols % 64)."""
    names = []
    for name, lin in adapter_for(model).named_linears(model).items():
        if not is_2of4(lin.weight):
            bad = int((lin.weight.reshape(lin.out_features, -1, 4) != 0).sum(-1).gt(2).sum())
            raise SlimpackError(
                f"{name} is not 2:4 ({bad} groups of 4 hold more than 2 non-zeros); semi24 needs a 2:4 model — "
                "prune with `slimpack prune --pattern 2:4`"
            )
        if lin.out_features % 32 or lin.in_features % 64:
            raise SlimpackError(
                f"{name} is {tuple(lin.weight.shape)}; 2:4 kernels need rows % 32 == 0 and cols % 64 == 0"
            )
        names.append(name)
    return names


def save_semi24(model: nn.Module, out: Path, dtype: torch.dtype) -> dict[str, Any]:
    """Write the compressed checkpoint of a 2:4 ``model`` into ``out``."""
    modules = check_2of4(model)
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    if adapter_for(model).tied_embeddings(model.config):
        state.pop("lm_head.weight", None)
    for name in modules:
        packed, meta = compress(state.pop(f"{name}.weight"))
        state[f"{name}.weight_packed"] = packed
        state[f"{name}.weight_meta"] = meta
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt", "slimpack": "semi24"})
    index = {
        "layout": "cutlass",
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "modules": modules,
    }
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return {"file": WEIGHTS, "dtype": index["dtype"], "modules": len(modules), "layout": "cutlass"}


def load_semi24(directory: Path, device: str = "cpu", dtype: torch.dtype | None = None) -> nn.Module:
    """The HF model of a semi24 checkpoint: sparse semi-structured weights on CUDA, exact dense ones elsewhere.

    ``dtype`` (CPU only) casts the decompressed model, e.g. to fp32 for reference arithmetic; the values stay
    exactly the stored fp16/bf16 ones.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = Path(directory)
    if not (directory / INDEX).is_file():
        raise SlimpackError(
            f"{str(directory)!r} is not a semi24 checkpoint (no {INDEX}); export one with --format semi24"
        )
    index = json.loads((directory / INDEX).read_text())
    stored = DTYPES[index["dtype"]]
    tensors = load_file(str(directory / WEIGHTS))
    state = {k: v for k, v in tensors.items() if not k.endswith((".weight_packed", ".weight_meta"))}
    for name in index["modules"]:
        state[f"{name}.weight"] = decompress(tensors[f"{name}.weight_packed"], tensors[f"{name}.weight_meta"])
    config = AutoConfig.from_pretrained(directory)
    model = AutoModelForCausalLM.from_config(config, dtype=stored)
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = {"lm_head.weight"} if adapter_for(model).tied_embeddings(config) else set()
    if set(missing) - allowed or unexpected:
        raise SlimpackError(
            f"{directory}: tensors do not match the config (missing {sorted(set(missing) - allowed)[:3]})"
        )
    if allowed:
        model.tie_weights()
    model.eval()
    if device.startswith("cuda"):
        from torch.sparse import to_sparse_semi_structured

        model.to(device)
        for name in index["modules"]:
            lin = model.get_submodule(name)
            lin.weight = nn.Parameter(to_sparse_semi_structured(lin.weight.detach()), requires_grad=False)
    elif dtype is not None:
        model.to(dtype)
    return model


class Semi24Exporter:
    """``--format semi24``: the compressed 2:4 checkpoint for ``torch.sparse`` semi-structured kernels."""

    engine = "torch-semi24"
    per_layer_shapes = True
    model_directory = False

    def __init__(self, dtype: str = "float16") -> None:
        if dtype not in DTYPES:
            raise SlimpackError(f"semi24 dtype {dtype!r} is not supported; choose one of: {', '.join(DTYPES)}")
        self.dtype = DTYPES[dtype]

    def check_source(self, model_dir: Path) -> None:
        if checkpoint_kind(model_dir).quantized:
            raise SlimpackError(
                f"{str(model_dir)!r} is a quantized checkpoint; semi24 exports the fp 2:4 model it came from"
            )

    def export(
        self, loaded: LoadedModel, model_dir: Path, out: Path, cache: GraphCache | None = None
    ) -> dict[str, Any]:
        return save_semi24(loaded.model, out, self.dtype)

    def count_zeros(self, out: Path, details: dict[str, Any]) -> ZeroCounts:
        model = load_semi24(out)
        return {
            name: {"zeros": int((lin.weight == 0).sum()), "numel": lin.weight.numel()}
            for name, lin in adapter_for(model).named_linears(model).items()
        }
