"""Run inside .venv-deepsparse: which kernels DeepSparse 1.8 picks for each weight layer of a graph, and their
time, from its analysis engine (``DebugAnalysisEngine``). Sparse kernels are named ``ks_…-XX.X%`` (the layer's
sparsity); dense ones ``gemm``. Evidence that a pruned model's sparsity reaches DeepSparse's kernels.

Usage: .venv-deepsparse/bin/python runtime_bench/external/deepsparse_kernels.py GRAPH.onnx [--iterations 5] [--cores 2]
(GRAPH: ``prefill.onnx`` or ``decode.onnx`` of a ``slimpack export --format deepsparse`` artifact).
Prints one JSON line per (kernel kind, layer role) and the total, in analysis-mode milliseconds.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict

import numpy as np
from deepsparse.engine import DebugAnalysisEngine


def example_inputs(engine: DebugAnalysisEngine) -> list[np.ndarray]:
    """Inputs of the right shapes: a cache with all but its first slot valid, positions at the end."""
    inputs = []
    for name, shape in zip(engine.input_names, engine.input_shapes):
        if name == "input_ids":
            inputs.append(np.ones(shape, np.int64))
        elif name == "positions":
            inputs.append(np.full(shape, 500, np.int64))
        elif name == "attention_mask":
            mask = np.zeros(shape, np.int64)
            mask[0, -501:] = 1
            inputs.append(mask)
        else:
            inputs.append(np.zeros(shape, np.float32))
    return inputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    engine = DebugAnalysisEngine(
        args.graph, batch_size=1, num_cores=args.cores, num_iterations=args.iterations, num_warmup_iterations=1
    )
    info = engine.analyze(example_inputs(engine))
    kinds: Counter[tuple[str, str]] = Counter()
    times: defaultdict[tuple[str, str], float] = defaultdict(float)
    for layer in info["layer_info"]:
        if layer.get("kernel_dims"):  # layers with a weight
            kind = re.sub(r"-[\d.]+%$", "", layer["name"].rsplit("_", 1)[0])
            key = (kind, "lm_head" if layer["canonical_name"] == "logits" else "linear")
            kinds[key] += 1
            times[key] += layer["average_run_time_in_ms"]
    for (kind, role), n in sorted(kinds.items()):
        print(
            json.dumps(
                {"graph": args.graph, "kernel": kind, "role": role, "layers": n, "ms": round(times[(kind, role)], 2)}
            )
        )
    print(json.dumps({"graph": args.graph, "total_ms": round(float(info["average_total_time"]), 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
