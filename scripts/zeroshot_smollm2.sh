#!/bin/bash
# The zero-shot tables of docs/results/zeroshot.md: SmolLM2-135M dense, Wanda 50 %, SparseGPT 50 %, SparseGPT 2:4,
# and the default recipe's artifacts (SparseGPT + DLP 50 % → onnx and deepsparse; its GPTQ 4-bit g64 act-order →
# onnx-int4), each on the seven local tasks (runtime_bench/zeroshot_tasks: 30 items per task written by the
# project, not the papers' data). One step at a time; a step whose output exists is skipped.
set -eu
cd "$(dirname "$0")/.."
S=.venv/bin/slimpack
R=${1:-runs/zeroshot}
mkdir -p "$R"
prune() { local name=$1; shift; [ -f "$R/$name/slimpack.json" ] || $S -q prune --model smollm2-135m --out "$R/$name" "$@"; }
prune wanda-50 --method wanda --sparsity 0.5
prune sparsegpt-50 --method sparsegpt --sparsity 0.5
prune sparsegpt-24 --method sparsegpt --pattern 2:4
prune default-prune --method sparsegpt --sparsity 0.5 --allocation dlp          # the default recipe's prune stage
[ -f "$R/default-quantize/slimpack.json" ] ||
  $S -q quantize "$R/default-prune" --bits 4 --group-size 64 --act-order --out "$R/default-quantize"
export_() { [ -f "$R/$1/export.json" ] || $S -q export "$2" --format "$3" --out "$R/$1"; }
export_ art-onnx "$R/default-prune" onnx
export_ art-onnx-int4 "$R/default-quantize" onnx-int4
export_ art-deepsparse "$R/default-prune" deepsparse
DENSE=$(.venv/bin/python -c "from prune.models import materialize_alias; print(materialize_alias('smollm2-135m'))")
run() { [ -f "$R/zs-$1.json" ] || $S -q eval "$2" --tasks paper --task-data local --json "$R/zs-$1.json" > /dev/null; }
run dense "$DENSE"
run wanda-50 "$R/wanda-50"
run sparsegpt-50 "$R/sparsegpt-50"
run sparsegpt-24 "$R/sparsegpt-24"
run default-prune "$R/default-prune"
run default-quantize "$R/default-quantize"
run art-onnx "$R/art-onnx"
run art-onnx-int4 "$R/art-onnx-int4"
run art-deepsparse "$R/art-deepsparse"
.venv/bin/python scripts/zeroshot_report.py "$R" > "$R/tables.md"
echo "tables: $R/tables.md"
