#!/usr/bin/env bash
# Reproduce docs/results/quant.md on SmolLM2-135M (same protocol as pruning.md). Needs the pruned models of
# scripts/pruning_table.sh (runs/pruning) and scripts/allocation_table.sh (runs/allocation/sparsegpt-dlp-0.7).
# Runs whose output directory exists are skipped. ≈1.6 h on 2 cores (PGZ: 4–9 min a run).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/quant}
P=${PRUNED:-runs/pruning}
S=(.venv/bin/slimpack -q)
mkdir -p "$OUT"
q() {  # q NAME ARGS...: one quantize run with evaluation
  local name=$1; shift
  [ -d "$OUT/$name" ] || "${S[@]}" quantize "$@" --eval --out "$OUT/$name"
}
# 4-bit on the dense model: RTN, GPTQ with group 64/32, act-order off/on
q rtn-g64 smollm2-135m --method rtn --group-size 64
q rtn-g32 smollm2-135m --method rtn --group-size 32
q gptq-g64 smollm2-135m --group-size 64
q gptq-g64-act smollm2-135m --group-size 64 --act-order
q gptq-g32 smollm2-135m --group-size 32
q gptq-g32-act smollm2-135m --group-size 32 --act-order
# 50 % / 2:4 / 4:8 + 4-bit: sequential (the pruned model of pruning.md, then GPTQ) vs joint (one walk)
for m in wanda sparsegpt; do
  q "$m-0.5-seq" "$P/$m-unstructured-0.5" --group-size 64
  q "$m-0.5-joint" smollm2-135m --group-size 64 --joint-with "$m" --sparsity 0.5
done
for pat in 2:4 4:8; do
  q "sparsegpt-${pat/:/of}-seq" "$P/sparsegpt-${pat/:/of}-0.5" --group-size 64
  q "sparsegpt-${pat/:/of}-joint" smollm2-135m --group-size 64 --joint-with sparsegpt --pattern "$pat"
done
# Table 17 of 001 (DLP): SparseGPT 70 % uniform vs DLP at 8 / 4 / 3 bits (32-bit = the fp32 runs)
for b in ${BITS:-8 4 3}; do
  q "sparsegpt-0.7-uniform-${b}bit" "$P/sparsegpt-unstructured-0.7" --group-size 64 --bits "$b"
  q "sparsegpt-0.7-dlp-${b}bit" runs/allocation/sparsegpt-dlp-0.7 --group-size 64 --bits "$b"
done
# PGZ vs SparseGPT (Tables 1 and 3 of 002): pruned only, and joint PGZ + 4-bit
for pat in unstructured 2:4 4:8; do
  tag=$([ "$pat" = unstructured ] && echo 0.5 || echo "${pat/:/of}")
  [ -d "$OUT/pgz-$tag" ] || "${S[@]}" prune --model smollm2-135m --method pgz --pattern "$pat" --sparsity 0.5 --eval --out "$OUT/pgz-$tag"
  q "pgz-$tag-joint" smollm2-135m --group-size 64 --joint-with pgz --pattern "$pat" --sparsity 0.5
done
q pgz-0.5-seq "$OUT/pgz-0.5" --group-size 64   # PGZ, then GPTQ (sequential)
"${S[@]}" report runs/pruning/dense.json "$OUT"/*/ | tee "$OUT/table.md"
