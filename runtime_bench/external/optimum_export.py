"""Run inside .venv-optimum: export a local Hugging Face causal LM with optimum's ONNX exporter, the reference that
our own export's decode latency is compared with.

Usage: .venv-optimum/bin/python runtime_bench/external/optimum_export.py MODEL_DIR OUT_DIR [--threads N]

The export is optimum's default for the task ``text-generation-with-past`` (what ``optimum-cli export onnx --task
text-generation-with-past`` does): fp32, opset = the architecture's default (18), TorchScript exporter with constant
folding, no ORT graph optimization (``optimize=None``), no onnxslim, optimum's post-processing (tied-weight
deduplication), and its validation against the PyTorch model. OUT_DIR gets model.onnx in the layout of
ORTModelForCausalLM (inputs input_ids, attention_mask, position_ids, past_key_values.{i}.key/value; outputs logits,
present.{i}.key/value), the config and tokenizer, and optimum-export.json recording the options, versions, the
config adaptations made and the wall time.

Offline: the hub is never asked (HF_HUB_OFFLINE, local_files_only). MODEL_DIR is never modified: when its files
were written by transformers 5 (``rope_parameters`` instead of ``rope_theta``, tokenizer class
``TokenizersBackend``) that optimum's transformers (< 4.58) would misread, adapted copies of the JSON files go to a
temporary directory beside symlinks to the weights, and the export reads that directory.

Only the standard library, torch, transformers and optimum are imported: this file is executed by another
interpreter, not slimpack's.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

log = logging.getLogger("optimum_export")

TASK = "text-generation-with-past"
# Every main_export argument that shapes the graph, spelled out with optimum's defaults so the record is exact.
EXPORT_OPTIONS: dict[str, Any] = {
    "task": TASK,
    "opset": None,  # None: the architecture's DEFAULT_ONNX_OPSET (18 for llama in optimum-onnx 0.1.0)
    "device": "cpu",
    "dtype": "fp32",
    "optimize": None,  # no ORTOptimizer pass (O1..O4 are opt-in)
    "monolith": False,
    "no_post_process": False,  # post-processing = tied-weight dedup (needs accelerate)
    "do_validation": True,
    "no_dynamic_axes": False,
    "do_constant_folding": True,
    "slim": False,  # no onnxslim
    "library_name": "transformers",
    "framework": "pt",
    "local_files_only": True,
    "trust_remote_code": False,
}

_JSON_FILES = ("config.json", "tokenizer_config.json", "generation_config.json")


def _adapt_config(config: dict[str, Any]) -> list[str]:
    """Rewrite a transformers-5 config.json in place (the dict) into the keys transformers 4.x reads."""
    changes: list[str] = []
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" not in config:
        if "rope_theta" not in rope:  # per-layer-type nesting (e.g. gemma3): {"full_attention": {...}, ...}
            raise NotImplementedError(f"nested rope_parameters are not adapted for transformers 4.x: {rope}")
        config["rope_theta"] = rope["rope_theta"]
        changes.append(f"config.json: rope_theta = rope_parameters.rope_theta = {rope['rope_theta']}")
        if "partial_rotary_factor" in rope and "partial_rotary_factor" not in config:
            config["partial_rotary_factor"] = rope["partial_rotary_factor"]
            changes.append(f"config.json: partial_rotary_factor = {rope['partial_rotary_factor']}")
        scaling = {k: v for k, v in rope.items() if k not in ("rope_theta", "partial_rotary_factor")}
        rope_type = scaling.get("rope_type", scaling.get("type", "default"))
        if rope_type != "default":
            config["rope_scaling"] = scaling
            changes.append(f"config.json: rope_scaling = {scaling}")
        elif config.get("rope_scaling") is not None:
            config["rope_scaling"] = None
            changes.append("config.json: rope_scaling = None (rope_type default)")
    return changes


def _adapt_tokenizer_config(tok: dict[str, Any]) -> list[str]:
    import transformers

    cls = tok.get("tokenizer_class")
    if cls and not hasattr(transformers, cls):
        # transformers 5's generic fast-tokenizer class; 4.x spells it PreTrainedTokenizerFast (tokenizer.json).
        tok["tokenizer_class"] = "PreTrainedTokenizerFast"
        return [f"tokenizer_config.json: tokenizer_class {cls} -> PreTrainedTokenizerFast"]
    return []


def prepare_model_dir(model_dir: Path, scratch: Path) -> tuple[Path, list[str]]:
    """Return the directory to export from: MODEL_DIR itself, or an adapted view of it under scratch."""
    loaded = {n: json.loads((model_dir / n).read_text()) for n in _JSON_FILES if (model_dir / n).is_file()}
    if "config.json" not in loaded:
        raise FileNotFoundError(f"{model_dir}/config.json is missing")
    changes = _adapt_config(loaded["config.json"])
    if "tokenizer_config.json" in loaded:
        changes += _adapt_tokenizer_config(loaded["tokenizer_config.json"])
    if not changes:
        return model_dir, changes
    view = scratch / "model"
    view.mkdir()
    for src in model_dir.iterdir():
        if src.name in loaded:
            (view / src.name).write_text(json.dumps(loaded[src.name], indent=2) + "\n")
        elif src.is_file():
            (view / src.name).symlink_to(src.resolve())  # weights and tokenizer.json are read, never copied
    for change in changes:
        log.info("adapted (copy in %s): %s", view, change)
    return view, changes


def _check_config(export_dir: Path, model_dir: Path) -> None:
    """Fail before exporting if transformers 4.x would read a different RoPE base than the source config says."""
    from transformers import AutoConfig

    src = json.loads((model_dir / "config.json").read_text())
    want = src.get("rope_theta", (src.get("rope_parameters") or {}).get("rope_theta"))
    cfg = AutoConfig.from_pretrained(export_dir, local_files_only=True)
    got = getattr(cfg, "rope_theta", None)
    if want is not None and got != want:
        raise ValueError(f"transformers {cfg.transformers_version} reads rope_theta={got}, the source says {want}")
    log.info(
        "config as transformers reads it: model_type=%s rope_theta=%s rope_scaling=%s tie_word_embeddings=%s",
        cfg.model_type,
        got,
        getattr(cfg, "rope_scaling", None),
        getattr(cfg, "tie_word_embeddings", None),
    )


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for dist in ("optimum-onnx", "optimum", "transformers", "torch", "onnx", "onnxruntime", "accelerate"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def export(model_dir: Path, out_dir: Path, threads: int | None = None) -> dict[str, Any]:
    import torch
    from optimum.exporters.onnx import main_export

    if threads:
        torch.set_num_threads(threads)
    versions = _versions()
    if versions["accelerate"] == "absent":
        log.warning("accelerate is absent: optimum will not deduplicate the tied embedding / lm_head weights")
    log.info("versions: %s", versions)
    log.info("main_export options: %s", EXPORT_OPTIONS)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="optimum-export-") as scratch:
        export_dir, changes = prepare_model_dir(model_dir, Path(scratch))
        _check_config(export_dir, model_dir)
        start = time.perf_counter()
        main_export(str(export_dir), output=out_dir, **EXPORT_OPTIONS)
        wall_s = time.perf_counter() - start
    log.info("optimum export took %.1f s (torch threads: %d)", wall_s, torch.get_num_threads())
    record = {
        "model_dir": str(model_dir),
        "options": EXPORT_OPTIONS,
        "config_adaptations": changes,
        "versions": versions,
        "torch_threads": torch.get_num_threads(),
        "export_wall_s": round(wall_s, 2),
        "files": sorted(p.name for p in out_dir.iterdir()),
    }
    (out_dir / "optimum-export.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="local HF model directory (config.json, *.safetensors, tokenizer)")
    parser.add_argument("out_dir", type=Path, help="where model.onnx and its companions are written")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for the export")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.model_dir.is_dir():
        parser.error(f"{args.model_dir} is not a directory")
    out, model = args.out_dir.resolve(), args.model_dir.resolve()
    if out == model or out in model.parents or model in out.parents:  # `prune.paths.check_apart`'s rule (no
        parser.error("OUT_DIR must not be, hold or lie inside MODEL_DIR (the input is never modified)")  # slimpack here)
    export(args.model_dir.resolve(), args.out_dir)


if __name__ == "__main__":
    main()
