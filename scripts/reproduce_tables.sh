#!/usr/bin/env bash
# Issue #14's check that the redesign changed no number: one or more rows of every page of docs/results/,
# rerun with today's code, one process each (≈35 min on 2 cores). Then: python scripts/reproduce_tables.py DIR
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/reproduce}
S=".venv/bin/slimpack -q"
mkdir -p "$OUT"
run() { local out=$1; shift; [ -e "$OUT/$out" ] || { echo "== $out"; $S "$@" --out "$OUT/$out"; }; }
run magnitude-0.5    prune --model smollm2-135m --method magnitude --sparsity 0.5 --eval        # pruning.md
run magnitude-2of4   prune --model smollm2-135m --method magnitude --pattern 2:4 --eval         # pruning.md
run sparsegpt-0.5    prune --model smollm2-135m --method sparsegpt --sparsity 0.5 --eval        # pruning.md, export.md
run sparsegpt-2of4   prune --model smollm2-135m --method sparsegpt --pattern 2:4 --eval         # pruning.md (in-sweep N:M)
run wanda-nm-dlp-a0.15  prune --model smollm2-135m --method wanda --pattern 2:4 --allocation dlp -A alpha=0.15 --eval  # allocation.md (mixed N:M)
run pgz-2of4         prune --model smollm2-135m --method pgz --pattern 2:4 --eval               # quant.md (≈9 min)
run onnx             export "$OUT/sparsegpt-0.5" --format onnx                                  # export.md
[ -e "$OUT/onnx.verify.json" ] || $S verify "$OUT/onnx" --reference "$OUT/sparsegpt-0.5" --windows 40 --seqlen 512 \
    --threads 2 --json "$OUT/onnx.verify.json" > /dev/null                                       # export.md
run wanda-dlp-0.5    prune --model smollm2-135m --method wanda --sparsity 0.5 --allocation dlp --eval  # allocation.md, bench.md
[ -e "$OUT/dlp-0.5.json" ] || $S plan --model smollm2-135m --allocation dlp --sparsity 0.5 --out "$OUT/dlp-0.5.json"
run sparsegpt-dlp-plan-0.5  prune --model smollm2-135m --method sparsegpt --plan "$OUT/dlp-0.5.json" --eval  # allocation.md
run rtn-g64          quantize smollm2-135m --method rtn --group-size 64 --eval                  # quant.md
run wanda-dlp-gptq   quantize "$OUT/wanda-dlp-0.5" --group-size 64 --eval                       # bench.md (the earlier default)
cat > "$OUT/earlier-default.yaml" <<YAML
# the default recipe before issue #14, its model stages only (bench.md's perplexity-per-stage table)
model: smollm2-135m
out: $OUT/earlier-default
stages:
  prune: {method: wanda, sparsity: 0.5, allocation: dlp}
  quantize: {method: gptq, bits: 4, group_size: 64}
YAML
[ -e "$OUT/earlier-default/summary.json" ] || $S run "$OUT/earlier-default.yaml" > /dev/null   # bench.md
run slimgpt-log-0.2  prune --model smollm2-135m --structured --sparsity 0.2 --eval              # structured.md
echo "reproduction done"
