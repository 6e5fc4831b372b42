"""One process with T threads against T ranks (torchrun, gloo) with 1 thread each, on a random-weight model with a
real model's shapes — wall time, the stage's seconds, the solves' seconds, peak RSS per rank, bytes each rank sent
per block, the weights of both compared — and the cost model of a distributed walk fitted to the ranks' figures and
projected to more workers and larger shapes (docs/results/distributed.md).

.venv/bin/python scripts/distributed_bench.py --shape llama2-7b --layers 2 --root /tmp/dist --json dist.json
.venv/bin/python scripts/distributed_bench.py --layers 1 --nsamples 8 --threads 1 --json equal.json  # equal threads
.venv/bin/python scripts/distributed_bench.py --model-only dist.json --workers 1 2 8 64   # the model again

The cost model, per block, on N workers (ranks of one thread each, as measured):

    T_block(N) = C · F / N                            calibration: each rank runs 1/N of the tokens
               + k · max_r Σ_{linears owned by r} s_i  the OBS solves, owners chosen longest first (`Ranks.owners`)
               + bytes(N) / β                          the collectives

- ``F``: the calibration work of one block, in FLOP: two forward passes (calibrate, then propagate through the
  compressed block: 2 × 2 · params · tokens) and the Hessian products (2 · Σ_groups in² · tokens, one per group
  of linears that read one input);
- ``s_i = in³ + out · in²`` (`prune.walker.solve_cost`);
- ``bytes(N)`` a rank sends: the float64 sums (8 · Σ_groups in²; a ring all-reduce sends 2 (N − 1) / N of them)
  and, over all owners, each weight once (4 · Σ out · in).
Fitted to the ranks' own figures (`prune.manifest.RankReport`): k = Σ solve seconds / Σ solve cost; C = (stage −
solves − collectives, the slowest rank) · N / F; β = bytes / collective seconds of the rank that waited least (a
lower bound on the bandwidth: its wait is in it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from prune.io import from_known
from prune.manifest import Manifest, RankReport
from prune.ranks import Ranks
from runtime_bench.shapes import SHAPES, Shape, build

BIN = Path(sys.executable).parent
METHODS = {
    "sparsegpt": ["prune", "--model", "{model}", "--method", "sparsegpt", "--sparsity", "0.5"],
    "gptq": ["quantize", "{model}", "--method", "gptq", "--bits", "4", "--group-size", "128"],
}
GROUPS = (("q", "k", "v"), ("o",), ("gate", "up"), ("down",))


@dataclass
class OneProcess:
    threads: int
    wall_s: float
    stage_s: float
    solve_s: float | None
    peak_rss_mib: float


@dataclass
class RanksRun:
    wall_s: float
    stage_s: float  # rank 0's
    per_rank: list[RankReport]

    @classmethod
    def from_dict(cls, data: dict) -> RanksRun:
        return from_known(cls, data, per_rank=[RankReport(**p) for p in data["per_rank"]])


@dataclass
class Row:
    method: str
    blocks: int
    one: OneProcess
    ranks: RanksRun
    tensors_equal: str  # "k/n": tensors equal bit for bit
    mask_flips: float  # of the float tensors' entries, the fraction zero in one output and not in the other
    max_rel_diff: float  # over the float tensors: max |a − b| / max |a|

    @classmethod
    def from_dict(cls, data: dict) -> Row:
        return from_known(cls, data, one=OneProcess(**data["one"]), ranks=RanksRun.from_dict(data["ranks"]))


@dataclass
class Fit:
    C_s_per_flop: float  # noqa: N815
    k_s_per_cost: float
    beta_bytes_per_s: float


@dataclass
class Projection:
    shape: str
    workers: int
    calibration_s: float
    solves_s: float
    communication_s: float
    total_h: float
    sent_gib_per_block: float


@dataclass
class Bench:
    cpu: str
    torch: str
    shape: str
    layers: int
    nsamples: int
    seqlen: int
    ranks: int
    rows: list[Row]
    fits: dict[str, Fit] = field(default_factory=dict)
    projections: dict[str, list[Projection]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Bench:
        data = json.loads(path.read_text())
        return from_known(cls, data, rows=[Row.from_dict(r) for r in data["rows"]], fits={}, projections={})


def cpu() -> str:
    text = Path("/proc/cpuinfo").read_text().splitlines()
    name = next((ln.split(":", 1)[1].strip() for ln in text if ln.startswith("model name")), platform.processor())
    flags = next((ln.split(":", 1)[1].split() for ln in text if ln.startswith("flags")), [])
    isa = [f for f in ("avx2", "avx512f", "amx_tile") if f in flags]
    return f"{name} ({', '.join(isa)}), {os.cpu_count()} cores"


def run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def compare(a: Path, b: Path) -> tuple[str, float, float]:
    """Two outputs tensor by tensor: how many are equal bit for bit; over the float tensors (integer ones, GPTQ's
    packed words, count only as equal or not), the fraction of entries zero in one and not the other, and the
    largest |a − b| / max|a|."""
    equal = total = flips = entries = 0
    worst = 0.0
    for fa in sorted(a.glob("*.safetensors")):
        with safe_open(fa, "pt") as x, safe_open(b / fa.name, "pt") as y:
            for key in x.keys():
                ta, tb = x.get_tensor(key), y.get_tensor(key)
                total += 1
                equal += bool(torch.equal(ta, tb))
                if ta.is_floating_point():
                    ta, tb = ta.float(), tb.float()
                    flips += int(((ta == 0) != (tb == 0)).sum())
                    entries += ta.numel()
                    worst = max(worst, (ta - tb).abs().max().item() / (ta.abs().max().item() or 1.0))
    return f"{equal}/{total}", flips / max(entries, 1), worst


def measure(method: str, model: Path, root: Path, ranks: int, threads: int, data: list[str], blocks: int) -> Row:
    cmd = [c.replace("{model}", str(model)) for c in METHODS[method]] + data
    one, many = root / f"{method}-one", root / f"{method}-ranks"
    for d in (one, many):
        shutil.rmtree(d, ignore_errors=True)
    wall_one = run([str(BIN / "slimpack"), "-q", *cmd, "--out", str(one)], threads)
    logging.info("%s, 1 process × %d threads: %.1f s", method, threads, wall_one)
    wall_many = run([str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={ranks}", "--no-python",
                     str(BIN / "slimpack"), "-q", *cmd, "--out", str(many)], 1)  # fmt: skip
    logging.info("%s, %d ranks × 1 thread: %.1f s", method, ranks, wall_many)
    m1, mn = Manifest.read(one), Manifest.read(many)
    assert mn.ranks is not None
    equal, flips, worst = compare(one, many)
    for d in (one, many):
        shutil.rmtree(d, ignore_errors=True)
    return Row(method, blocks, OneProcess(threads, round(wall_one, 1), m1.timing.seconds, m1.timing.compress_seconds,
                                          m1.timing.peak_rss_mib),
               RanksRun(round(wall_many, 1), mn.timing.seconds, mn.ranks.per_rank), equal, flips, worst)  # fmt: skip


# --- the cost model ---------------------------------------------------------------------------------------------


def block_linears(shape: Shape) -> dict[str, tuple[int, int]]:
    """``{name: (out, in)}`` of one block."""
    h, f, kv = shape.hidden, shape.ffn, shape.kv_heads * (shape.hidden // shape.heads)
    return {"q": (h, h), "k": (kv, h), "v": (kv, h), "o": (h, h), "gate": (f, h), "up": (f, h), "down": (h, f)}


def block_flop(shape: Shape, tokens: int) -> float:
    lin = block_linears(shape)
    params = sum(o * i for o, i in lin.values())
    return 2 * 2 * params * tokens + 2 * sum(lin[g[0]][1] ** 2 for g in GROUPS) * tokens


def solve_costs(shape: Shape) -> list[float]:
    return [float(i) ** 3 + float(o) * float(i) ** 2 for o, i in block_linears(shape).values()]


def fit(row: Row, shape: Shape, tokens: int) -> Fit:
    ranks = row.ranks.per_rank
    n = len(ranks)
    k = sum(r.solve_seconds or 0.0 for r in ranks) / (row.blocks * sum(solve_costs(shape)))
    rest = max(row.ranks.stage_s - (r.solve_seconds or 0.0) - r.collective_seconds for r in ranks)
    waited = min(ranks, key=lambda r: r.collective_seconds)
    beta = sum(waited.sent_bytes.values()) / max(waited.collective_seconds, 1e-9)
    return Fit(rest * n / (row.blocks * block_flop(shape, tokens)), k, beta)


def project(f: Fit, name: str, tokens: int, n: int) -> Projection:
    shape = SHAPES[name]
    lin = block_linears(shape)
    costs = solve_costs(shape)
    owner = Ranks(world=n).owners(costs)
    solve = f.k_s_per_cost * max(sum(c for c, o in zip(costs, owner) if o == r) for r in range(n))
    sums, weights = 8 * sum(lin[g[0]][1] ** 2 for g in GROUPS), 4 * sum(o * i for o, i in lin.values())
    sent = 2 * (n - 1) / n * sums + weights if n > 1 else 0.0
    calib = f.C_s_per_flop * block_flop(shape, tokens) / n
    comm = sent / f.beta_bytes_per_s
    layers = shape.layers
    return Projection(name, n, calib * layers, solve * layers, comm * layers, (calib + solve + comm) * layers / 3600,
                      sent / 2**30)  # fmt: skip


def model(bench: Bench, workers: list[int], shapes: list[str]) -> None:
    tokens = bench.nsamples * bench.seqlen
    for row in bench.rows:
        f = bench.fits[row.method] = fit(row, SHAPES[bench.shape], tokens)
        bench.projections[row.method] = [project(f, s, tokens, n) for s in shapes for n in workers]
        print(f"\n{row.method}: C = {f.C_s_per_flop:.3e} s/FLOP, k = {f.k_s_per_cost:.3e} s per unit of solve cost, "
              f"β ≥ {f.beta_bytes_per_s / 2**20:.0f} MiB/s; {tokens} calibration tokens")  # fmt: skip
        print("| shape | workers | calibration s | solves s | communication s | total h | sent GiB / block / rank |")
        print("|---|---|---|---|---|---|---|")
        for p in bench.projections[row.method]:
            print(f"| {p.shape} | {p.workers} | {p.calibration_s:.0f} | {p.solves_s:.0f} | {p.communication_s:.0f} | "
                  f"{p.total_h:.2f} | {p.sent_gib_per_block:.2f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="llama2-7b")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("/tmp/dist"))
    parser.add_argument("--ranks", type=int, default=2, help="ranks (of one thread each)")
    parser.add_argument("--threads", type=int, default=None, help="the single process's threads (default: --ranks)")
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 8, 64])
    parser.add_argument("--project", nargs="+", default=["llama2-7b", "llama2-70b"], choices=sorted(SHAPES))
    parser.add_argument("--model-only", type=Path, default=None, help="fit and project a bench JSON again")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.model_only is not None:
        bench = Bench.read(args.model_only)
    else:
        path = args.root / f"{args.shape}-{args.layers}"
        if not path.exists():
            build(args.shape, path, args.layers)
        data = ["--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen)]
        threads = args.threads or args.ranks
        rows = [measure(m, path, args.root, args.ranks, threads, data, args.layers) for m in args.methods]
        bench = Bench(cpu(), torch.__version__, args.shape, args.layers, args.nsamples, args.seqlen, args.ranks, rows)
    model(bench, args.workers, args.project)
    out = args.json or args.model_only
    assert out is not None, "--json"
    out.write_text(json.dumps(asdict(bench), indent=2))


if __name__ == "__main__":
    main()
