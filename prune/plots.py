"""PNG figures of results (matplotlib, Agg backend; written atomically). `pyplot` is the one way every figure
of slimpack gets matplotlib: it selects the file-only Agg backend, so no figure ever needs a display."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prune.io import umask


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def series_label(manifest: Any, series: str) -> str:
    """The bar series a run (a `prune.manifest.Manifest`) belongs to: its method or its allocation."""
    return manifest.allocation_name if series == "allocation" else manifest.method.name


def perplexity_bars(results: Iterable[Any], out: Path, title: str = "", series: str = "method") -> None:
    """Grouped bars: perplexity (log scale) per sparsity setting and ``series`` (method or allocation);
    the dense model as a line."""
    plt = pyplot()

    dense: float | None = None
    cells: dict[tuple[str, str], float] = {}
    for r in results:
        if r.stage == "eval":  # a dense `slimpack eval` result (`prune.manifest.EvalRecord`)
            dense = r.perplexity
        elif r.perplexity is not None:
            cells[(r.setting, series_label(r, series))] = r.perplexity
    settings = list(dict.fromkeys(s for s, _ in cells))
    methods = list(dict.fromkeys(m for _, m in cells))
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(settings), 4))
    width = 0.8 / max(1, len(methods))
    for j, method in enumerate(methods):
        xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(settings))]
        ys = [cells.get((s, method), float("nan")) for s in settings]
        bars = ax.bar(xs, ys, width, label=method)
        ax.bar_label(
            bars, labels=[f"{y:.0f}" if y >= 100 else f"{y:.1f}" for y in ys], fontsize=7, rotation=90, padding=2
        )
    if dense is not None:
        ax.axhline(dense, color="black", linestyle="--", linewidth=1, label=f"dense ({dense:.2f})")
    ax.set_yscale("log")
    top = max([v for v in cells.values() if v == v] + [dense or 1.0])
    ax.set_ylim(top=top * 8)  # room for the value labels
    ax.set_xticks(range(len(settings)), settings)
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out)


def save_figure(fig: Any, out: Path) -> None:
    """Write ``fig`` to ``out`` through a temporary file and a rename."""
    plt = pyplot()

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=out.parent)
    os.fchmod(fd, 0o666 & ~umask())  # as the umask gives, not mkstemp's 0600
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def plan_figure(allocation: Any, out: Path, title: str = "") -> None:
    """Per-block sparsity (line, left axis) over the allocator's per-block importance (bars, right axis,
    where it has one) — the layout of DLP's Figure 3."""
    plt = pyplot()

    ratios = allocation.block_ratios
    blocks = range(len(ratios))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(ratios) + 2), 3.6))
    if allocation.importance is not None:
        bg = ax.twinx()
        bg.bar(blocks, allocation.importance, color="tab:gray", alpha=0.35)
        bg.set_ylabel(allocation.importance_label, color="tab:gray")
        lo, hi = min(allocation.importance), max(allocation.importance)
        pad = 0.1 * (hi - lo) if hi > lo else abs(hi) * 0.1 + 1e-9
        bg.set_ylim(lo - pad, hi + pad)
        ax.set_zorder(bg.get_zorder() + 1)
        ax.patch.set_visible(False)
    ax.plot(blocks, [100 * r for r in ratios], color="tab:blue", marker="o", markersize=3, label="sparsity")
    ax.axhline(100 * sum(ratios) / len(ratios), color="tab:blue", linestyle=":", linewidth=1)
    ax.set_xlabel("block")
    ax.set_ylabel("sparsity (%)", color="tab:blue")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, out)


def search_figure(history: list[dict[str, float]], out: Path, title: str = "") -> None:
    """Reward and held-out perplexity per episode (dots) with a running mean of 15 (line)."""
    plt = pyplot()

    ep = [h["episode"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in ((axes[0], "reward", "reward 10/ppl"), (axes[1], "ppl", "held-out perplexity")):
        y = [h[key] for h in history]
        ax.plot(ep, y, ".", color="tab:gray", markersize=3, alpha=0.6)
        run = [sum(y[max(0, i - 14) : i + 1]) / len(y[max(0, i - 14) : i + 1]) for i in range(len(y))]
        ax.plot(ep, run, color="tab:blue")
        ax.set_xlabel("episode")
        ax.set_ylabel(label)
        if key == "ppl":
            ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out)
