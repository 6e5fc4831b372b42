#!/usr/bin/env bash
# The candidates for the default recipe of `slimpack run` (issue #14), on the default protocol: SmolLM2-135M,
# DLP allocation to 50 %, 4-bit GPTQ g64, offline corpus, 32 × 512 calibration and 40 × 512 evaluation windows.
# Each row is one process; a row whose output exists is skipped. Then: slimpack report DIR/*/ (the quantization table)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/candidates}
S=${SLIMPACK:-.venv/bin/slimpack -q}
mkdir -p "$OUT"
run() { local out=$1; shift; [ -e "$OUT/$out" ] || { echo "== $out"; /usr/bin/time -f "$out %e s" -a -o "$OUT/times.txt" $S "$@" --eval --out "$OUT/$out"; }; }
run wanda-dlp      prune --model smollm2-135m --method wanda --sparsity 0.5 --allocation dlp
run sparsegpt-dlp  prune --model smollm2-135m --method sparsegpt --sparsity 0.5 --allocation dlp
run wanda-dlp-gptq          quantize "$OUT/wanda-dlp" --group-size 64
run wanda-dlp-gptq-act      quantize "$OUT/wanda-dlp" --group-size 64 --act-order
run sparsegpt-dlp-gptq      quantize "$OUT/sparsegpt-dlp" --group-size 64
run sparsegpt-dlp-gptq-act  quantize "$OUT/sparsegpt-dlp" --group-size 64 --act-order
run joint-wanda-dlp         quantize smollm2-135m --group-size 64 --joint-with wanda --sparsity 0.5 --allocation dlp
run joint-sparsegpt-dlp     quantize smollm2-135m --group-size 64 --joint-with sparsegpt --sparsity 0.5 --allocation dlp
echo "candidates done"
