"""Can DeepSparse compile this artifact here? Each graph of a ``--format deepsparse`` artifact compiled alone, in
a fresh process of the DeepSparse environment, as `runtime_bench.engines.deepsparse_worker` compiles it (internal
KV cache for prompt/decode), under a watchdog (docs/results/scale.md).

The watchdog samples the process's RSS every 0.25 s and stops it (SIGKILL) when the RSS passes ``--limit-gib``
or the machine's available memory falls below ``--floor-gib``, so that a graph too big for the machine is
measured up to that point instead of bringing the machine down. One JSON row per graph: outcome (``compiled``,
``stopped at the limit``, or the process's exit), seconds, peak RSS, DeepSparse's fraction of supported ops, and
the RSS timeline (every 2 s).

    .venv/bin/python scripts/deepsparse_compile.py /tmp/ds-7b --graphs decode prefill --limit-gib 20 --json c.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMPILE = """
import json, sys, time
from deepsparse import Engine
path, threads, cached = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
start = time.perf_counter()
engine = Engine(path, batch_size=1, num_cores=threads, cached_outputs=cached)
print(json.dumps({"compile_seconds": time.perf_counter() - start,
                  "fraction_of_supported_ops": engine.fraction_of_supported_ops}), flush=True)
"""


def meminfo_gib(field: str, pid: int | None = None) -> float:
    """``VmRSS`` of ``pid`` (/proc/PID/status) or a /proc/meminfo field (``MemAvailable``), GiB."""
    path = Path(f"/proc/{pid}/status") if pid else Path("/proc/meminfo")
    try:
        for line in path.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def compile_graph(python: Path, artifact: Path, graph: str, threads: int, limit: float, floor: float) -> dict:
    config = json.loads((artifact / "deepsparse.json").read_text())
    cached = None if graph == "prefill" else [name.startswith("present.") for name in config["outputs"]]
    path = artifact / config[graph]
    proc = subprocess.Popen(
        [str(python), "-c", COMPILE, str(path), str(threads), json.dumps(cached)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    start, peak, timeline, stopped, last = time.perf_counter(), 0.0, [], None, -2.0
    while proc.poll() is None:
        rss, now = meminfo_gib("VmRSS", proc.pid), time.perf_counter() - start
        peak = max(peak, rss)
        if now - last >= 2:
            timeline.append([round(now, 1), round(rss, 2)])
            last = now
        if rss > limit or meminfo_gib("MemAvailable") < floor:
            stopped = (
                f"stopped at {rss:.2f} GiB RSS (limit {limit} GiB, available {meminfo_gib('MemAvailable'):.2f} GiB)"
            )
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.25)
    out, err = proc.communicate()
    row = {"artifact": str(artifact), "graph": graph, "file": config[graph], "threads": threads,
           "seconds": round(time.perf_counter() - start, 1), "peak_rss_gib": round(peak, 2),
           "weights_gib": round((artifact / "weights.bin").stat().st_size / 2**30, 2), "timeline": timeline}  # fmt: skip
    if stopped:
        row["outcome"] = stopped
    elif proc.returncode == 0:
        row.update({"outcome": "compiled", **json.loads(out.strip().splitlines()[-1])})
    else:
        row["outcome"] = f"exit {proc.returncode}: {(err.strip().splitlines() or [''])[-1][:300]}"
    return row


def main() -> None:
    from runtime_bench.engines.deepsparse_client import deepsparse_python

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--graphs", nargs="+", default=["decode", "prompt", "prefill"])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--limit-gib", type=float, default=20.0)
    parser.add_argument("--floor-gib", type=float, default=1.5, help="stop when MemAvailable falls below this")
    parser.add_argument("--json", type=Path, default=None, help="append the rows to this JSON list")
    args = parser.parse_args()
    python = deepsparse_python()
    rows = []
    for graph in args.graphs:
        row = compile_graph(python, args.artifact, graph, args.threads, args.limit_gib, args.floor_gib)
        print(json.dumps({k: v for k, v in row.items() if k != "timeline"}), flush=True)
        rows.append(row)
    if args.json is not None:
        old = json.loads(args.json.read_text()) if args.json.is_file() else []
        args.json.write_text(json.dumps(old + rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
