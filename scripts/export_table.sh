#!/usr/bin/env bash
# Reproduce docs/results/export.md on SmolLM2-135M: export the 50 %-pruned model (SparseGPT, pruning.md) to
# every format, verify each in its own runtime on the protocol's 40×512 windows, then time prefill (512
# tokens) and decode of all engines interleaved in one run, beside optimum-onnx's export of the same model.
# Needs runs/pruning (scripts/pruning_table.sh), runs/quant (scripts/quant_table.sh), .venv-deepsparse
# (scripts/setup-deepsparse.sh) and .venv-optimum (scripts/setup-optimum.sh). Existing outputs are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/export}
S=(.venv/bin/slimpack -q)
P50=runs/pruning/sparsegpt-unstructured-0.5
P24=runs/pruning/sparsegpt-2of4-0.5
Q4=runs/quant/sparsegpt-0.5-joint
Q4ACT=runs/quant/gptq-g64-act
mkdir -p "$OUT"
x() {  # x NAME SOURCE FORMAT: export once, then verify (full protocol) into NAME.verify.json
  local name=$1 src=$2 fmt=$3
  [ -d "$OUT/$name" ] || "${S[@]}" export "$src" --format "$fmt" --out "$OUT/$name"
  [ -f "$OUT/$name.verify.json" ] || "${S[@]}" verify "$OUT/$name" --reference "$src" --windows 40 --seqlen 512 \
    --threads 2 --json "$OUT/$name.verify.json" || true  # a failed verify is a result too: it is in the JSON
}
x onnx "$P50" onnx
x deepsparse "$P50" deepsparse
x onnx-int4 "$Q4" onnx-int4
x onnx-int4-act "$Q4ACT" onnx-int4
x semi24 "$P24" semi24
x gptq "$Q4" gptq
[ -f "$OUT/optimum-onnx/model.onnx" ] || .venv-optimum/bin/python runtime_bench/external/optimum_export.py "$P50" "$OUT/optimum-onnx"
.venv/bin/slimpack -q bench --prompt 512 --tokens 32 --rounds 5 --batch 0 --threads 2 --json "$OUT/latency.json" \
  torch="$P50" onnx="$OUT/onnx" optimum-onnx="$OUT/optimum-onnx" deepsparse="$OUT/deepsparse" \
  onnx-int4="$OUT/onnx-int4" semi24="$OUT/semi24"
