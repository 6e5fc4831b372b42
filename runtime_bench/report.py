"""Readable outputs of the benchmarks: markdown tables in the layout of DLP's Table 5 and the speedup plot."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prune.data import DataSpec
from prune.plots import save_figure
from runtime_bench.harness import CpuInfo, EngineTiming, Quartiles, Speedup, timings
from runtime_bench.memory import MemoryProbe
from runtime_bench.paper import TABLE5_DLP, TABLE5_DLP_SOURCE


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


def sweep_rows(results: Mapping[str, Any], quality: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Leading columns of the sweep's `speed_table`: artifact, measured sparsity, perplexity."""
    rows = {}
    for lab in sorted(results, key=sparsity_of):
        qual = quality.get(lab, {})
        ppl, measured = qual.get("perplexity"), qual.get("sparsity")
        rows[lab] = {
            "artifact": lab,
            "sparsity": f"{100 * measured:.1f} %" if measured is not None else "",
            "perplexity": f"{ppl:.2f}" if ppl is not None else "",
        }
    return rows


def sweep_markdown(report: Mapping[str, Any]) -> str:
    cfg, cpu = report["config"], CpuInfo.from_dict(report["cpu"])
    pruning = cfg.get("prune", cfg)  # sweeps before issue #14 kept the pruning settings at the top
    bench = cfg["bench"]
    data = DataSpec(**cfg["data"])
    shape = report.get("model_shape")  # sweeps before issue #15 did not record it
    described = ", ".join(f"{k} {v}" for k, v in shape.items()) if shape else "not recorded"
    parts = [
        f"# Speedup vs sparsity: {report['model']}",
        "",
        f"Model shape: {described}.",
        "",
        f"Pruning: {pruning['method']} with {pruning['allocation']} allocation ({pruning['pattern']}), calibration "
        f"{data.nsamples}×{data.seqlen} tokens of {data.dataset} (seed {data.seed}).",
        f"Timing: prompt {bench['prompt']} tokens, then {bench['tokens']} greedy decode steps with the KV cache; "
        f"{bench['rounds']} rounds after {bench['warmup']} warm-up, artifacts interleaved (A B … B A); medians "
        f"(q1–q3). Latency = median decode step at batch 1; throughput = 1000 / latency; speedup = dense / sparse "
        f"decode time, round by round. CPU: {cpu.model} ({cpu.cpus} CPUs usable; {', '.join(cpu.flags)}).",
        "",
    ]
    for name, reason in report.get("skipped", {}).items():
        parts += [f"**{name}: skipped** — {reason}", ""]
    for m in report["measurements"]:
        parts += [
            f"## {m['engine']}, {m['threads']} thread{'s' if m['threads'] > 1 else ''}",
            "",
            table5(m["results"]),
            "",
        ]
    parts += [f"## Paper: {TABLE5_DLP_SOURCE}", "", paper_table5(), ""]
    for m in report["measurements"]:
        parts += [
            f"## All figures: {m['engine']}, {m['threads']} thread{'s' if m['threads'] > 1 else ''}",
            "",
            speed_table(
                m["results"],
                sweep_rows(m["results"], report.get("quality", {})),
                {lab: {"bytes": a.get("bytes"), "peak_rss_mib": MemoryProbe.from_dict(a["memory"]).peak_rss_mib}
                 for lab, a in report["artifacts"].get(m["engine"], {}).items()},  # fmt: skip
            ),
            "",
        ]
    return "\n".join(parts)


def speedup_figure(measurements: Iterable[Mapping[str, Any]], out: Path, title: str = "") -> None:
    """Decode speedup (median, q1–q3 bars) vs sparsity per engine and thread count, with DLP's Table 5."""
    from prune.plots import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for m in measurements:
        t = timings(m["results"])
        labs = sorted(t, key=sparsity_of)
        xs = [100 * sparsity_of(lab) for lab in labs]
        sp = [speedup_of(t[lab]).decode for lab in labs]
        med = [s.median for s in sp]
        err = [[s.median - s.q1 for s in sp], [s.q3 - s.median for s in sp]]
        ax.errorbar(xs, med, yerr=err, marker="o", markersize=3, capsize=2, label=f"{m['engine']}, {m['threads']} thr")
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


def write_sweep_report(report: Mapping[str, Any], out: Path) -> None:
    from prune.io import write_text_atomic

    write_text_atomic(out / "sweep.md", sweep_markdown(report))
    shape, cpu = report.get("model_shape"), CpuInfo.from_dict(report["cpu"])
    what = Path(report["model"]).name
    if shape:  # e.g. "llama, 2 blocks, hidden 4096, FFN 11008"
        what = (f"{shape['model_type']}, {shape['num_hidden_layers']} blocks, hidden {shape['hidden_size']}, "
                f"FFN {shape['intermediate_size']}")  # fmt: skip
    title = f"speedup vs sparsity: {what}\n{cpu.model} ({', '.join(cpu.flags)})"
    speedup_figure(report["measurements"], out / "sweep.png", title)
