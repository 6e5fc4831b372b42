"""Readable outputs of the benchmarks: markdown tables in the layout of DLP's Table 5 and the speedup plot."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prune.plots import pyplot, save_figure
from runtime_bench.harness import EngineTiming, Quartiles, Speedup, timings
from runtime_bench.paper import TABLE5_DLP


def q(entry: Quartiles, digits: int = 1) -> str:
    """``median (q1–q3)``."""
    return f"{entry.median:.{digits}f} ({entry.q1:.{digits}f}–{entry.q3:.{digits}f})"


def speedup_of(timing: EngineTiming) -> Speedup:
    """A sweep entry's speedup over the dense artifact (every entry of a sweep has one, `add_speedups`)."""
    assert timing.speedup is not None, "a sweep's entries are timed against its dense artifact"
    return timing.speedup


def sparsity_of(label: str) -> float:
    return 0.0 if label == "dense" else float(label[1:])


def pct(label: str) -> str:
    return "Dense" if label == "dense" else f"{100 * sparsity_of(label):.0f}%"


def table5(results: Mapping[str, Any]) -> str:
    """Rows Latency / Throughput / Speedup, a column per sparsity — the layout of Table 5."""
    t = timings(dict(results))
    labels = sorted(t, key=sparsity_of)
    head = "| Sparsity | " + " | ".join(pct(lab) for lab in labels) + " |"
    rule = "|---|" + "---|" * len(labels)
    lat = "| Latency (ms) | " + " | ".join(f"{t[lab].decode_ms_per_token.median:.2f}" for lab in labels)
    thr = "| Throughput (tokens/s) | " + " | ".join(f"{t[lab].tokens_per_s.median:.2f}" for lab in labels)
    spd = "| Speedup | " + " | ".join(f"{speedup_of(t[lab]).decode.median:.2f}×" for lab in labels)
    return "\n".join([head, rule, lat + " |", thr + " |", spd + " |"])


def paper_table5() -> str:
    labels = sorted(TABLE5_DLP)
    head = "| Sparsity | " + " | ".join("Dense" if s == 0 else f"{100 * s:.0f}%" for s in labels) + " |"
    rows = [
        "| " + name + " | " + " | ".join(fmt(TABLE5_DLP[s][i]) for s in labels) + " |"
        for i, (name, fmt) in enumerate(
            [
                ("Latency (ms)", lambda v: f"{v:.2f}"),
                ("Throughput (tokens/s)", lambda v: f"{v:.2f}"),
                ("Speedup", lambda v: f"{v:.1f}×"),
            ]
        )
    ]
    return "\n".join([head, "|---|" + "---|" * len(labels), *rows])


def speed_table(
    results: Mapping[str, Any], leading: Mapping[str, Mapping[str, str]], sizes: Mapping[str, Mapping[str, Any]]
) -> str:
    """Every figure of one measurement, a row per entry of ``leading`` (its first columns, in its order);
    ``sizes``: entry → {bytes, peak_rss_mib} (artifact bytes and the `runtime_bench.memory` probe's peak)."""
    t = timings(dict(results))
    batch = next((r.batch.batch for r in t.values() if r.batch is not None), None)
    first = next(iter(leading.values()), {})
    head = [*first, "prefill ms (q1–q3)", "decode ms/token (q1–q3)", "tokens/s (b1)"]
    head += [f"tokens/s (b{batch})"] if batch else []
    head += ["decode speedup (q1–q3)", "prefill speedup", "MiB on disk", "peak RSS MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    skips = {r.batch.skipped for r in t.values() if r.batch is not None and r.batch.skipped}
    for lab, cols in leading.items():
        r, size = t[lab], sizes.get(lab, {})
        row = [*cols.values(), q(r.prefill_ms, 1), q(r.decode_ms_per_token, 2), f"{r.tokens_per_s.median:.1f}"]
        if batch:
            b = r.batch.tokens_per_s if r.batch is not None else None
            row.append(f"{b.median:.1f}" if b is not None else "—")
        row += [
            q(r.speedup.decode, 2) if r.speedup is not None else "",
            f"{r.speedup.prefill.median:.2f}" if r.speedup is not None else "",
            f"{size['bytes'] / 2**20:.0f}" if size.get("bytes") else "",
            f"{size['peak_rss_mib']:.0f}" if size.get("peak_rss_mib") is not None else "",
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += [f"\n—: {reason}" for reason in sorted(skips)]
    return "\n".join(lines)


def speedup_figure(series: Iterable[tuple[str, Mapping[str, Any]]], out: Path, title: str = "") -> None:
    """Decode speedup (median, q1–q3 bars) vs sparsity per series (a label, e.g. engine and threads, and its
    measured results: `runtime_bench.harness.timings`'s layout), with DLP's Table 5."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, results in series:
        t = timings(dict(results))
        labs = sorted(t, key=sparsity_of)
        xs = [100 * sparsity_of(lab) for lab in labs]
        sp = [speedup_of(t[lab]).decode for lab in labs]
        med = [s.median for s in sp]
        err = [[s.median - s.q1 for s in sp], [s.q3 - s.median for s in sp]]
        ax.errorbar(xs, med, yerr=err, marker="o", markersize=3, capsize=2, label=name)
    ps = sorted(TABLE5_DLP)
    ax.plot(
        [100 * s for s in ps],
        [TABLE5_DLP[s][2] for s in ps],
        "k--",
        marker="s",
        markersize=3,
        label="paper: LLaMA2-7B, DeepSparse, 24 cores",
    )
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("decode speedup over dense (×)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out)
