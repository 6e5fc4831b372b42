"""Tables of docs/results/structured.md from the run directories of scripts/structured_experiments.sh.

``python scripts/structured_report.py runs/structured`` prints markdown; every figure is read from a
``slimpack.json`` manifest, ``dense.json`` (slimpack eval) or ``latency.json`` (`slimpack bench NAME=PATH … --json`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prune.manifest import Manifest
from runtime_bench.latency import TimingReport


def load(root: Path, name: str) -> Manifest | None:
    return Manifest.read_if_any(root / name) if (root / name).is_dir() else None


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def params(m: Manifest) -> str:
    return f"{m.structure.parameters.after.total / 1e6:.1f} M"


def ppl(m: Manifest | None) -> str:
    return f"{m.perplexity:.2f}" if m and m.perplexity is not None else "—"


def structured_rows(root: Path, names: list[tuple[str, str]]) -> list[list[Any]]:
    rows = []
    for label, name in names:
        m = load(root, name)
        if m is None:
            rows.append([label, "not run", "", "", "", ""])
            continue
        heads = m.structure.heads()
        rows.append([
            label, params(m), f"{100 * m.sparsity.overall:.1f} %", f"{min(heads)}–{max(heads)}", ppl(m),
            f"{m.timing.seconds:.0f}",
        ])  # fmt: skip
    return rows


def main(root: Path) -> None:
    dense = json.loads((root / "dense.json").read_text())
    d_ppl = dense["perplexity"]
    head = ["setting", "parameters", "block params removed", "query heads kept / layer", "perplexity", "prune s"]
    dense_row = ["dense", "134.5 M", "0 %", "9", f"{d_ppl:.2f}", "—"]
    print("### SlimGPT: layer schedule (Table 6 analogue of 004)\n")
    names = [
        (f"{a} {s} %", f"slimgpt-{k}-{s}")
        for s in (20, 50)
        for a, k in (("log increase (Eq. 6)", "log"), ("uniform", "uniform"))
    ]
    print(table(head, [dense_row, *structured_rows(root, names)]))
    print("\n### SlimGPT: grouped Cholesky ablation (Table 5 analogue of 004, log increase)\n")
    names = [
        (f"{a} {s} %", f"slimgpt-{k}-{s}") for s in (20, 50) for a, k in (("SlimGPT", "log"), ("− GCD", "nogcd-log"))
    ]
    print(table(head, structured_rows(root, names)))
    print("\n### Activation ℓ2 ± reconstruction, uniform vs searched (Table 5 analogue of 003)\n")
    names = [
        ("uniform 20 %", "l2-uniform-20"), ("Recon (uniform + ridge) 20 %", "l2-uniform-recon-20"),
        ("Search (rl-search) 20 %", "l2-search-20"), ("Search + Recon 20 %", "l2-search-recon-20"),
        ("uniform 50 %", "l2-uniform-50"), ("Recon (uniform + ridge) 50 %", "l2-uniform-recon-50"),
    ]  # fmt: skip
    print(table(head, structured_rows(root, names)))

    print("\n### Unstructured 70 %, Wanda: searched plan vs OWL and DLP (Table 1 analogue of 003)\n")
    rows = []
    for label, name in (("uniform", "wanda-uniform-70"), ("OWL", "wanda-owl-70"), ("DLP", "wanda-dlp-70"),
                        ("rl-search", "wanda-search-70")):  # fmt: skip
        m = load(root, name)
        o = m.allocation.options if m is not None and m.allocation is not None else {}
        extra = (
            f"{o['episodes']} episodes, {o['episodes_per_hour']:.0f}/h, best held-out ppl {o['best_heldout_ppl']:.1f}"
            if "history" in o
            else ""
        )
        rows.append([label, ppl(m), f"{m.timing.seconds:.0f}" if m else "", extra])
    print(table(["allocation", "perplexity", "prune s (incl. search)", "search"], rows))

    print("\n### Reusing the 70 % agent at 60 % (45 episodes each)\n")
    rows = []
    for label, name in (("fresh agent", "wanda-search-60-fresh"), ("agent trained at 70 %", "wanda-search-60-reused")):
        m = load(root, name)
        if m is None:
            rows.append([label, "not run", "", "", ""])
            continue
        h = m.allocation.options["history"]
        first10 = sum(x["ppl"] for x in h[:10]) / 10
        rows.append(
            [
                label,
                f"{h[0]['ppl']:.1f}",
                f"{first10:.1f}",
                f"{m.allocation.options['best_heldout_ppl']:.1f}",
                ppl(m),
            ]
        )
    print(
        table(
            ["agent", "held-out ppl, episode 0", "mean of episodes 0–9", "best held-out ppl", "eval perplexity"], rows
        )
    )

    lat = root / "latency.json"
    if lat.is_file():
        r = TimingReport.read(lat)
        (threads,) = r.threads
        res = {lab: a.timing(threads) for lab, a in r.artifacts.items()}
        spec = r.spec
        print(
            f"\n### Latency (prompt {spec.prompt}, {spec.tokens} decode steps, {spec.rounds} rounds, {threads} threads)\n"
        )
        rows = []
        for engine in ("torch", "onnx"):
            base = res.get(f"{engine}-dense")
            for size in ("dense", "slim-20", "slim-50"):
                x = res.get(f"{engine}-{size}")
                if x is None or base is None:
                    continue
                tx, tb = x, base
                p, dcd = tx.prefill_ms.median, tx.decode_ms_per_token.median
                rows.append([
                    "onnxruntime" if engine == "onnx" else "torch", size, f"{p:.0f}", f"{dcd:.2f}",
                    f"{tb.prefill_ms.median / p:.2f}×", f"{tb.decode_ms_per_token.median / dcd:.2f}×",
                ])  # fmt: skip
        print(table(["engine", "model", "prefill ms", "decode ms/token", "prefill speedup", "decode speedup"], rows))


def reuse_figure(root: Path, out: Path) -> None:
    """Held-out perplexity per episode at 60 %: a fresh agent vs the one trained at 70 %."""
    from prune.plots import pyplot

    plt = pyplot()

    from prune.plots import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for label, name, color in (("fresh agent", "wanda-search-60-fresh", "tab:gray"),
                               ("agent trained at 70 % (300 episodes)", "wanda-search-60-reused", "tab:blue")):  # fmt: skip
        m = load(root, name)
        if m is None:
            continue
        h = m.allocation.options["history"]
        ax.plot([x["episode"] for x in h], [x["ppl"] for x in h], ".-", color=color, label=label, markersize=4)
    ax.set_xlabel("episode")
    ax.set_ylabel("held-out perplexity (4 × 256 tokens)")
    ax.set_title("rl-search at 60 % (Wanda, unstructured)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out)


def plans_figure(root: Path, out: Path) -> None:
    """Per-block sparsity of the 70 % plans (rl-search's per-matrix plan averaged per block)."""
    from prune.plots import pyplot

    plt = pyplot()

    from prune.plots import save_figure

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for label, name in (("uniform", "wanda-uniform-70"), ("OWL", "wanda-owl-70"), ("DLP", "wanda-dlp-70"),
                        ("rl-search", "wanda-search-70")):  # fmt: skip
        m = load(root, name)
        if m is not None:
            r = m.allocation.block_ratios
            ax.plot(range(len(r)), [100 * x for x in r], marker="o", markersize=3, label=f"{label} ({ppl(m)})")
    ax.set_xlabel("block")
    ax.set_ylabel("sparsity (%)")
    ax.set_title("Wanda 70 %: per-block sparsity of each plan (perplexity)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out)


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/structured")
    main(root)
    reuse_figure(root, root / "reuse-60.png")
    plans_figure(root, root / "plans-70.png")
