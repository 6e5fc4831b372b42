#!/usr/bin/env bash
# Reproduce docs/results/allocation.md: SmolLM2-135M, Wanda and SparseGPT at 50/60/70/80 % with every
# allocation, plus mixed N:M (DLP) against uniform N:M. One process per run. ≈2.5 h on 2 cores.
# Runs whose output directory exists are skipped (re-run the script to fill in what is missing);
# METHODS="wanda" limits the sweep to one method.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/allocation}
S=(.venv/bin/slimpack -q)
mkdir -p "$OUT/plans"
for s in 0.5 0.6 0.7 0.8; do
  for a in owl dlp pi log-increase; do
    [ -f "$OUT/plans/$a-$s.json" ] || "${S[@]}" plan --model smollm2-135m --allocation "$a" --sparsity "$s" --out "$OUT/plans/$a-$s.json"
  done
done
for method in ${METHODS:-wanda sparsegpt}; do
  for s in 0.5 0.6 0.7 0.8; do
    for a in uniform owl dlp pi log-increase; do
      plan=()
      [ "$a" = uniform ] || plan=(--plan "$OUT/plans/$a-$s.json")
      [ -d "$OUT/$method-$a-$s" ] || "${S[@]}" prune --model smollm2-135m --method "$method" --sparsity "$s" \
        --allocation uniform "${plan[@]}" --eval --out "$OUT/$method-$a-$s"
    done
  done
done
# Mixed N:M: DLP chooses N per block (N zeros per M) with the uniform pattern's total. slimpack's "2:4" is
# DLP's "2:4" (50 %), slimpack's "3:4" is DLP's "1:4" (75 %): DLP counts non-zeros.
for pattern in 2:4 3:4; do
  for a in uniform dlp; do
    [ -d "$OUT/nm-$a-${pattern/:/of}" ] || "${S[@]}" prune --model smollm2-135m --method wanda --pattern "$pattern" \
      --allocation "$a" --eval --out "$OUT/nm-$a-${pattern/:/of}"
  done
done
"${S[@]}" report "$OUT"/*/ | tee "$OUT/table.md"
