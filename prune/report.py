"""Plain-text tables of runs and of their measured sparsity (`prune.sparsity`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prune.manifest import EvaluationRecord
from prune.registry import Registry
from prune.sparsity import SparsityRecord


def markdown_table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """A GitHub-markdown table; floats get 4 significant digits."""

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def sparsity_table(record: SparsityRecord) -> str:
    rows: list[tuple[Any, ...]] = [
        (name, "×".join(map(str, m.shape)), m.zeros, f"{100 * m.sparsity:.2f} %")
        for name, m in (record.modules or {}).items()
    ]
    rows.append(("**overall**", "", record.zeros, f"{100 * record.overall:.2f} %"))
    return markdown_table(["module", "shape", "zeros", "sparsity"], rows)


Result = Any  # a `prune.manifest.Manifest`, or a `prune.manifest.EvalRecord` (a dense model: ``stage`` "eval")

# Tables for runs of a later stage (e.g. "quantize": `quant.report`): pyproject.toml's entry points.
RESULT_TABLES: Registry[Callable[[list[Result]], str]] = Registry("result table", "slimpack.result_tables")


def is_dense(r: Result) -> bool:
    """A ``slimpack eval`` result: the dense model's row."""
    return r.stage == "eval"


def results_table(results: Iterable[Result]) -> str:
    """One row per run: a dense ``slimpack eval`` JSON or a ``slimpack prune --eval`` manifest."""
    rows = []
    for r in results:
        if is_dense(r):  # an eval result of an unpruned model
            rows.append(("dense", "-", "-", "0.00 %", r.perplexity, "-", f"{r.peak_rss_mib:.0f}",
                         f"{r.windows}×{r.seqlen}"))  # fmt: skip
            continue
        ev = r.evaluation or EvaluationRecord()
        rows.append(
            (
                r.method.name,
                r.allocation_name,
                r.pattern,
                f"{100 * r.sparsity.overall:.2f} %",
                ev.perplexity if ev.perplexity is not None else float("nan"),
                f"{r.timing.seconds:.1f}",
                f"{r.timing.peak_rss_mib:.0f}",
                f"{ev.windows or '?'}×{ev.seqlen or '?'}",
            )
        )
    headers = [
        "method",
        "allocation",
        "pattern",
        "measured sparsity",
        "perplexity",
        "prune wall-time (s)",
        "peak RSS (MiB)",
        "eval windows",
    ]
    return markdown_table(headers, rows)


def summarize(result: Result) -> dict[str, Any]:
    """A run without its per-module detail and file hashes (for result JSON files)."""
    data = result.to_dict()
    out = {k: v for k, v in data.items() if k not in ("files", "environment")}
    if isinstance(out.get("sparsity"), dict):  # a manifest's (`SparsityRecord.brief`)
        out["sparsity"] = {k: v for k, v in out["sparsity"].items() if k != "modules"}
    if isinstance(out.get("allocation"), dict):
        out["allocation"] = {k: v for k, v in out["allocation"].items() if k != "plan"}
    out["environment"] = data.get("environment", {})
    return out


def pivot_table(results: Iterable[Result]) -> str:
    """Perplexity with one row per (method, allocation) and one column per setting (sparsity or N:M)."""
    cells: dict[tuple[str, str], dict[str, float]] = {}
    settings: list[str] = []
    for r in results:
        if is_dense(r) or r.perplexity is None:
            continue
        key = (r.method.name, r.allocation_name)
        cells.setdefault(key, {})[r.setting] = r.perplexity
        if r.setting not in settings:
            settings.append(r.setting)
    settings.sort(key=lambda s: (":" in s, s))
    rows = [(m, a, *(cells[(m, a)].get(s, "—") for s in settings)) for m, a in sorted(cells)]
    return markdown_table(["method", "allocation", *settings], rows)
