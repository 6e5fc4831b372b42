"""The faults of a 2-rank run, timed (docs/results/distributed.md): a rank killed (SIGKILL) or stopped (SIGSTOP: it
hangs) in the middle of a block, and ranks started with different arguments. For each: every process's exit status
and how long after the fault it came, whether anything was published, whether the input changed, the lines the
ranks printed.

.venv/bin/python scripts/distributed_faults.py MODEL_DIR --root /tmp/faults --json faults.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from prune.io import hash_files

BIN = Path(sys.executable).parent


def launch(args: list[str], root: Path, program: list[str] | None = None) -> subprocess.Popen:
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node=2", "--no-python",
           *(program or [str(BIN / "slimpack"), "-q"]), *args]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root)


def workers(proc: subprocess.Popen) -> dict[int, psutil.Process]:
    found = {}
    for child in psutil.Process(proc.pid).children():
        try:
            found[int(child.environ()["RANK"])] = child
        except (psutil.Error, KeyError):
            pass
    return found


def fault(model: Path, root: Path, sig: int, timeout: float) -> dict:
    """Start a SparseGPT prune on 2 ranks, send ``sig`` to rank 1 once the walk has begun, time every exit."""
    out = root / "out"
    before = hash_files(model)
    proc = launch(["--rank-timeout", str(timeout), "prune", "--model", str(model), "--method", "sparsegpt",
                   "--sparsity", "0.5", "--nsamples", "64", "--seqlen", "128", "--out", str(out)], root)  # fmt: skip
    while not list(root.glob(".out.tmp-*")) and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # inside a block
    ranks = workers(proc)
    ranks[1].send_signal(sig)
    start = time.monotonic()
    exits: dict[str, float] = {}
    while proc.poll() is None and time.monotonic() - start < timeout + 120:
        for r, p in ranks.items():
            try:
                gone = p.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                gone = True
            if gone:
                exits.setdefault(f"rank {r}", round(time.monotonic() - start, 2))
        time.sleep(0.05)
    proc.wait(timeout=60)
    exits["torchrun"] = round(time.monotonic() - start, 2)
    _, err = proc.communicate()
    return {
        "signal": signal.Signals(sig).name, "rank_timeout_s": timeout, "exit_s": exits, "torchrun_status": proc.returncode,
        "published": out.exists(), "leftovers": sorted(p.name for p in root.iterdir() if p.name.startswith(".out.")),
        "input_unchanged": hash_files(model) == before,
        "slimpack_lines": [line for line in err.splitlines() if "slimpack: error" in line],
        "torchrun_summary": [line.strip() for line in err.splitlines() if "exitcode" in line or line.strip().startswith("rank ")],
    }  # fmt: skip


def different_arguments(model: Path, root: Path) -> dict:
    script = (f'if [ "$RANK" = 1 ]; then s=0.6; else s=0.5; fi; exec {BIN / "slimpack"} -q prune --model {model} '
              f'--method wanda --sparsity $s --nsamples 4 --seqlen 64 --out {root / "diff"}')  # fmt: skip
    start = time.monotonic()
    proc = launch([], root, ["bash", "-c", script])
    _, err = proc.communicate(timeout=300)
    return {"torchrun_status": proc.returncode, "seconds": round(time.monotonic() - start, 1),
            "slimpack_lines": [line for line in err.splitlines() if "slimpack: error" in line],
            "published": (root / "diff").exists()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--root", type=Path, default=Path("/tmp/faults"))
    parser.add_argument("--hang-timeout", type=float, default=20.0)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    report = {}
    for name, run in (("sigkill", lambda r: fault(args.model, r, signal.SIGKILL, 60.0)),
                      ("sigstop", lambda r: fault(args.model, r, signal.SIGSTOP, args.hang_timeout)),
                      ("different_arguments", lambda r: different_arguments(args.model, r))):  # fmt: skip
        root = args.root / name
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        report[name] = run(root)
        print(name, json.dumps(report[name], indent=2))
    args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
