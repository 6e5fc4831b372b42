"""The package API behind ``slimpack prune`` / ``eval``: config dataclasses in, manifests out."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from prune.allocation import (
    ALLOCATORS,
    Allocation,
    AllocationContext,
    Allocator,
    block_plan,
    quantize_nm,
    validate_plan,
    weighted_mean,
)
from prune.data import DataSpec, calibration_batches, eval_windows, heldout_batches, load_texts, tokenize
from prune.errors import SlimpackError
from prune.eval import PerplexityResult, perplexity
from prune.io import atomic_output_dir, check_output_dir
from prune.manifest import environment, peak_rss_mib, write_manifest
from prune.masks import Pattern, check_sparsity
from prune.methods import METHODS, LayerMethod
from prune.models import DecoderAdapter, LoadedModel, adapter_for, load_model, save_model
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
    allocation_options: dict[str, Any] = field(default_factory=dict)
    plan_file: Path | None = None
    data: DataSpec = field(default_factory=DataSpec)
    method_options: dict[str, Any] = field(default_factory=dict)
    true_sequential: bool = False
    device: str = "cpu"
    overwrite: bool = False
    evaluate: EvalSpec | None = None
    progress: bool = True


def read_plan_file(path: Path) -> tuple[dict[str, float], str]:
    """A plan JSON: ``{module: ratio}`` or the ``slimpack plan`` output (``{"plan": {...}, ...}``)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SlimpackError(f"plan file {str(path)!r} does not exist; write one with `slimpack plan`") from None
    except json.JSONDecodeError as err:
        raise SlimpackError(f"plan file {str(path)!r} is not valid JSON ({err.msg}, line {err.lineno})") from None
    plan = data.get("plan", data) if isinstance(data, dict) else None
    if not isinstance(plan, dict):
        raise SlimpackError(f"plan file {str(path)!r} holds no {{module: ratio}} mapping")
    return plan, str(data.get("allocation", "file"))


def allocate(
    allocator: Allocator | None,
    plan_file: tuple[dict[str, float], str] | None,
    target: float,
    pattern: Pattern,
    ctx: AllocationContext,
) -> tuple[Allocation, float]:
    """The validated plan (from an allocator, or as read by `read_plan_file`) and its target."""
    if plan_file is not None:
        plan, source = plan_file
        validate_plan(plan, ctx)
        target = weighted_mean(plan, ctx.numel)
        ratios = [sum(plan[n] for n in names) / len(names) for names in ctx.block_linears]
        allocation = Allocation(plan, ratios, options={"allocation": source})
    else:
        assert allocator is not None
        allocation = allocator.allocate(target, ctx)
    if pattern.is_nm:  # mixed N:M: an integer N per block, same kept-parameter total as uniform
        ns = quantize_nm(allocation.block_ratios, pattern.m, pattern.n, ctx.block_numel())
        allocation.block_ratios = [n / pattern.m for n in ns]
        allocation.plan = block_plan(allocation.block_ratios, ctx)
        allocation.options["block_n"] = ns
    validate_plan(allocation.plan, ctx, target)
    return allocation, target


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


def allocation_context(
    loaded: LoadedModel, batches: list | None, device: str = "cpu", progress: bool = True, data: DataSpec | None = None
) -> AllocationContext:
    adapter = adapter_for(loaded.model)

    def heldout(n: int) -> list:
        """``n`` calibration-split windows disjoint from the calibration windows."""
        if data is None or loaded.tokenizer is None:
            raise SlimpackError("this allocation needs held-out calibration text; run it through slimpack prune/plan")
        return heldout_batches(loaded.tokenizer, data, n)

    return AllocationContext(
        heldout=heldout,
        block_linears=adapter.block_linear_names(loaded.model),
        numel={n: lin.weight.numel() for n, lin in adapter.named_linears(loaded.model).items()},
        model=loaded.model,
        adapter=adapter,
        batches=batches,
        device=device,
        progress=progress,
    )


@dataclass
class Prepared:
    """What a walk needs besides the model: calibration batches, gradients, the validated plan."""

    batches: list | None
    grads: dict | None
    allocation: Allocation
    target: float


def prepare_walk(
    loaded: LoadedModel,
    method: LayerMethod,
    allocator: Allocator | None,
    plan_file: tuple[dict[str, float], str] | None,
    target: float,
    pattern: Pattern,
    data: DataSpec,
    device: str = "cpu",
    progress: bool = True,
) -> Prepared:
    """Calibration batches (only if the method or the allocator needs data), gradients (only if the
    method needs them) and the plan — one copy for `prune` and `quant.api.quantize`."""
    allocation_data = allocator is not None and allocator.needs_calibration
    calibrated = bool(method.needs) or method.needs_gradients or allocation_data
    batches = calibration_batches(loaded.tokenizer, data) if calibrated else None
    grads = None
    if method.needs_gradients:
        linears = adapter_for(loaded.model).named_linears(loaded.model)
        loaded.model.to(device)
        grads = gradient_norms(loaded.model, linears, batches or [], device, progress)
        loaded.model.to("cpu")
    ctx = allocation_context(loaded, batches, device, progress, data)
    allocation, target = allocate(allocator, plan_file, target, pattern, ctx)
    return Prepared(batches, grads, allocation, target)


