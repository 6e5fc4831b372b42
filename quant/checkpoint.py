"""Write and read the standard GPTQ checkpoint (the layout AutoGPTQ wrote and GPTQModel / transformers load).

A directory with ``config.json`` carrying ``quantization_config`` (``quant_method: gptq``, ``bits``,
``group_size``, ``desc_act``, ``sym``, ``static_groups``, ``checkpoint_format``), the same object in
``quantize_config.json`` (older loaders read that file), tokenizer files, and one ``model.safetensors``:
for every quantized linear ``{name}.qweight / .qzeros / .scales / .g_idx`` (`quant.pack`), every other
tensor (embeddings, norms) in fp16 — the format's dtype — and a tied ``lm_head`` stored once.

`load_gptq` reads it back as a plain fp32 torch model whose quantized linears hold the dequantized
weights ``(q − zero) · scale`` — the model slimpack evaluates.

``checkpoint_format: gptq`` (v1, the default) is what AutoGPTQ, GPTQModel, transformers, vLLM and
ExLlama read; it stores ``zero − 1``. Our grids never use zero point 0 (`quant.grid`), so even asymmetric
v1 checkpoints are exact — but GPTQModel 7.6 refuses to load *any* ``sym=False`` v1 checkpoint that it did
not produce itself (old AutoGPTQ ones overflowed), so for asymmetric grids meant for GPTQModel write
``gptq_v2`` (zero stored as is), which it loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from prune.architecture import adapter_for
from prune.checkpoint_kinds import load_state_strict
from prune.errors import SlimpackError
from prune.io import read_safetensors, write_json_atomic
from prune.structured.shapes import STRUCTURE_KEY, apply_structure
from quant.grid import QuantizedWeight
from quant.pack import from_gptq, n_words, to_gptq
from quant.spec import DEQUANTIZED, ZERO_OFFSET, QuantSpec

SUFFIXES = ("qweight", "qzeros", "scales", "g_idx")
WEIGHTS = "model.safetensors"


def quantization_config(
    spec: QuantSpec, percdamp: float | None, method: str, fmt: str = "gptq", true_sequential: bool = False
) -> dict[str, Any]:
    """The ``quantization_config`` object of ``config.json`` (``percdamp`` None: no Hessian, as RTN)."""
    config = {
        "quant_method": "gptq",
        "bits": spec.bits,
        "group_size": spec.group_size,
        "desc_act": spec.act_order,
        "sym": spec.sym,
        "static_groups": spec.static_groups,
        "true_sequential": true_sequential,
        "damp_percent": percdamp,
        "checkpoint_format": fmt,
        "pack_dtype": "int32",
        "meta": {"quantizer": [f"slimpack:{method}"]},
    }
    if percdamp is None:
        del config["damp_percent"]
    return config


def read_quantization_config(directory: Path) -> dict[str, Any] | None:
    """The ``quantization_config`` of a model directory, or None for an unquantized model."""
    config = Path(directory) / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("quantization_config")


def save_gptq(
    model: nn.Module,
    quantized: dict[str, QuantizedWeight],
    tokenizer: Any,
    directory: Path,
    qconfig: dict[str, Any],
) -> None:
    """Write ``model`` with its ``quantized`` linears (by module name) as a GPTQ checkpoint into ``directory``."""
    tied = adapter_for(model).tied_embeddings(model.config)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if module in quantized and leaf == "weight":
            continue
        if tied and key == "lm_head.weight":
            continue  # stored once, as the embedding
        tensors[key] = value.detach().to(torch.float16).contiguous() if value.is_floating_point() else value
    for name, qw in quantized.items():
        for suffix, tensor in to_gptq(qw, qconfig["checkpoint_format"]).items():
            tensors[f"{name}.{suffix}"] = tensor
    save_file(tensors, str(Path(directory) / WEIGHTS), metadata={"format": "pt"})
    write_gptq_config(model.config, Path(directory), qconfig)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def write_gptq_config(model_config: Any, directory: Path, qconfig: dict[str, Any]) -> None:
    """``config.json`` (the model's, with ``quantization_config`` and the fp16 dtype) and ``quantize_config.json``."""
    config = model_config.to_dict()
    config["quantization_config"] = qconfig
    config["torch_dtype"] = config["dtype"] = "float16"
    write_json_atomic(directory / "config.json", config)
    write_json_atomic(directory / "quantize_config.json", qconfig)


@dataclass(frozen=True)
class PackedCount:
    """What the streamed quantize keeps of one linear once it is written: its pruned weights, and how many of
    them are exactly zero in the quantized weight."""

    pruned_count: int
    kept: int


@dataclass(frozen=True)
class GPTQEncoder:
    """A `prune.stream.BlockEncoder` writing a block in the GPTQ layout: each quantized linear (the walk's
    `quant.methods.QuantizedLayer` outputs) as its four packed tensors, every other tensor as it is (the
    writer stores floating tensors in fp16). ``fmt`` `quant.spec.DEQUANTIZED`: every tensor as it is."""

    fmt: str

    def encode(
        self, prefix: str, block: nn.Module, outputs: dict[str, Any]
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        for name, value in block.state_dict().items():
            module, _, leaf = f"{prefix}.{name}".rpartition(".")
            if not (module in outputs and leaf == "weight"):
                tensors[f"{prefix}.{name}"] = value
        counts: dict[str, Any] = {}
        for module, layer in outputs.items():
            if self.fmt == DEQUANTIZED:
                tensors[f"{module}.weight"] = block.get_submodule(module.removeprefix(prefix + ".")).weight
            else:
                for suffix, tensor in to_gptq(layer.weight, self.fmt).items():
                    tensors[f"{module}.{suffix}"] = tensor
            counts[module] = PackedCount(layer.pruned_count, layer.kept)
        return tensors, counts


@dataclass(frozen=True)
class GPTQCodec:
    """A `prune.lazy.TensorCodec`: a quantized linear's ``weight`` is decoded from its four packed tensors
    (dequantized, ``(q − zero) · scale``, as `load_gptq` does)."""

    spec: QuantSpec
    fmt: str

    def prepare(self, config: Any) -> None:
        del config.quantization_config

    def sources(self, name: str, stored: dict[str, Path]) -> tuple[str, ...]:
        module, _, leaf = name.rpartition(".")
        if leaf == "weight" and f"{module}.qweight" in stored:
            return tuple(f"{module}.{suffix}" for suffix in SUFFIXES)
        return (name,)

    def decode(self, name: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        if len(tensors) == 1:
            return tensors[name]
        module = name.rpartition(".")[0]
        return from_gptq({s: tensors[f"{module}.{s}"] for s in SUFFIXES}, self.spec, self.fmt).dequantize()

    def shape(self, name: str, headers: dict[str, dict[str, Any]]) -> list[int]:
        """``[out, in]`` of a quantized linear: ``scales [G, out]``, ``g_idx [in]``; ``qweight`` must then be
        ``[⌈in·bits/32⌉, out]`` and ``qzeros`` ``[G, ⌈out·bits/32⌉]`` (`quant.pack.to_gptq`)."""
        module, _, leaf = name.rpartition(".")
        if leaf != "weight" or f"{module}.qweight" not in headers:  # stored as it is (a bias, a norm)
            return list(headers[name].get("shape", []))
        shapes = {s: list(headers[f"{module}.{s}"].get("shape", [])) for s in SUFFIXES}
        groups, out_f = (shapes["scales"] + [0, 0])[:2]
        in_f = (shapes["g_idx"] + [0])[0]
        bits = self.spec.bits
        expected = {"qweight": [n_words(in_f, bits), out_f], "qzeros": [groups, n_words(out_f, bits)]}
        for suffix, want in expected.items():
            if shapes[suffix] != want:
                raise SlimpackError(
                    f"tensor '{module}.{suffix}' has shape {shapes[suffix]}, but its {bits}-bit quantization_config "
                    f"with scales {shapes['scales']} and g_idx {shapes['g_idx']} needs {want}; the checkpoint is damaged"
                )
        return [out_f, in_f]


@dataclass
class LoadedQuantized:
    model: nn.Module
    quantized: dict[str, QuantizedWeight]
    config: dict[str, Any]


def spec_from_config(qconfig: dict[str, Any]) -> QuantSpec:
    return QuantSpec(
        bits=int(qconfig["bits"]),
        group_size=int(qconfig.get("group_size", -1)),
        sym=bool(qconfig.get("sym", True)),
        act_order=bool(qconfig.get("desc_act", False)),
        static_groups=bool(qconfig.get("static_groups", False)),
    )


def load_gptq(directory: Path, dtype: torch.dtype = torch.float32) -> LoadedQuantized:
    """Read a GPTQ checkpoint (v1 ``gptq`` format) into a torch model with dequantized weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = Path(directory)
    qconfig = read_quantization_config(directory)
    if not qconfig or qconfig.get("quant_method") != "gptq":
        raise SlimpackError(f"{directory} is not a GPTQ checkpoint (config.json has no gptq quantization_config)")
    fmt = qconfig.get("checkpoint_format", "gptq")
    if fmt not in ZERO_OFFSET:
        raise SlimpackError(
            f"{directory}: checkpoint_format {fmt!r} is not supported; slimpack reads {sorted(ZERO_OFFSET)}"
        )
    spec = spec_from_config(qconfig)
    tensors = read_safetensors(directory)
    config = AutoConfig.from_pretrained(directory)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    structure = getattr(config, STRUCTURE_KEY, None)
    if structure is not None:  # a structured-pruned model, quantized: cut its layers to their recorded shapes
        apply_structure(adapter_for(model).blocks(model), structure)
    quantized: dict[str, QuantizedWeight] = {}
    state: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        module, _, leaf = key.rpartition(".")
        if leaf == "qweight":
            qw = from_gptq({s: tensors[f"{module}.{s}"] for s in SUFFIXES}, spec, fmt)
            quantized[module] = qw
            state[f"{module}.weight"] = qw.dequantize()
        elif leaf not in SUFFIXES:
            state[key] = value
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    load_state_strict(model, state, directory)
    model.eval()
    return LoadedQuantized(model, quantized, qconfig)


@dataclass(frozen=True)
class GPTQCheckpoint:
    """The checkpoint kind (`prune.checkpoint_kinds.CheckpointKind`) of a GPTQ directory: read back by `load_gptq`; the
    extras hold the quantized weights by module and the ``quantization_config``."""

    name: str = "gptq"
    quantized: bool = True
    per_layer_shapes: bool = False  # (a GPTQ checkpoint of a structured model has them; `load_gptq` reads both)

    def claims(self, config: dict[str, Any]) -> bool:
        q = config.get("quantization_config")
        return isinstance(q, dict) and q.get("quant_method") == "gptq"

    def load(self, path: Path, dtype: torch.dtype) -> tuple[nn.Module, dict[str, Any]]:
        loaded = load_gptq(path, dtype)
        return loaded.model, {"quantized": loaded.quantized, "quantization_config": loaded.config}

    def codec(self, config: dict[str, Any]) -> GPTQCodec | None:
        qconfig = config["quantization_config"]
        fmt = qconfig.get("checkpoint_format", "gptq")
        if fmt not in ZERO_OFFSET:
            raise SlimpackError(f"checkpoint_format {fmt!r} is not supported; slimpack reads {sorted(ZERO_OFFSET)}")
        return GPTQCodec(spec_from_config(qconfig), fmt)


GPTQ = GPTQCheckpoint()  # the entry point ``slimpack.checkpoint_kinds: gptq``
