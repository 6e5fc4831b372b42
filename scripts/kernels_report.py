"""Decode and prefill of the sparse engine against the byte bound, at LLaMA-2-7B's block shapes
(docs/results/kernels.md). Times the artifacts of ``scripts/kernels_prepare.sh`` with ``slimpack bench`` in
groups that fit in memory; every group holds the dense baselines (onnxruntime fp32, DeepSparse dense, onnxruntime
int4), so every ratio is measured within one interleaved run. Then the tables:

- decode speedup of each sparse artifact over the best dense runtime of its run, the byte bound of that row
  (bytes the dense runtime reads per token / bytes ours reads) and the fraction of it reached;
- sparse + 4-bit against onnxruntime int4 of the dense GPTQ checkpoint;
- prefill (the prompt) against the best dense prefill;
- the GB/s each reaches against this machine's copy bandwidth (measured here, 2 threads).

    .venv/bin/python scripts/kernels_report.py --root /tmp/k7b --json docs/results/kernels.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from export.artifact import Artifact
from export.sparse import packed_linear_bytes
from runtime_bench.latency import TimingReport

ROOT = Path(__file__).resolve().parents[1]
BASE = ["ort-dense", "ds-dense", "ort-int4"]
SPARSITIES = ["10", "30", "50", "70", "90", "24"]
GROUPS = {
    "fp32": BASE + [f"sp{s}-fp32" for s in SPARSITIES],
    "bf16": BASE + [f"sp{s}-bf16" for s in SPARSITIES],
    "int8-gptq": BASE + ["ort-int4-joint50", "ort-int4-joint70", "sp50-gptq", "sp70-gptq"]
    + [f"sp{s}-int8" for s in SPARSITIES],
    "deepsparse": BASE[:2] + ["ds50", "ds70", "ds90", "sp50-bf16", "sp70-bf16", "sp90-bf16"],
}
DENSE = ("ort-dense", "ds-dense")


def copy_bandwidth(threads: int = 2, gib: float = 1.0) -> float:
    """GB/s of reading + writing a large fp32 tensor (``torch.Tensor.copy_``), median of 5."""
    import torch

    torch.set_num_threads(threads)
    src = torch.ones(int(gib * 2**30 / 4))
    dst = torch.empty_like(src)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / sorted(times[1:])[2] / 1e9


def bytes_per_token(art: Path) -> int:
    """Bytes of weights one decode step reads: every weight but the embedding (one row of it is looked up)."""
    artifact = Artifact.open(art)
    config = json.loads((art / "config.json").read_text())
    embed = config["vocab_size"] * config["hidden_size"]
    if artifact.format == "sparse":
        from safetensors import safe_open

        head = 0
        for shard in art.glob("*.safetensors"):
            with safe_open(str(shard), framework="pt") as fh:
                if "lm_head.weight" in fh.keys():
                    head = fh.get_slice("lm_head.weight").get_shape()[0] * config["hidden_size"]
                    head *= {"F32": 4, "BF16": 2, "F16": 2}[fh.get_slice("lm_head.weight").get_dtype()]
        return packed_linear_bytes(artifact.details) + head
    weights = sum(f.stat().st_size for f in art.rglob("*") if f.is_file() and f.suffix in (".data", ".onnx", ".bin"))
    return weights - 4 * embed  # onnxruntime and DeepSparse keep the embedding in fp32


def bench(root: Path, group: str, args: argparse.Namespace) -> TimingReport:
    out = root / f"bench-{group}.json"
    if not out.is_file() or args.rerun:
        arts = [str(root / name) for name in GROUPS[group] if (root / name).is_dir()]
        cmd = [sys.executable, "-m", "runtime_bench.cli", "-q", "bench", *arts, "--threads", "2",
               "--prompt", str(args.prompt), "--tokens", str(args.tokens), "--rounds", str(args.rounds),
               "--warmup", "1", "--batch", "0", "--json", str(out)]  # fmt: skip
        print(f"{time.strftime('%T')} bench {group}: {len(arts)} artifacts", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    return TimingReport.read(out)


def rows(root: Path, report: TimingReport, group: str) -> list[dict]:
    arts = report.artifacts
    med = {lab: a.timing(2).decode_ms_per_token.median for lab, a in arts.items()}
    pre = {lab: a.timing(2).prefill_ms.median for lab, a in arts.items()}
    best = min((lab for lab in DENSE if lab in med), key=med.__getitem__)
    best_pre = min((lab for lab in DENSE if lab in pre), key=pre.__getitem__)
    dense_bytes = bytes_per_token(root / "ort-dense")
    out = []
    for lab, a in arts.items():
        art = root / lab
        row = {"group": group, "artifact": lab, "engine": a.engine, "decode_ms": med[lab], "prefill_ms": pre[lab],
               "best_dense": best, "best_dense_ms": med[best], "speedup": med[best] / med[lab],
               "prefill_vs_dense": pre[best_pre] / pre[lab], "best_dense_prefill": best_pre}  # fmt: skip
        if a.engine in ("sparse", "onnxruntime"):
            ours = bytes_per_token(art)
            row.update(bytes=ours, bound=dense_bytes / ours, gbps=ours / med[lab] / 1e6)
            row["fraction"] = row["speedup"] / row["bound"]
        if lab.endswith("-gptq") and "ort-int4" in med:
            int4 = bytes_per_token(root / "ort-int4")
            row.update(vs_int4=med["ort-int4"] / med[lab], int4_bound=int4 / bytes_per_token(art))
        out.append(row)
    return out


def table(all_rows: list[dict], bandwidth: float) -> str:
    lines = [f"copy bandwidth (2 threads, torch copy_ of 1 GiB): {bandwidth:.1f} GB/s\n",
             "| run | artifact | decode ms/token | speedup vs best dense | byte bound | fraction | GB/s | prefill vs dense |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in all_rows:
        bound = f"{r['bound']:.2f}×" if "bound" in r else ""
        frac = f"{100 * r['fraction']:.0f} %" if "fraction" in r else ""
        gbps = f"{r['gbps']:.1f}" if "gbps" in r else ""
        lines.append(f"| {r['group']} | {r['artifact']} | {r['decode_ms']:.1f} | {r['speedup']:.2f}× (/{r['best_dense']}) "
                     f"| {bound} | {frac} | {gbps} | {r['prefill_vs_dense']:.2f}× |")  # fmt: skip
    lines.append("\n| sparse + 4-bit | decode ms | vs onnxruntime int4 (dense GPTQ) | byte bound vs int4 |\n|---|---|---|---|")
    for r in all_rows:
        if "vs_int4" in r:
            lines.append(f"| {r['artifact']} | {r['decode_ms']:.1f} | {r['vs_int4']:.2f}× | {r['int4_bound']:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/k7b"))
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rerun", action="store_true", help="time again a group whose JSON exists")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    bandwidth = copy_bandwidth()
    all_rows, reports = [], {}
    for group in args.groups:
        reports[group] = bench(args.root, group, args)
        all_rows += rows(args.root, reports[group], group)
    print(table(all_rows, bandwidth))
    if args.json:
        cpu = next(iter(reports.values())).cpu.to_dict() if reports else {}
        runs = {group: r.to_dict() for group, r in reports.items()}
        args.json.write_text(json.dumps({"cpu": cpu, "copy_gbps": bandwidth, "rows": all_rows, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
