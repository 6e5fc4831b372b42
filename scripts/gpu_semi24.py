"""PyTorch 2:4 (cuSPARSELt / CUTLASS, `export.semi24`) against the same model dense in fp16, on one CUDA GPU, in the
timing harness (`runtime_bench.harness.compare`: interleaved rounds, quartiles).

.venv/bin/python scripts/gpu_semi24.py PRUNED_2of4_MODEL_DIR --out /tmp/gpu/semi24 --json semi24.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from export.api import ExportConfig, export_model
from export.artifact import Artifact
from prune.models import load_model
from runtime_bench.engines.torch_engine import Semi24Engine, TorchEngine
from runtime_bench.harness import compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a 2:4-pruned model directory")
    parser.add_argument("--out", type=Path, required=True, help="where the semi24 checkpoint is written")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: nothing measured")
    if not (args.out / "export.json").is_file():
        export_model(ExportConfig(str(args.model), "semi24", args.out, True, {"dtype": "float16"}))
    sparse = Semi24Engine(device="cuda")
    sparse.load(Artifact.open(args.out))
    dense = TorchEngine.from_model(load_model(args.model).model.half().to("cuda"), device="cuda")
    vocab = int(dense.model.config.vocab_size)
    prompt = np.random.default_rng(0).integers(0, vocab, (1, args.prompt), dtype=np.int64)
    results = compare({"dense-fp16": dense, "semi24-fp16": sparse}, prompt, args.tokens, args.rounds)
    speed = {k: results["dense-fp16"][k]["median"] / results["semi24-fp16"][k]["median"]
             for k in ("prefill_ms", "decode_ms_per_token")}  # fmt: skip
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "prompt": args.prompt,
              "tokens": args.tokens, "rounds": args.rounds, "results": results, "speedup_dense_over_semi24": speed}  # fmt: skip
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps({"gpu": report["gpu"], "speedup": speed}, indent=2))


if __name__ == "__main__":
    main()
