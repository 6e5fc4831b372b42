"""The pipeline's reports, from its records (`runtime_bench.pipeline.summary`): ``report.md`` and the plots of
``slimpack run`` (`RunSummary`: the steps, perplexity per stage and per artifact, zero-shot accuracy, speed), and
``sweep.md`` / ``sweep.png`` of ``slimpack bench sweep`` (`SweepReport`: DLP's Table 5 layout, every figure, the
speedup plot). The tables and the plot themselves are the benchmark's (`runtime_bench.report`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prune.io import write_text_atomic
from prune.plots import plan_figure, pyplot, save_figure
from runtime_bench.harness import timings
from runtime_bench.paper import TABLE5_DLP_SOURCE
from runtime_bench.pipeline.summary import (
    Measurement,
    RunSummary,
    RunZeroShot,
    Skipped,
    SweepQuality,
    SweepReport,
    ZeroShotEntry,
)
from runtime_bench.report import paper_table5, sparsity_of, speed_table, speedup_figure, table5
from runtime_bench.verify import VerifyBrief


def write_run_plots(summary: RunSummary, out: Path) -> list[str]:
    """``sparsity.png`` (per-block sparsity of the prune stage) and ``speed.png`` (decode tokens/s per
    artifact); returns the files written."""
    plt = pyplot()
    written = []
    pruned = summary.models.get("prune")
    if pruned is not None and pruned.block_ratios:
        plan_figure(pruned, out / "sparsity.png", f"sparsity per block (overall {100 * pruned.sparsity:.1f} %)")
        written.append("sparsity.png")
    bench = summary.bench
    if bench is not None and bench.measurements:
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(bench.entries) * len(bench.measurements) + 1.5))
        labels, values, errs = [], [], []
        for m in bench.measurements:
            for name, r in timings(m.results).items():
                t = r.tokens_per_s
                labels.append(f"{name} ({m.threads} thr)")
                values.append(t.median)
                errs.append([t.median - t.q1, t.q3 - t.median])
        ax.barh(labels, values, xerr=list(map(list, zip(*errs))), color="tab:blue", capsize=2)
        ax.invert_yaxis()
        ax.set_xlabel("decode tokens/s at batch 1 (median, q1–q3)")
        fig.tight_layout()
        save_figure(fig, out / "speed.png")
        written.append("speed.png")
    return written


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def accuracy_of(name: str, entry: Mapping[str, Any], zeroshot: RunZeroShot | None) -> dict[str, str]:
    """The zero-shot column of a timed entry (an artifact, or one of the run's models: ``entry["model"]``), when
    the run measured one."""
    if zeroshot is None:
        return {}
    row = zeroshot.model.get(entry["model"]) if "model" in entry else zeroshot.artifact.get(name)
    known = isinstance(row, ZeroShotEntry) and row.mean is not None
    return {"zero-shot mean": f"{100 * row.mean:.2f} %" if known else "—"}  # type: ignore[union-attr]


def zeroshot_section(zeroshot: RunZeroShot) -> list[str]:
    """``report.md``'s zero-shot table: headline accuracy per task and mean, per model and artifact; for an
    artifact, how many per-example results equal its source model's."""
    tasks = zeroshot.tasks
    limit = f"the first {zeroshot.limit} examples of each task" if zeroshot.limit else "every example"
    lines = [
        "## Zero-shot accuracy (lm-evaluation-harness)",
        "",
        f"{zeroshot.num_fewshot}-shot, {limit}, task data {zeroshot.task_data}"
        + (" (slimpack's own 30-item files: not the papers' data)" if zeroshot.task_data == "local" else "")
        + "; accuracy in % of each task's headline metric ("
        + ", ".join(f"{t}: {m}" for t, m in zeroshot.headline.items())
        + "). Equal examples: an artifact's per-example results equal to its source model's, every metric. "
        "In the speed table, — is an artifact the recipe's zero-shot stage did not evaluate.",
        "",
        "| model / artifact | runtime | " + " | ".join(tasks) + " | mean | equal examples | seconds |",
        "|" + "---|" * (len(tasks) + 5),
    ]
    for kind, section in (("model", zeroshot.model), ("artifact", zeroshot.artifact)):
        for name, row in section.items():
            label = name if kind == "model" else f"{name} (from {row.source or '?'})"
            if isinstance(row, Skipped):
                lines.append(f"| {label} | skipped: {row.skipped} |" + " |" * (len(tasks) + 3))
                continue
            equal = row.equal_examples
            lines.append(
                f"| {label} | {row.runtime} | "
                + " | ".join(f"{100 * row.accuracy[t]:.1f}" for t in tasks)
                + f" | {'—' if row.mean is None else f'**{100 * row.mean:.2f}**'} | "
                f"{f'{equal[0]} / {equal[1]}' if equal else '—'} | "
                f"{row.seconds:.0f} |"
            )
    return lines


def run_markdown(summary: RunSummary, plots: list[str]) -> str:
    """``report.md`` of ``slimpack run``: steps, perplexity per stage and per artifact, speed, plots."""
    verdict = "all verify checks passed" if summary.passed else "a verify check FAILED"
    parts = [
        f"# slimpack run: {Path(summary.model).name}",
        "",
        f"Recipe: `{summary.recipe}`. Wall time {summary.wall_seconds / 60:.1f} min; {verdict}.",
        "",
        "## Steps",
        "",
        "| stage | step | status | seconds | detail |",
        "|---|---|---|---|---|",
        *(f"| {s.stage} | {s.step} | {s.status} | {s.seconds:.1f} | {s.detail} |" for s in summary.steps),
        "",
        "## Perplexity per stage",
        "",
        "| model | sparsity | perplexity | size MiB |",
        "|---|---|---|---|",
    ]
    for name, m in summary.models.items():
        parts.append(f"| {name} | {100 * m.sparsity:.2f} % | {_fmt(m.perplexity, '.3f')} | "
                     f"{_fmt(m.bytes / 2**20 if m.bytes else None, '.0f')} |")  # fmt: skip
    if summary.verify:
        parts += [
            "",
            "## Perplexity per exported format (verify: the artifact in its own runtime vs its source in torch)",
            "",
            "| artifact | format | engine | from | perplexity | reference | relative Δ | greedy tokens equal | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, v in summary.verify.items():
            a = summary.artifacts[name]
            lead = f"| {name} | {a.format} | {a.engine} | {a.source} |"
            if isinstance(v, Skipped):
                parts.append(f"{lead} | | | | skipped: {v.skipped} |")
            elif v.perplexity is None:  # an integrity failure: no figures to show
                parts.append(f"{lead} | | | | | FAILED: the artifact's files or zeros differ from its export.json |")
            else:
                parts.append(
                    f"{lead} {v.perplexity:.3f} | {_fmt(v.reference, '.3f')} | {100 * (v.relative_diff or 0.0):.3f} % | "
                    f"{v.greedy_equal}/{v.greedy_tokens} | {'passed' if v.passed else 'FAILED'} |"
                )
        windows = next((v.windows for v in summary.verify.values() if isinstance(v, VerifyBrief) and v.windows), None)
        parts += ["", f"Verify perplexity over {windows} windows (the per-stage table uses the full protocol)."]
    if summary.zeroshot is not None:
        parts += ["", *zeroshot_section(summary.zeroshot)]
    bench = summary.bench
    if bench is not None:
        spec = bench.spec
        parts += [
            "",
            "## Speed",
            "",
            f"Prompt {spec['prompt']} tokens, {spec['tokens']} decode steps, {spec['rounds']} rounds after "
            f"{spec['warmup']} warm-up, every artifact interleaved in each round; speedup over the dense artifact of "
            f"the same engine, round by round. CPU: {bench.cpu.model} ({bench.cpu.cpus} CPUs usable).",
        ]
        for name, reason in bench.skipped.items():
            parts += ["", f"**{name}: skipped** — {reason}"]
        sizes = {n: {"bytes": e.get("bytes"), "peak_rss_mib": bench.peak_rss_mib(n)} for n, e in bench.entries.items()}
        for m in bench.measurements:
            leading = {
                n: {"artifact": n, "engine": e["engine"], "from": e["source"], **accuracy_of(n, e, summary.zeroshot)}
                for n, e in bench.entries.items()
            }
            parts += ["", f"### {threads(m)}", "", speed_table(m.results, leading, sizes)]
    if plots:
        parts += ["", "## Plots", "", *(f"![{p}]({p})" for p in plots)]
    return "\n".join(parts) + "\n"


# --- slimpack bench sweep ---------------------------------------------------------------------------------


def threads(m: Measurement) -> str:
    return f"{m.threads} thread{'s' if m.threads > 1 else ''}"


def sweep_rows(results: Mapping[str, Any], quality: Mapping[str, SweepQuality]) -> dict[str, dict[str, str]]:
    """Leading columns of the sweep's `speed_table`: artifact, measured sparsity, perplexity."""
    rows = {}
    for lab in sorted(results, key=sparsity_of):
        qual = quality.get(lab)
        ppl = qual.perplexity if qual is not None else None
        rows[lab] = {
            "artifact": lab,
            "sparsity": f"{100 * qual.sparsity:.1f} %" if qual is not None else "",
            "perplexity": f"{ppl:.2f}" if ppl is not None else "",
        }
    return rows


def sweep_markdown(report: SweepReport) -> str:
    cpu, pruning, bench, data = report.cpu, report.pruning(), report.bench(), report.data()
    shape = report.model_shape
    described = ", ".join(f"{k} {v}" for k, v in shape.items()) if shape else "not recorded"
    parts = [
        f"# Speedup vs sparsity: {report.model}",
        "",
        f"Model shape: {described}.",
        "",
        f"Pruning: {pruning['method']} with {pruning['allocation']} allocation ({pruning['pattern']}), calibration "
        f"{data.nsamples}×{data.seqlen} tokens of {data.dataset} (seed {data.seed}).",
        f"Timing: prompt {bench.prompt} tokens, then {bench.tokens} greedy decode steps with the KV cache; "
        f"{bench.rounds} rounds after {bench.warmup} warm-up, artifacts interleaved (A B … B A); medians "
        f"(q1–q3). Latency = median decode step at batch 1; throughput = 1000 / latency; speedup = dense / sparse "
        f"decode time, round by round. CPU: {cpu.model} ({cpu.cpus} CPUs usable; {', '.join(cpu.flags)}).",
        "",
    ]
    for name, reason in report.skipped.items():
        parts += [f"**{name}: skipped** — {reason}", ""]
    for m in report.measurements:
        parts += [f"## {m.engine}, {threads(m)}", "", table5(m.results), ""]
    parts += [f"## Paper: {TABLE5_DLP_SOURCE}", "", paper_table5(), ""]
    for m in report.measurements:
        built = report.artifacts.get(m.engine or "", {})
        sizes = {lab: {"bytes": a.bytes, "peak_rss_mib": a.memory.peak_rss_mib} for lab, a in built.items()}
        parts += [f"## All figures: {m.engine}, {threads(m)}", "",
                  speed_table(m.results, sweep_rows(m.results, report.quality), sizes), ""]  # fmt: skip
    return "\n".join(parts)


def write_sweep_report(report: SweepReport, out: Path) -> None:

    write_text_atomic(out / "sweep.md", sweep_markdown(report))
    shape, cpu = report.model_shape, report.cpu
    what = Path(report.model).name
    if shape:  # e.g. "llama, 2 blocks, hidden 4096, FFN 11008"
        what = (f"{shape['model_type']}, {shape['num_hidden_layers']} blocks, hidden {shape['hidden_size']}, "
                f"FFN {shape['intermediate_size']}")  # fmt: skip
    title = f"speedup vs sparsity: {what}\n{cpu.model} ({', '.join(cpu.flags)})"
    series = [(f"{m.engine}, {m.threads} thr", m.results) for m in report.measurements]
    speedup_figure(series, out / "sweep.png", title)
