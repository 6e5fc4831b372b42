"""A model directory's ``config.json``, read and checked before any model is built (`read_config`,
`check_config`, `check_sizes` against the shards' headers, `check_context`), and the remote-code names slimpack
drops from every config it opens (`drop_remote_code`).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from pathlib import Path
from typing import Any

from prune.architecture import ADAPTERS, MOE_KEYS, check_architecture
from prune.errors import SlimpackError
from prune.paths import regular_file

log = logging.getLogger(__name__)

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
