"""The package API behind ``slimpack quantize``: a (pruned) model in, a GPTQ checkpoint + manifest out.

Sequential mode: the source's exact zeros are its prune mask (prune first with ``slimpack prune``).
Joint mode (``joint_with``): the pruner and the quantizer share one walk — see `quant.methods`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prune.allocation import ALLOCATORS
from prune.api import EvalSpec, evaluate_model, load_checked, prepare_walk, read_plan_file
from prune.data import DataSpec
from prune.errors import SlimpackError
from prune.io import atomic_output_dir, check_output_dir, directory_bytes
from prune.manifest import MANIFEST, environment, peak_rss_mib, read_manifest, write_manifest
from prune.masks import Pattern, check_sparsity
from prune.methods import METHODS
from prune.models import save_model
from prune.report import model_sparsity
from prune.walker import walk
from quant.checkpoint import quantization_config, read_quantization_config, save_gptq
from quant.grid import QuantSpec
from quant.methods import QUANT_METHODS, QuantizedLayer
from quant.pack import CHECKPOINT_BITS, ZERO_OFFSET

log = logging.getLogger(__name__)
DEQUANTIZED = "dequantized"  # no packed checkpoint: any bit width, simulated (e.g. 5–7 bits)


@dataclass(frozen=True)
class QuantizeConfig:
    model: str
    out: Path
    method: str = "gptq"
    spec: QuantSpec = field(default_factory=QuantSpec)
    options: dict[str, Any] = field(default_factory=dict)  # blocksize, percdamp (GPTQ)
    joint_with: str | None = None
    joint_options: dict[str, Any] = field(default_factory=dict)
    sparsity: float = 0.5
    pattern: str = "unstructured"
    scope: str | None = None
    allocation: str = "uniform"
    allocation_options: dict[str, Any] = field(default_factory=dict)
    plan_file: Path | None = None
    data: DataSpec = field(default_factory=DataSpec)
    device: str = "cpu"
    overwrite: bool = False
    evaluate: EvalSpec | None = None
    progress: bool = True
    checkpoint_format: str = "gptq"


def _source_manifest(model: str) -> dict[str, Any] | None:
    path = Path(model)
    return read_manifest(path) if (path / MANIFEST).is_file() else None


def quantize(config: QuantizeConfig) -> dict[str, Any]:
    """Quantize ``config.model`` (optionally pruning it in the same walk) into a GPTQ checkpoint."""
    existing = read_quantization_config(Path(config.model))
    if existing is not None:
        raise SlimpackError(
            f"{config.model!r} is already quantized ({existing.get('quant_method')}); "
            "quantize the unquantized (pruned) model instead"
        )
    formats = (*ZERO_OFFSET, DEQUANTIZED)
    if config.checkpoint_format not in formats:
        raise SlimpackError(
            f"unknown checkpoint format {config.checkpoint_format!r}; choose one of: {', '.join(formats)}"
        )
    if config.checkpoint_format != DEQUANTIZED and config.spec.bits not in CHECKPOINT_BITS:
        raise SlimpackError(
            f"the GPTQ checkpoint format stores {CHECKPOINT_BITS} bits, not {config.spec.bits}; use one of those, "
            f"or --checkpoint-format {DEQUANTIZED} to write the dequantized weights"
        )
    pruner = METHODS.build(config.joint_with, config.joint_options) if config.joint_with else None
    if pruner is not None and config.spec.act_order:
        raise SlimpackError("--act-order cannot be combined with --joint-with: the joint sweep visits columns in order")
    method = QUANT_METHODS.build(config.method, {"spec": config.spec, "pruner": pruner, **config.options})
    if pruner is not None:
        pattern = Pattern.parse(config.pattern, config.scope or pruner.default_scope)
        target = float(pattern.fixed_sparsity if pattern.is_nm else check_sparsity(config.sparsity))
        allocator = None if config.plan_file else ALLOCATORS.build(config.allocation, config.allocation_options)
    else:
        pattern, target, allocator = Pattern(), 0.0, ALLOCATORS.build("uniform", {})
    plan_file = read_plan_file(config.plan_file) if config.plan_file else None
    config.data.check()
    check_output_dir(config.out, config.overwrite)

    loaded, adapter, linears = load_checked(config.model, config.spec.check_layer, pattern.check_features)
    model = loaded.model
    source = _source_manifest(config.model)
    sparsity_before = model_sparsity(linears)

    start = time.perf_counter()
    prep = prepare_walk(
        loaded, method, allocator, plan_file, target, pattern, config.data, config.device, config.progress
    )
    result = walk(model, adapter, method, prep.allocation.plan, pattern, prep.batches, prep.grads, config.device,
                  progress=config.progress)  # fmt: skip
    seconds = time.perf_counter() - start
    layers: dict[str, QuantizedLayer] = result.outputs
    pruned = sum(int(q.pruned.sum()) for q in layers.values())
    kept = sum(int((lin.weight.data[layers[n].pruned] == 0).sum()) for n, lin in linears.items())
    sparsity_after = model_sparsity(linears)
    log.info(
        "quantized %s with %s (%d-bit) in %.1f s; %d/%d pruned zeros kept, sparsity %.2f %%",
        config.model, method.name, config.spec.bits, seconds, kept, pruned, 100 * sparsity_after["overall"],
    )  # fmt: skip

    body: dict[str, Any] = {
        "stage": "quantize",
        "source_model": config.model,
        "source_manifest": _brief(source),
        "method": {"name": method.name, "options": method.options()},
        "quantization": {**config.spec.to_dict(), "checkpoint_format": config.checkpoint_format},
        "pattern": str(pattern),
        "target_sparsity": prep.target,
        "allocation": {"name": config.allocation if pruner else None, **prep.allocation.to_dict()} if pruner else None,
        "calibration": {**config.data.to_dict(), "used": prep.batches is not None},
        "sparsity_before": sparsity_before["overall"],
        "sparsity": sparsity_after,
        "pruned_zeros": {"pruned": pruned, "kept": kept, "fraction_kept": kept / pruned if pruned else 1.0},
        "timing": {"quantize_seconds": seconds, "peak_rss_mib_after_quantize": peak_rss_mib()},
        "environment": environment(),
    }
    if config.evaluate is not None:
        ppl = evaluate_model(loaded, config.evaluate, config.device, config.progress)
        body["evaluation"] = {**asdict(config.evaluate), **ppl.to_dict()}
    qconfig = quantization_config(config.spec, getattr(method, "percdamp", None), method.name, config.checkpoint_format)
    with atomic_output_dir(config.out, config.overwrite) as tmp:
        if config.checkpoint_format == DEQUANTIZED:  # a plain fp32 model holding the grid values
            save_model(model, loaded.tokenizer, tmp)
        else:
            save_gptq(model, {n: q.weight for n, q in layers.items()}, loaded.tokenizer, tmp, qconfig)
        body["size_bytes"] = directory_bytes(tmp)
        manifest = write_manifest(tmp, body)
    return manifest


def _brief(source: dict[str, Any] | None) -> dict[str, Any] | None:
    """The parts of the source's manifest that describe how it was pruned."""
    if source is None:
        return None
    keys = ("stage", "source_model", "method", "pattern", "target_sparsity", "allocation", "evaluation")
    brief = {k: source[k] for k in keys if k in source}
    if isinstance(brief.get("allocation"), dict):
        brief["allocation"] = {k: v for k, v in brief["allocation"].items() if k not in ("plan", "block_ratios")}
    return brief
