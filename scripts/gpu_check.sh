#!/usr/bin/env bash
# The CUDA checks of issue #30 in one script (≤ 8 minutes on one H100-class GPU), for a machine lent with a GPU:
#   1. a streamed LLaMA-2-7B-shape prune (SparseGPT) and quantize (GPTQ) with --device cuda: wall time, the
#      stage's seconds, peak RSS and peak GPU memory (the manifests' timing);
#   2. semi24 (PyTorch 2:4) against dense fp16 in the timing harness (scripts/gpu_semi24.py);
#   3. the 2-rank NCCL path (torchrun, one GPU per rank), when there are two GPUs: its output against one process.
# Usage: bash scripts/gpu_check.sh [OUT_DIR] [BLOCKS]   (defaults: /tmp/gpu_check, 8 of the 32 blocks)
# Everything it measures goes to OUT_DIR/gpu_check.json and OUT_DIR/log.txt.
set -euo pipefail
OUT=${1:-/tmp/gpu_check}
BLOCKS=${2:-8}
PY=${PYTHON:-.venv/bin/python}
SLIMPACK=${SLIMPACK:-.venv/bin/slimpack}
TORCHRUN=${TORCHRUN:-.venv/bin/torchrun}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
GPUS=$(nvidia-smi -L | wc -l)
DATA=(--nsamples 32 --seqlen 512)
[ -d "$OUT/7b" ] || "$PY" scripts/shape_model.py llama2-7b "$OUT/7b" --layers "$BLOCKS"
timed() { local name=$1; shift; local t0; t0=$(date +%s%N); "$@"; echo "$name $(( ($(date +%s%N) - t0) / 1000000 ))" >> "$OUT/walls.txt"; }
rm -f "$OUT/walls.txt"
timed prune "$SLIMPACK" -q prune --model "$OUT/7b" --method sparsegpt --sparsity 0.5 --device cuda --stream \
  "${DATA[@]}" --out "$OUT/prune" --overwrite
timed quantize "$SLIMPACK" -q quantize "$OUT/7b" --bits 4 --group-size 128 --device cuda --stream \
  "${DATA[@]}" --out "$OUT/quantize" --overwrite
# semi24 needs a 2:4 model: magnitude 2:4 (data-free) of the first 2 blocks' shapes
[ -d "$OUT/7b-2" ] || "$PY" scripts/shape_model.py llama2-7b "$OUT/7b-2" --layers 2
"$SLIMPACK" -q prune --model "$OUT/7b-2" --method magnitude --pattern 2:4 --out "$OUT/24" --overwrite
"$PY" scripts/gpu_semi24.py "$OUT/24" --out "$OUT/semi24" --json "$OUT/semi24.json"
if [ "$GPUS" -ge 2 ]; then
  timed prune-nccl "$TORCHRUN" --standalone --nproc-per-node 2 --no-python "$SLIMPACK" -q prune --model "$OUT/7b" \
    --method sparsegpt --sparsity 0.5 --device cuda --stream "${DATA[@]}" --out "$OUT/prune-nccl" --overwrite
fi
"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from prune.manifest import Manifest
out = Path(sys.argv[1])
walls = dict(line.split() for line in (out / "walls.txt").read_text().splitlines())
report = {"walls_s": {k: round(float(v) / 1000, 1) for k, v in walls.items()}, "stages": {}}
for name in ("prune", "quantize", "prune-nccl"):
    if (out / name / "slimpack.json").is_file():
        m = Manifest.read(out / name)
        report["stages"][name] = {"timing": m.timing.__dict__, "ranks": None if m.ranks is None else m.ranks.__dict__}
if (out / "prune-nccl").is_dir():  # the 2-rank NCCL output against one process's, tensor by tensor
    import torch
    from safetensors.torch import load_file
    one = {k: v for f in sorted((out / "prune").glob("*.safetensors")) for k, v in load_file(f).items()}
    two = {k: v for f in sorted((out / "prune-nccl").glob("*.safetensors")) for k, v in load_file(f).items()}
    report["nccl_vs_one"] = {
        "masks_equal": all(torch.equal(one[k] == 0, two[k] == 0) for k in one),
        "bit_equal": all(torch.equal(one[k], two[k]) for k in one),
        "max_abs_diff": max(float((one[k].float() - two[k].float()).abs().max()) for k in one),
    }
report["semi24"] = json.loads((out / "semi24.json").read_text())["speedup_dense_over_semi24"]
(out / "gpu_check.json").write_text(json.dumps(report, indent=2))
print(json.dumps(report, indent=2))
PY
