"""Streamed pruning and quantization at real shapes: peak RSS, wall time and seconds per block
(docs/results/scale.md).

For each shape: build the random-weight model (`runtime_bench.shapes`, bf16, sharded) unless it exists, then
run each of ``--methods`` (`RUNS`: ``slimpack prune --stream`` with a pruning method, or ``slimpack quantize
--stream``: GPTQ 4-bit g128, alone or joint with SparseGPT 2:4) under ``/usr/bin/time -v`` (peak RSS of the
whole process) with the evaluation of the result (block-major perplexity, few windows). Writes one JSON row per
run to ``--json`` (``--append``: added to the rows already there) and prints the table. ``--delete`` removes
each shape model and its outputs once measured.

    .venv/bin/python scripts/scale.py --shapes llama3.2-1b llama2-7b --methods wanda sparsegpt \\
        --root /tmp/scale --json docs/results/scale.json --delete
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from export.artifact import Artifact
from prune.manifest import Manifest
from prune.structured.shapes import recorded_structure
from runtime_bench.verify import VerifyReport

ROOT = Path(__file__).resolve().parents[1]

GPTQ = ["--bits", "4", "--group-size", "128"]
RUNS = {  # what --methods names: the slimpack command and its arguments after the model
    "wanda": ["prune", "--method", "wanda"],
    "sparsegpt": ["prune", "--method", "sparsegpt"],
    "magnitude": ["prune", "--method", "magnitude"],
    "slimgpt": ["prune", "--structured", "--method", "slimgpt"],  # heads and channels, log-increase allocation
    "gptq": ["quantize", *GPTQ],
    "sparsegpt-2:4+gptq": ["quantize", *GPTQ, "--joint-with", "sparsegpt", "--pattern", "2:4"],
}


def command(run: str, model: Path, out: Path, args: argparse.Namespace) -> list[str]:
    """The streamed command of ``run`` on ``model``."""
    verb, *rest = RUNS[run]
    source = ["--model", str(model)] if verb == "prune" else [str(model)]
    sparsity = ["--sparsity", args.sparsity] if verb == "prune" else []
    return [sys.executable, "-m", "runtime_bench.cli", "-q", verb, *source, *rest, *sparsity,
            "--nsamples", args.nsamples, "--seqlen", args.seqlen, "--eval", "--windows", args.windows, "--stream",
            "--out", str(out), "--overwrite"]  # fmt: skip


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def timed(cmd: list[str], ok: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """Run ``cmd`` under /usr/bin/time -v: (wall seconds, peak RSS MiB); an exit status not in ``ok`` stops."""
    wall, peak, _ = timed_status(cmd, ok)
    return wall, peak


def timed_status(cmd: list[str], ok: tuple[int, ...] = (0,), cgroup: Path | None = None) -> tuple[float, float, int]:
    """`timed`, with the exit status; ``cgroup``: a memory cgroup (`memory_cgroup`) the command runs in."""
    start = time.perf_counter()
    if cgroup is not None:  # enter the cgroup, then become the command
        cmd = ["sh", "-c", f'echo $$ > {cgroup / "cgroup.procs"} && exec "$@"', "sh", *cmd]
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, int(peak.group(1)) / 1024 if peak else float("nan"), proc.returncode


def memory_cgroup(name: str, limit_mib: int) -> Path:
    """A fresh memory cgroup with a hard limit of ``limit_mib`` (cgroup v1's memory controller or v2's), for
    `timed`: a command that needs more is killed (exit 137). Needs root."""
    v1, v2 = Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")
    group, limit = (v1 / name, "memory.limit_in_bytes") if v1.is_dir() else (v2 / name, "memory.max")
    group.mkdir(exist_ok=True)
    (group / limit).write_text(str(limit_mib * 2**20))
    return group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["llama2-7b"])
    parser.add_argument("--layers", type=int, default=None, help="build fewer blocks than the real model")
    parser.add_argument("--methods", nargs="+", default=["wanda", "sparsegpt"], choices=list(RUNS))
    parser.add_argument("--sparsity", default="0.5")
    parser.add_argument("--nsamples", default="8")
    parser.add_argument("--seqlen", default="512")
    parser.add_argument("--windows", default="4")
    parser.add_argument("--root", type=Path, default=Path("/tmp/slimpack-scale"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--append", action="store_true", help="add the rows to those already in --json")
    parser.add_argument("--delete", action="store_true", help="remove each shape model and output once measured")
    parser.add_argument("--export", default=None, help="then export each output streamed (onnx | onnx-int4) …")
    parser.add_argument("--verify-tokens", default="4", help="… and verify it streamed with this many greedy tokens")
    parser.add_argument("--reuse", action="store_true", help="an output already there is exported, not remade")
    parser.add_argument("--png", type=Path, default=None, help="plot peak RSS against the model's fp32 size")
    parser.add_argument("--plot-only", type=Path, default=None, metavar="JSON", help="only plot rows of this JSON")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(args.plot_only.read_text()), args.png or args.plot_only.with_suffix(".png"))
        return
    from runtime_bench.shapes import SHAPES

    python = sys.executable
    rows = []
    for shape in args.shapes:
        model = args.root / shape
        if not model.exists():
            layers = ["--layers", str(args.layers)] if args.layers else []
            wall, peak = timed([python, "scripts/shape_model.py", shape, str(model), *layers])
            print(f"built {shape} in {wall:.0f} s (peak {peak:.0f} MiB)", flush=True)
        size = sum(f.stat().st_size for f in model.glob("*.safetensors"))
        config = json.loads((model / "config.json").read_text())
        for method in args.methods:
            out = args.root / f"{shape}-{method.replace(':', 'of')}"
            if args.reuse and (out / "slimpack.json").is_file():
                print(f"reusing {out}", flush=True)
                rows += export_rows(out, shape, args)
                continue
            wall, peak = timed(command(method, model, out, args))
            manifest = Manifest.read(out)
            blocks = config["num_hidden_layers"]
            built = f"{blocks} of {SHAPES[shape].layers} blocks built" if blocks != SHAPES[shape].layers else None
            row = {
                **({"note": built} if built else {}),
                "shape": shape, "blocks": blocks, "hidden": config["hidden_size"],
                "ffn": config["intermediate_size"], "vocab": config["vocab_size"],
                "model_gib": round(size / 2**30, 2), "fp32_gib": round(2 * size / 2**30, 2), "method": method,
                "sparsity": manifest.sparsity.overall, "calibration": f"{args.nsamples}×{args.seqlen}",
                "prune_seconds": round(manifest.timing.seconds, 1),
                "seconds_per_block": round(manifest.timing.seconds / blocks, 2),
                "eval_seconds": round(manifest.evaluation.seconds, 1) if manifest.evaluation else None,
                "perplexity": manifest.perplexity, "eval_windows": int(args.windows),
                "wall_seconds": round(wall, 1), "peak_rss_mib": round(peak),
                "prune_peak_rss_mib": round(manifest.timing.peak_rss_mib), "cpu": cpu_model(),
                "cores": os.cpu_count(), "output_gib": round(
                    sum(f.stat().st_size for f in out.glob("*.safetensors")) / 2**30, 2),
            }  # fmt: skip
            if manifest.structure is not None:  # what a structured prune left of each block: its structure record
                layers = recorded_structure(json.loads((out / "config.json").read_text()))
                for key, field in (("heads_kept", "num_attention_heads"), ("kv_heads_kept", "num_key_value_heads"),
                                   ("ffn_kept", "intermediate_size")):  # fmt: skip
                    row[key] = [getattr(layer, field) for layer in layers]
            rows.append(row)
            print(json.dumps(row), flush=True)
            rows += export_rows(out, shape, args, built)
            if args.delete:
                shutil.rmtree(out)
        if args.delete:
            shutil.rmtree(model)
    if args.json:
        before = json.loads(args.json.read_text()) if args.append and args.json.is_file() else []
        args.json.write_text(json.dumps(before + rows, indent=2) + "\n")
    if args.png:
        plot(rows, args.png)
    print("| shape | blocks | bf16 GiB | method | prune s | s/block | eval s | wall s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "stage" in r:
            print(json.dumps(r))
            continue
        print(f"| {r['shape']} | {r['blocks']} | {r['model_gib']} | {r['method']} | {r['prune_seconds']} | "
              f"{r['seconds_per_block']} | {r['eval_seconds']} | {r['wall_seconds']} | {r['peak_rss_mib']} |")  # fmt: skip


def export_rows(out: Path, shape: str, args: argparse.Namespace, note: str | None = None) -> list[dict]:
    """``--export``: ``slimpack export --stream`` of ``out``, then ``slimpack verify --stream`` of the artifact
    against it (both under /usr/bin/time -v); one row each."""
    if args.export is None:
        return []
    artifact = out.with_name(f"{out.name}-{args.export}")
    cli = [sys.executable, "-m", "runtime_bench.cli", "-q"]
    wall, peak = timed([*cli, "export", str(out), "--format", args.export, "--stream", "--out", str(artifact),
                        "--overwrite"])  # fmt: skip
    record = Artifact.open(artifact).record
    common = {**({"note": note} if note else {}), "shape": shape, "source": out.name, "format": args.export,
              "cpu": cpu_model(), "cores": os.cpu_count()}  # fmt: skip
    rows = [{**common, "stage": "export", "export_seconds": record.export_seconds, "wall_seconds": round(wall, 1),
             "peak_rss_mib": round(peak), "artifact_gib": round(record.bytes / 2**30, 2),
             "zeros": record.zeros.exported_zeros, "source_zeros": record.zeros.source_zeros}]  # fmt: skip
    print(json.dumps(rows[-1]), flush=True)
    report = artifact.with_name(f"{artifact.name}.verify.json")  # beside the artifact: never inside an input
    wall, peak = timed([*cli, "verify", str(artifact), "--reference", str(out), "--stream", "--seqlen", args.seqlen,
                        "--windows", args.windows, "--prompt", "16", "--tokens", args.verify_tokens, "--json",
                        str(report)], ok=(0, 1))  # fmt: skip
    verified = VerifyReport.read(report)
    rows.append({**common, "stage": "verify", "wall_seconds": round(wall, 1), "peak_rss_mib": round(peak),
                 **verified.brief().to_dict(), "engine_load_seconds": verified.engine_load_seconds})  # fmt: skip
    print(json.dumps(rows[-1]), flush=True)
    if args.delete:
        shutil.rmtree(artifact)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Peak RSS of each whole-model run against the model's size in fp32 (what loading it whole would take)."""
    from prune.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    whole = sorted(
        (r for r in rows if not r.get("note") and r.get("method") == "wanda" and "stage" not in r),
        key=lambda r: r["fp32_gib"],
    )  # fmt: skip  ("note": a partial model)
    sizes = [r["fp32_gib"] for r in whole]
    ax.plot(sizes, sizes, "--", color="grey", label="the model in fp32 (what in-memory loading holds)")
    ax.plot(sizes, [r["peak_rss_mib"] / 1024 for r in whole], "o-", label="Wanda 50 % --stream + eval, peak RSS")
    for i, r in enumerate(sorted(whole, key=lambda r: r["fp32_gib"])):  # labels alternate below / above
        ax.annotate(f"{r['shape']} ({r['blocks']} blocks)", (r["fp32_gib"], r["peak_rss_mib"] / 1024),
                    textcoords="offset points", xytext=(-30, -14 if i % 2 == 0 else 8), fontsize=7)  # fmt: skip
    others = [r for r in rows if not r.get("note") and r.get("method") not in (None, "wanda") and "stage" not in r]
    for r in others:  # other whole-model runs and their exports / verifies (of whole models), at the source's size
        ax.plot([r["fp32_gib"]], [r["peak_rss_mib"] / 1024], "s", label=f"{r['method']} --stream + eval, peak RSS")
        source = f"{r['shape']}-{r['method'].replace(':', 'of')}"
        for stage in (x for x in rows if x.get("stage") and not x.get("note") and x.get("source") == source):
            ax.plot([r["fp32_gib"]], [stage["peak_rss_mib"] / 1024], "^",
                    label=f"{stage['format']} {stage['stage']} --stream of {r['method']}, peak RSS")  # fmt: skip
    ram = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20  # MemTotal, kB → GiB
    ax.axhline(ram, color="red", linewidth=0.8, label=f"this machine's RAM ({ram:.1f} GiB)")
    ax.set_xlabel("model size in fp32 (GiB)")
    ax.set_ylabel("GiB")
    ax.set_title(f"--stream, {whole[0]['calibration'] if whole else ''} calibration, {rows[0]['cpu']}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
