"""The quantization table: dense / pruned (fp32) / quantized runs side by side — perplexity, time, size
on disk and the fraction of pruned zeros that are still exactly zero."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prune.manifest import pruning_label
from prune.report import is_dense, markdown_table


def quant_row(r: Any) -> tuple[Any, ...]:
    """One table row for a dense eval result (a dict) or a prune / quantize `prune.manifest.Manifest`."""
    if is_dense(r):
        return ("dense", "fp32", "-", "0.00 %", r.perplexity, "-", "-", "-")
    ppl = r.perplexity if r.perplexity is not None else float("nan")
    size = f"{r.size_bytes / 2**20:.1f}" if r.size_bytes else "-"
    zeros = f"{100 * r.sparsity.overall:.2f} %"
    if r.stage != "quantize":
        return (r.pruning(), "fp32", "-", zeros, ppl, "-", size, "-")
    q = r.quantization
    assert q is not None, "a quantize manifest records its quantization"
    joint = r.method.options.get("joint_with")
    if joint:
        pruning, mode = pruning_label(joint["name"], r.pattern, r.target_sparsity, r.allocation_name), "joint"
    else:
        pruning = q.source_pruning()
        mode = "sequential" if pruning != "dense" else "-"
    weights = f"{r.method.name} {q.bits}-bit g{q.group_size}" + (" act-order" if q.act_order else "")
    z = q.pruned_zeros
    kept = f"{z.kept}/{z.pruned}" if z.pruned else "-"
    return (pruning, weights, mode, zeros, ppl, f"{r.timing.seconds:.1f}", size, kept)


def quant_table(results: Iterable[Any]) -> str:
    """Markdown table of dense, pruned and quantized runs."""
    rows = [quant_row(r) for r in results]
    headers = ["pruning", "weights", "mode", "zeros", "perplexity", "quantize s", "size MiB", "pruned zeros kept"]
    return markdown_table(headers, rows)