def load_checked(
    spec: str, *checks: Callable[[int, str], None]
) -> tuple[LoadedModel, DecoderAdapter, dict[str, nn.Linear]]:
    """Load a model on the CPU and run every ``check(in_features, module_name)`` on each prunable linear
    (pattern and group-size fit), so bad settings fail before any calibration."""
    loaded = load_model(spec, device="cpu")
    adapter = adapter_for(loaded.model)
    linears = adapter.named_linears(loaded.model)
    for name, lin in linears.items():
        for check in checks:
            check(lin.in_features, name)
    return loaded, adapter, linears


def prune(config: PruneConfig) -> dict[str, Any]:
    """Prune ``config.model`` and write it with its manifest to ``config.out``; returns the manifest."""
    method = METHODS.build(config.method, config.method_options)
    pattern, ratio = resolve_pattern(config, method)
    allocator = None if config.plan_file else ALLOCATORS.build(config.allocation, config.allocation_options)
    plan_file = read_plan_file(config.plan_file) if config.plan_file else None
    config.data.check()
    check_output_dir(config.out, config.overwrite)

    loaded, adapter, linears = load_checked(config.model, pattern.check_features)
    model = loaded.model

    start = time.perf_counter()
    prep = prepare_walk(
        loaded, method, allocator, plan_file, ratio, pattern, config.data, config.device, config.progress
    )
    allocation, ratio, batches = prep.allocation, prep.target, prep.batches
    calibrated = batches is not None
    result = walk(
        model,
        adapter,
        method,
        allocation.plan,
        pattern,
        batches,
        prep.grads,
        config.device,
        config.true_sequential,
        config.progress,
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
        "allocation": {
            "name": allocation.options["allocation"] if plan_file else config.allocation,
            "plan_file": str(config.plan_file) if config.plan_file else None,
            **allocation.to_dict(),
        },
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
    return finish_prune(loaded, body, allocation, config.out, config.overwrite, config.evaluate, config.device,
                        config.progress)  # fmt: skip


def finish_prune(
    loaded: LoadedModel,
    body: dict[str, Any],
    allocation: Allocation,
    out: Path,
    overwrite: bool,
    spec: EvalSpec | None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate (if asked), then write the model, the allocation's artifacts and the manifest to ``out``
    atomically; returns the manifest. Shared by unstructured and structured pruning."""
    if spec is not None:
        ppl = evaluate_model(loaded, spec, device, progress)
        body["evaluation"] = {**asdict(spec), **ppl.to_dict()}
    with atomic_output_dir(out, overwrite) as tmp:
        save_model(loaded.model, loaded.tokenizer, tmp)
        allocation.write_artifacts(tmp)
        return write_manifest(tmp, body)


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


@dataclass(frozen=True)
class PlanConfig:
    model: str
    out: Path
    sparsity: float = 0.5
    pattern: str = "unstructured"
    allocation: str = "uniform"
    allocation_options: dict[str, Any] = field(default_factory=dict)
    data: DataSpec = field(default_factory=DataSpec)
    device: str = "cpu"
    overwrite: bool = False
    progress: bool = True


def plan(config: PlanConfig) -> dict[str, Any]:
    """Compute a sparsity plan for ``config.model`` and write it as JSON (+ a PNG beside it)."""
    from prune.io import write_json_atomic
    from prune.plots import plan_figure

    pattern = Pattern.parse(config.pattern)
    target = pattern.fixed_sparsity if pattern.is_nm else check_sparsity(config.sparsity)
    allocator = ALLOCATORS.build(config.allocation, config.allocation_options)
    config.data.check()
    if config.out.exists() and not config.overwrite:
        raise SlimpackError(f"output {str(config.out)!r} already exists; pass --overwrite or choose another --out")
    loaded = load_model(config.model)
    batches = calibration_batches(loaded.tokenizer, config.data) if allocator.needs_calibration else None
    ctx = allocation_context(loaded, batches, config.device, config.progress, config.data)
    allocation, target = allocate(allocator, None, float(target), pattern, ctx)
    result = {
        "model": config.model,
        "allocation": config.allocation,
        "target": target,
        "pattern": str(pattern),
        "calibration": {**config.data.to_dict(), "used": batches is not None},
        **allocation.to_dict(),
        "environment": environment(),
    }
    plan_figure(allocation, config.out.with_suffix(".png"), f"{config.allocation} plan, target {target:.2f}")
    if allocation.artifacts:  # e.g. rl-search's agent and curves, in a folder named after the plan
        allocation.write_artifacts(config.out.with_suffix(""))
    write_json_atomic(config.out, result)
    return result
