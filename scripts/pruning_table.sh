#!/usr/bin/env bash
# Reproduce docs/results/pruning.md: SmolLM2-135M, dense + 4 methods × {50 %, 2:4, 4:8, 70 %}.
# One process per run, so that each peak RSS is that run's own. ≈45 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/pruning}
S=(.venv/bin/slimpack -q)
mkdir -p "$OUT"
"${S[@]}" eval smollm2-135m --json "$OUT/dense.json"
for method in magnitude wanda sparsegpt pruner-zero; do
  for setting in "unstructured 0.5" "2:4 0.5" "4:8 0.5" "unstructured 0.7"; do
    set -- $setting
    tag="${method}-${1/:/of}-${2}"
    "${S[@]}" prune --model smollm2-135m --method "$method" --pattern "$1" --sparsity "$2" \
      --eval --overwrite --out "$OUT/$tag"
  done
done
"${S[@]}" report "$OUT/dense.json" "$OUT"/*/ | tee "$OUT/table.md"
