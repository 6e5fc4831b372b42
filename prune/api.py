"""The package API behind ``slimpack prune`` / ``eval``: config dataclasses in, manifests out."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prune.allocation import ALLOCATORS, AllocationContext
from prune.data import DataSpec, calibration_batches, eval_windows, load_texts, tokenize
from prune.errors import SlimpackError
from prune.eval import PerplexityResult, perplexity
from prune.io import atomic_output_dir, check_output_dir
from prune.manifest import environment, peak_rss_mib, write_manifest
from prune.masks import Pattern, check_sparsity
from prune.methods import METHODS, LayerMethod
from prune.models import LoadedModel, adapter_for, load_model, save_model
from prune.report import model_sparsity
from prune.stats import gradient_norms
from prune.walker import walk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSpec:
    """Perplexity protocol: which text, window length, how many windows (None = all), batch size."""

    dataset: str = "offline"
    seqlen: int = 512
    windows: int | None = 40
    batch_size: int = 1


@dataclass(frozen=True)
class PruneConfig:
    model: str
    out: Path
    method: str = "wanda"
    sparsity: float = 0.5
    pattern: str = "unstructured"
    scope: str | None = None
    allocation: str = "uniform"
    data: DataSpec = field(default_factory=DataSpec)
    method_options: dict[str, Any] = field(default_factory=dict)
    true_sequential: bool = False
    device: str = "cpu"
    overwrite: bool = False
    evaluate: EvalSpec | None = None
    progress: bool = True


def build_method(name: str, options: dict[str, Any]) -> LayerMethod:
    factory = METHODS.get(name)
    try:
        return factory(**options)
    except TypeError as err:
        raise SlimpackError(f"bad options {options} for method {name!r}: {err}") from None


def resolve_pattern(config: PruneConfig, method: LayerMethod) -> tuple[Pattern, float]:
    pattern = Pattern.parse(config.pattern, config.scope or method.default_scope)
    ratio = pattern.fixed_sparsity if pattern.is_nm else check_sparsity(config.sparsity)
    return pattern, float(ratio)


def evaluate_model(loaded: LoadedModel, spec: EvalSpec, device: str = "cpu", progress: bool = True) -> PerplexityResult:
    """Perplexity of a loaded model under ``spec`` (see `prune.eval` for the definition)."""
    loaded.model.to(device)
    tokens = tokenize(loaded.tokenizer, load_texts(spec.dataset).evaluation)
    windows = eval_windows(tokens, spec.seqlen, spec.windows)
    return perplexity(loaded.model, windows, spec.batch_size, device, progress)


def prune(config: PruneConfig) -> dict[str, Any]:
    """Prune ``config.model`` and write it with its manifest to ``config.out``; returns the manifest."""
    method = build_method(config.method, config.method_options)
    pattern, ratio = resolve_pattern(config, method)
    allocator = ALLOCATORS.get(config.allocation)()
    config.data.check()
    check_output_dir(config.out, config.overwrite)

    loaded = load_model(config.model, device="cpu")
    model = loaded.model
    adapter = adapter_for(model)
    linears = adapter.named_linears(model)
    for name, lin in linears.items():
        pattern.check_features(lin.in_features, name)

    start = time.perf_counter()
    calibrated = bool(method.needs) or method.needs_gradients
    batches = calibration_batches(loaded.tokenizer, config.data) if calibrated else None
    grads = None
    if method.needs_gradients:
        model.to(config.device)
        grads = gradient_norms(model, linears, batches or [], config.device, config.progress)
        model.to("cpu")
    plan = allocator.allocate(ratio, model, AllocationContext(adapter.block_linear_names(model)))
    result = walk(
        model, adapter, method, plan, pattern, batches, grads, config.device, config.true_sequential, config.progress
    )
    seconds = time.perf_counter() - start
    rss = peak_rss_mib()
    measured = model_sparsity(linears)
    log.info("pruned %s with %s to %.2f %% in %.1f s", config.model, method.name, 100 * measured["overall"], seconds)

    body: dict[str, Any] = {
        "stage": "prune",
        "source_model": config.model,
        "method": {"name": method.name, "options": method.options()},
        "pattern": str(pattern),
        "target_sparsity": ratio,
        "allocation": {"name": config.allocation, "plan": plan},
        "true_sequential": config.true_sequential,
        "calibration": {**config.data.to_dict(), "used": calibrated, "tokens": sum(b.numel() for b in batches or [])},
        "sparsity": measured,
        "timing": {
            "prune_seconds": seconds,
            "compress_seconds": sum(r.seconds for r in result.records),
            "peak_rss_mib_after_prune": rss,
        },
        "environment": environment(),
    }
    if config.evaluate is not None:
        ppl = evaluate_model(loaded, config.evaluate, config.device, config.progress)
        body["evaluation"] = {**asdict(config.evaluate), **ppl.to_dict()}
    with atomic_output_dir(config.out, config.overwrite) as tmp:
        save_model(model, loaded.tokenizer, tmp)
        manifest = write_manifest(tmp, body)
    return manifest


def evaluate(model_spec: str, spec: EvalSpec, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    loaded = load_model(model_spec, device=device)
    result = evaluate_model(loaded, spec, device, progress)
    return {
        "model": model_spec,
        **asdict(spec),
        **result.to_dict(),
        "peak_rss_mib": peak_rss_mib(),
        "environment": environment(),
    }
