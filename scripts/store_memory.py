"""Peak RSS of every command with no store flag at a large shape: the store is chosen from the model's size
(`prune.store`), so a user who forgets ``--stream`` is still streamed (docs/results/scale.md, "No flag").

Builds the random-weight shape model (`scripts/shape_model.py`, bf16, sharded) unless it exists, then runs,
each under ``/usr/bin/time -v`` and without ``--stream``: ``prune`` (wanda 50 %), ``quantize`` (GPTQ 4-bit g128
of the pruned model), ``plan`` (DLP 50 %), ``eval`` (perplexity of the pruned model), ``export --format onnx`` and ``--format
sparse`` of it, ``export --format onnx-int4`` of the GPTQ checkpoint, and ``verify`` of each artifact against its
source. ``--resident`` adds the prune forced whole (the
path users took before the store was chosen). ``--limit-mib`` runs each command in a memory cgroup with that hard
limit (root only; a command that needs more is killed, and its row says so). Writes the rows to ``--json`` and
prints the table.

    .venv/bin/python scripts/store_memory.py --shape llama2-7b --layers 8 --root /tmp/nf --json docs/results/store_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from scale import cpu_model, memory_cgroup, timed, timed_status  # scripts/scale.py

FAST = ["--nsamples", "8", "--seqlen", "128"]
VERIFY = ["--seqlen", "128", "--windows", "2", "--prompt", "8", "--tokens", "2", "--tolerance", "0.05"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="llama2-7b")
    parser.add_argument("--layers", type=int, default=8, help="blocks built (default 8)")
    parser.add_argument("--root", type=Path, default=Path("/tmp/slimpack-store"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--resident", action="store_true", help="also prune with --resident (the whole fp32 model)")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help="run only the steps whose name starts with one of these (e.g. quantize, 'verify onnx-int4'); "
                             "their rows replace the same steps' rows in --json, the others are kept")  # fmt: skip
    parser.add_argument("--limit-mib", type=int, default=None, help="run each command under this hard memory limit")
    args = parser.parse_args()
    python, root = sys.executable, args.root
    model = root / "model"
    if not model.exists():
        wall, peak = timed([python, "scripts/shape_model.py", args.shape, str(model), "--layers", str(args.layers)])
        print(f"built {args.shape} ({args.layers} blocks) in {wall:.0f} s", flush=True)
    slim = [python, "-m", "runtime_bench.cli", "-q"]
    pruned = root / "pruned"
    steps = {  # name → command (no store flag: the store is chosen)
        "prune (wanda 50 %)": [*slim, "prune", "--model", str(model), "--method", "wanda", "--sparsity", "0.5",
                               *FAST, "--out", str(pruned), "--overwrite"],
        "quantize (GPTQ 4-bit g128)": [*slim, "quantize", str(pruned), "--bits", "4", "--group-size", "128", *FAST,
                                       "--out", str(root / "gptq"), "--overwrite"],
        "plan (dlp 50 %)": [*slim, "plan", "--model", str(model), "--allocation", "dlp", "--sparsity", "0.5", *FAST,
                            "--out", str(root / "plan.json"), "--overwrite"],
        "eval (perplexity, 4 × 128)": [*slim, "eval", str(pruned), "--seqlen", "128", "--windows", "4"],
        "export --format onnx": [*slim, "export", str(pruned), "--format", "onnx", "--out", str(root / "onnx"),
                                 "--overwrite", "--no-graph-cache"],
        "export --format sparse": [*slim, "export", str(pruned), "--format", "sparse", "--out", str(root / "sparse"),
                                   "--overwrite"],
        "export --format onnx-int4": [*slim, "export", str(root / "gptq"), "--format", "onnx-int4", "--out",
                                      str(root / "onnx-int4"), "--overwrite", "--no-graph-cache"],
        "verify onnx": [*slim, "verify", str(root / "onnx"), "--reference", str(pruned), *VERIFY],
        "verify onnx-int4": [*slim, "verify", str(root / "onnx-int4"), "--reference", str(root / "gptq"), *VERIFY],
        "verify sparse": [*slim, "verify", str(root / "sparse"), "--reference", str(pruned), *VERIFY],
    }  # fmt: skip
    if args.resident:
        steps["prune (wanda 50 %) --resident"] = [*steps["prune (wanda 50 %)"][:-3], "--resident", "--out",
                                                  str(root / "pruned-resident"), "--overwrite"]  # fmt: skip
    size = sum(f.stat().st_size for f in model.glob("*.safetensors"))
    if args.only:
        names = list(steps)
        exact = [word for word in args.only if word in steps]  # a whole name: that step alone
        steps = {name: cmd for name, cmd in steps.items()
                 if name in exact or any(name.startswith(word) for word in args.only if word not in exact)}  # fmt: skip
        if not steps:
            parser.error(f"--only {' '.join(args.only)}: no such step; the steps are: {', '.join(names)}")
    rows = []
    cgroup = memory_cgroup("slimpack-store-memory", args.limit_mib) if args.limit_mib else None
    for name, cmd in steps.items():
        # verify exits 1 when a check fails, and a command over the limit is killed (137): its memory is measured
        wall, peak, status = timed_status(cmd, ok=(0, 1, 137) if cgroup else (0, 1), cgroup=cgroup)
        row = {"command": name, "peak_rss_mib": round(peak), "wall_seconds": round(wall, 1),
               **({"limit_mib": args.limit_mib, "exit": status} if cgroup else {}),
               "shape": args.shape, "blocks": args.layers, "model_gib": round(size / 2**30, 2),
               "fp32_gib": round(2 * size / 2**30, 2), "cpu": cpu_model(), "cores": os.cpu_count(),
               "argv": " ".join(cmd[3:])}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        if args.only and args.json.is_file():  # the steps not rerun keep their rows, in their order
            fresh = {row["command"]: row for row in rows}
            old = json.loads(args.json.read_text())
            rows = [fresh.pop(row["command"], row) for row in old] + list(fresh.values())
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n{args.shape}, {args.layers} blocks, {size / 2**30:.2f} GiB bf16 ({2 * size / 2**30:.2f} GiB in fp32)\n")
    limited = args.limit_mib is not None
    print("| command (no store flag) | peak RSS MiB | wall s |" + (f" under {args.limit_mib} MiB |" if limited else ""))
    print("|---|---|---|" + ("---|" if limited else ""))
    for row in rows:
        done = ("" if not limited else " completed |" if row["exit"] in (0, 1) else f" exit {row['exit']} |")
        print(f"| {row['command']} | {row['peak_rss_mib']} | {row['wall_seconds']} |{done}")


if __name__ == "__main__":
    main()
