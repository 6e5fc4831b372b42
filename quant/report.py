"""The quantization table: dense / pruned (fp32) / quantized runs side by side — perplexity, time, size
on disk and the fraction of pruned zeros that are still exactly zero."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prune.report import markdown_table


def _pruning(manifest: Mapping[str, Any] | None) -> str:
    """``"sparsegpt 50 % dlp"`` / ``"wanda 2:4"`` / ``"dense"`` for a prune manifest (or its brief)."""
    if not manifest or manifest.get("stage") != "prune":
        return "dense"
    pattern = manifest["pattern"]
    setting = pattern if ":" in pattern else f"{100 * manifest['target_sparsity']:.0f} %"
    allocation = (manifest.get("allocation") or {}).get("name", "uniform")
    return f"{manifest['method']['name']} {setting}" + ("" if allocation in ("uniform", None) else f" {allocation}")


def quant_row(r: Mapping[str, Any], size_bytes: int | None = None) -> tuple[Any, ...]:
    """One table row for a dense eval result, a prune manifest or a quantize manifest."""
    ppl = r.get("evaluation", r).get("perplexity", float("nan"))
    size = f"{(r.get('size_bytes') or size_bytes or 0) / 2**20:.1f}" if (r.get("size_bytes") or size_bytes) else "-"
    if r.get("stage") == "quantize":
        q, opts = r["quantization"], r["method"]["options"]
        joint = opts.get("joint_with")
        if joint:
            pattern = r["pattern"]
            setting = pattern if ":" in pattern else f"{100 * r['target_sparsity']:.0f} %"
            alloc = (r.get("allocation") or {}).get("name") or "uniform"
            pruning = f"{joint['name']} {setting}" + ("" if alloc == "uniform" else f" {alloc}")
            mode = "joint"
        else:
            pruning = _pruning(r.get("source_manifest"))
            mode = "sequential" if pruning != "dense" else "-"
        weights = f"{r['method']['name']} {q['bits']}-bit g{q['group_size']}" + (" act-order" if q["act_order"] else "")
        z = r["pruned_zeros"]
        kept = f"{z['kept']}/{z['pruned']}" if z["pruned"] else "-"
        seconds = f"{r['timing']['quantize_seconds']:.1f}"
        return (pruning, weights, mode, f"{100 * r['sparsity']['overall']:.2f} %", ppl, seconds, size, kept)
    if r.get("stage") == "prune":
        return (_pruning(r), "fp32", "-", f"{100 * r['sparsity']['overall']:.2f} %", ppl, "-", size, "-")
    return ("dense", "fp32", "-", "0.00 %", ppl, "-", size, "-")


def quant_table(results: Iterable[Mapping[str, Any]], sizes: Iterable[int | None] | None = None) -> str:
    """Markdown table; ``sizes`` gives the on-disk size of runs whose manifest has none (prune dirs)."""
    results = list(results)
    sizes = list(sizes) if sizes is not None else [None] * len(results)
    rows = [quant_row(r, s) for r, s in zip(results, sizes)]
    headers = ["pruning", "weights", "mode", "zeros", "perplexity", "quantize s", "size MiB", "pruned zeros kept"]
    return markdown_table(headers, rows)
