"""Micro-benchmark of slimpack's sparse kernels (`runtime_bench.kernels`) at LLaMA-2-7B's linear shapes.

Random weights, unstructured sparsity (10–90 %) and 2:4, values fp32 / bf16 / int8 / gptq, on ``--threads``
threads. Decode (N = 1): the median (and min) µs of ``kernels.linear`` against dense fp32 ``F.linear`` and
``torch.mv`` (the faster of the two is "dense"), timed in interleaved rounds (every contender once per round, so
between two calls of one kernel all the others stream through the caches, and noise hits all alike). Per row:
the bytes stored (dense 4·out·in; ours the packed tensors) and read by the GEMV (the column index, where built,
in place of the mask), the GB/s read, the speedup over the best dense, the byte bound (dense bytes / our stored
bytes) and the fraction of it reached = speedup / bound — from the medians, and (in brackets) from the min times,
what a shared, busy machine gives when it is left alone for a moment. Prefill (N = 128): ours (the path `linear`
chooses) against dense ``F.linear``, and each of our two paths forced (the SpMM over the nonzeros, the GEMM of
decompressed rows: where they cross is `kernels.spmm_density`), and against onnxruntime's fp32 ``MatMul`` of the
same weight (MLAS: the best dense GEMM on these machines), all interleaved. The machine's copy bandwidth (a 1 GiB ``copy_`` and ``sum`` on the same threads) comes first.

    .venv/bin/python scripts/kernel_bench.py [--shapes 4096x4096,11008x4096,4096x11008] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

from export.sparse_format import PAD_BYTES, GPTQGrid, Layout, encode
from runtime_bench import kernels
from runtime_bench.engines.ort import session_options


def stats_us(samples: list[float]) -> tuple[float, float]:
    """(median, min) in µs: the median is the figure; the min is what a quiet machine gives (noisy machine)."""
    return statistics.median(samples) * 1e6, min(samples) * 1e6


def bandwidth(threads: int, gib: float = 1.0) -> dict[str, float]:
    """GB/s of a ``gib`` GiB fp32 ``sum`` (read) and ``copy_`` (read + write, both counted)."""
    a = torch.ones(int(gib * 2**30) // 4)
    b = torch.empty_like(a)
    reads, copies = [], []
    for _ in range(5):
        t = time.perf_counter()
        a.sum()
        reads.append(time.perf_counter() - t)
        t = time.perf_counter()
        b.copy_(a)
        copies.append(time.perf_counter() - t)
    n = a.numel() * 4
    return {"sum_read_gbs": n / min(reads) / 1e9, "copy_gbs": 2 * n / min(copies) / 1e9}


def unstructured(out: int, inp: int, sparsity: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g)
    return w * (torch.rand(out, inp, generator=g) >= sparsity)


def two_four(out: int, inp: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(out, inp // 4, 4, generator=g).argsort(-1) < 2
    return torch.randn(out, inp, generator=g) * keep.view(out, inp)


def derived(spec: Layout, tensors: dict[str, torch.Tensor], values: str) -> tuple[Layout, dict[str, torch.Tensor]]:
    """The fp32 encoding ``(spec, tensors)`` with other values (bf16, int8), as `encode` would write them — without
    re-deriving the mask (encode's cost at these shapes)."""
    flat = tensors["values"][: tensors["values"].numel() - PAD_BYTES // 4]
    out, inp = spec.shape
    new = dict(tensors)
    if values == "bf16":
        new["values"] = torch.cat([flat.bfloat16(), torch.zeros(PAD_BYTES // 2, dtype=torch.bfloat16)])
    else:  # int8: per-row symmetric scales of the row's largest |w|
        counts = tensors["row_offsets"].diff() if spec.layout == "bitmask" else torch.full((out,), inp // 2)
        rows = torch.repeat_interleave(torch.arange(out), counts)
        scales = torch.zeros(out).scatter_reduce(0, rows, flat.abs(), "amax") / 127
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        q = (flat / scales[rows]).round().clamp(-127, 127).to(torch.int8)
        new["values"], new["scales"] = torch.cat([q, torch.zeros(PAD_BYTES, dtype=torch.int8)]), scales
    return Layout(spec.shape, spec.dtype, spec.layout, values), new


def gptq_packed(w: torch.Tensor, layout: str, seed: int, group_size: int = 128) -> kernels.PackedWeight:
    g = torch.Generator().manual_seed(seed)
    out, inp = w.shape
    groups = inp // group_size
    scales = (torch.rand(out, groups, generator=g) * 0.01 + 0.001).half().float()
    zeros = torch.full((out, groups), 8)
    codes = torch.where(w != 0, torch.randint(0, 16, (out, inp), generator=g), torch.tensor(8)).to(torch.uint8)
    g_idx = torch.arange(inp) // group_size
    dense = (codes.float() - 8) * scales.repeat_interleave(group_size, 1)
    spec, tensors = encode(dense, "gptq", layout, GPTQGrid(codes, scales, zeros, g_idx.int(), group_size))
    return kernels.PackedWeight.from_stored(spec, tensors)


def contenders(out: int, inp: int, sparsities: list[float], values: list[str], patterns: list[str]):
    """(label, sparsity, pattern, values, PackedWeight) for every asked combination."""
    for pattern in patterns:
        for s in [0.5] if pattern == "2:4" else sparsities:
            w = two_four(out, inp, seed=7) if pattern == "2:4" else unstructured(out, inp, s, seed=int(s * 100))
            layout = "2:4" if pattern == "2:4" else "bitmask"
            spec, tensors = encode(w, "fp32", layout)
            for v in values:
                if v == "gptq":
                    packed = gptq_packed(w, layout, seed=3)
                elif v == "fp32":
                    packed = kernels.PackedWeight.from_stored(spec, tensors)
                else:
                    packed = kernels.PackedWeight.from_stored(*derived(spec, tensors, v))
                yield f"{pattern} {s:.0%} {v}", s, pattern, v, packed
            del w, tensors


def onnxruntime_matmul(weight: torch.Tensor, rows: int, threads: int) -> Callable[[torch.Tensor], object]:
    """``x ↦ x Wᵀ`` by onnxruntime's CPU ``MatMul`` (one node, W as an fp32 initializer), on ``threads`` threads,
    without spinning."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    out, inp = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, inp])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, out])],
        [numpy_helper.from_array(weight.t().contiguous().numpy(), "w")],
    )  # fmt: skip
    options = session_options(threads)  # the onnxruntime engine's
    # Its idle threads would otherwise spin after each run and slow whichever call comes next in the round.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(helper.make_model(graph).SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x.numpy()})


def interleaved(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, tuple[float, float]]:
    """(median, min) µs of each call over ``rounds`` rounds, the calls in turn within a round."""
    for f in calls.values():
        f()  # warm up
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for name, f in calls.items():
            t = time.perf_counter()
            f()
            samples[name].append(time.perf_counter() - t)
    return {k: stats_us(v) for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="4096x4096,11008x4096,4096x11008", help="OUTxIN,…")
    ap.add_argument("--sparsities", default="0.1,0.3,0.5,0.7,0.9")
    ap.add_argument("--values", default="fp32,bf16,int8,gptq")
    ap.add_argument("--patterns", default="unstructured,2:4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30, help="decode rounds")
    ap.add_argument("--prefill-rounds", type=int, default=5, help="prefill (N=128) rounds; 0: no prefill")
    ap.add_argument("--isa", default="auto")
    ap.add_argument("--json", help="write the data here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kernels.load()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.processor())
    flags = next((ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), [])
    simd = [f for f in flags if f.startswith(("avx", "fma", "f16c", "bmi", "amx"))]
    bw = bandwidth(args.threads)
    load = open("/proc/loadavg").read().split()[:3]
    print(f"CPU: {cpu} ({', '.join(simd)}); {args.threads} threads; kernel paths {kernels.isas()}, isa={args.isa}; torch {torch.__version__}")
    print(f"measured bandwidth: sum (read) {bw['sum_read_gbs']:.1f} GB/s, copy (read+write) {bw['copy_gbs']:.1f} GB/s; "
          f"load average before the run {' '.join(load)}\n")
    rows: list[dict[str, object]] = []
    head = ("| shape | pattern | sparsity | values | GEMV | MB stored | MB read | µs median (min) | GB/s read | speedup vs dense"
            " | byte bound | of bound: median (min) |"
            + (" prefill ms ours / dense | prefill dense/ours median (min) | prefill ms SpMM / GEMM | prefill onnxruntime/ours |"
               if args.prefill_rounds else ""))  # fmt: skip
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for shape in args.shapes.split(","):
        out, inp = (int(n) for n in shape.split("x"))
        weight = torch.randn(out, inp)
        x1, x2 = torch.randn(1, inp), torch.randn(inp)
        xp = torch.randn(128, inp)
        cases = list(contenders(out, inp, [float(s) for s in args.sparsities.split(",")], args.values.split(","),
                                args.patterns.split(",")))  # fmt: skip
        calls: dict[str, Callable[[], object]] = {
            "dense linear": lambda w=weight: torch.nn.functional.linear(x1, w),
            "dense mv": lambda w=weight: torch.mv(w, x2),
        }
        for label, *_, packed in cases:
            calls[label] = lambda p=packed: kernels.linear(x1, p, isa=args.isa)
        decode = interleaved(calls, args.rounds)
        prefill: dict[str, tuple[float, float]] = {}
        if args.prefill_rounds:
            matmul = onnxruntime_matmul(weight, xp.shape[0], args.threads)
            pcalls: dict[str, Callable[[], object]] = {
                "dense": lambda w=weight: torch.nn.functional.linear(xp, w), "onnxruntime": lambda: matmul(xp)
            }  # fmt: skip
            for label, *_, packed in cases:
                pcalls[label] = lambda p=packed: kernels.linear(xp, p, isa=args.isa)
                for path in ("spmm", "gemm"):
                    pcalls[f"{label} {path}"] = lambda p=packed, path=path: kernels.linear(xp, p, isa=args.isa, prefill=path)
            prefill = {k: (med / 1e3, low / 1e3) for k, (med, low) in interleaved(pcalls, args.prefill_rounds).items()}
        best = "dense linear" if decode["dense linear"][0] <= decode["dense mv"][0] else "dense mv"
        dense_us, dense_min = decode[best][0], min(decode["dense linear"][1], decode["dense mv"][1])
        dense_bytes = 4 * out * inp
        for name, key in (("dense F.linear", "dense linear"), ("dense torch.mv", "dense mv")):
            us, low = decode[key]
            line = (f"| {out}×{inp} | {name} | 0% | fp32 | dense | {dense_bytes / 1e6:.1f} | {dense_bytes / 1e6:.1f} | "
                    f"{us:.0f} ({low:.0f}) | {dense_bytes / us / 1e3:.1f} | | | |")  # fmt: skip
            if args.prefill_rounds:
                line += f" – / {prefill['dense'][0]:.1f} | | | onnxruntime {prefill['onnxruntime'][0]:.1f} ms |" if key == "dense linear" else " | | | |"
            print(line)
        for label, s, pattern, v, packed in cases:
            (us, low), nbytes, read = decode[label], packed.nbytes, packed.gemv_bytes
            bound = dense_bytes / nbytes
            gemv = "index" if packed.index.numel() else "expand"
            row = {"shape": [out, inp], "pattern": pattern, "sparsity": s, "values": v, "gemv": gemv, "bytes": nbytes,
                   "bytes_read": read, "us": us, "us_min": low, "gbs_read": read / us / 1e3, "dense_us": dense_us,
                   "dense_us_min": dense_min, "dense_linear_us": decode["dense linear"][0],
                   "dense_mv_us": decode["dense mv"][0], "speedup": dense_us / us, "bound": bound,
                   "of_bound": dense_us / us / bound, "of_bound_min": dense_min / low / bound}  # fmt: skip
            line = (f"| {out}×{inp} | {pattern} | {s:.0%} | {v} | {gemv} | {nbytes / 1e6:.1f} | {read / 1e6:.1f} | "
                    f"{us:.0f} ({low:.0f}) | {row['gbs_read']:.1f} | {row['speedup']:.2f}× | {bound:.2f}× | "
                    f"{row['of_bound']:.0%} ({row['of_bound_min']:.0%}) |")  # fmt: skip
            if args.prefill_rounds:
                (pm, pl), (dm, dl) = prefill[label], prefill["dense"]
                sm, gm, om = prefill[f"{label} spmm"][0], prefill[f"{label} gemm"][0], prefill["onnxruntime"][0]
                row.update(prefill_ms=pm, prefill_ms_min=pl, prefill_dense_ms=dm, prefill_dense_ms_min=dl,
                           prefill_spmm_ms=sm, prefill_gemm_ms=gm, prefill_onnxruntime_ms=om)  # fmt: skip
                line += f" {pm:.1f} / {dm:.1f} | {dm / pm:.2f}× ({dl / pl:.2f}×) | {sm:.1f} / {gm:.1f} | {om / pm:.2f}× |"
            print(line, flush=True)
            rows.append(row)
        del cases, calls
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu, "flags": simd, "threads": args.threads, "isa": args.isa, "bandwidth": bw,
                       "loadavg": load, "rows": rows}, f, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
