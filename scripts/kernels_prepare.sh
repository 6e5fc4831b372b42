#!/usr/bin/env bash
# The artifacts of docs/results/kernels.md at LLaMA-2-7B's block shapes (2 blocks, random bf16 weights): pruned
# models at 10–90 % and 2:4 (magnitude), the dense and the joint SparseGPT + GPTQ 4-bit checkpoints, and their
# exports (sparse engine: fp32 / bf16 / int8 / gptq values; onnxruntime fp32 and int4; DeepSparse). Each step is
# skipped when its output exists, so the script resumes. Then scripts/kernels_report.py times them.
#   bash scripts/kernels_prepare.sh [ROOT=/tmp/k7b]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-/tmp/k7b}
S=(.venv/bin/slimpack -q)
mkdir -p "$ROOT"
step() { local out=$1; shift; [ -e "$out" ] && return 0; echo "$(date +%T) $*" >&2; "$@"; }

step "$ROOT/model" .venv/bin/python scripts/shape_model.py llama2-7b "$ROOT/model" --layers 2
for s in 10 30 50 70 90; do
  step "$ROOT/m$s" "${S[@]}" prune --model "$ROOT/model" --method magnitude --sparsity "0.$s" --stream --out "$ROOT/m$s"
done
step "$ROOT/m24" "${S[@]}" prune --model "$ROOT/model" --method magnitude --pattern 2:4 --stream --out "$ROOT/m24"
CAL=(--nsamples 8 --seqlen 128 --stream)
step "$ROOT/gptq" "${S[@]}" quantize "$ROOT/model" --bits 4 --group-size 128 "${CAL[@]}" --out "$ROOT/gptq"
for s in 50 70; do
  step "$ROOT/joint$s" "${S[@]}" quantize "$ROOT/model" --bits 4 --group-size 128 --joint-with sparsegpt \
      --sparsity "0.$s" "${CAL[@]}" --out "$ROOT/joint$s"
done
step "$ROOT/ort-dense" "${S[@]}" export "$ROOT/model" --format onnx --stream --out "$ROOT/ort-dense"
step "$ROOT/ort-int4" "${S[@]}" export "$ROOT/gptq" --format onnx-int4 --stream --out "$ROOT/ort-int4"
step "$ROOT/ds-dense" "${S[@]}" export "$ROOT/model" --format deepsparse --stream --out "$ROOT/ds-dense"
for s in 50 70 90; do
  step "$ROOT/ds$s" "${S[@]}" export "$ROOT/m$s" --format deepsparse --stream --out "$ROOT/ds$s"
done
for s in 10 30 50 70 90 24; do
  for v in fp32 bf16 int8; do
    step "$ROOT/sp$s-$v" "${S[@]}" export "$ROOT/m$s" --format sparse --values "$v" --out "$ROOT/sp$s-$v"
  done
done
for s in 50 70; do
  step "$ROOT/sp$s-gptq" "${S[@]}" export "$ROOT/joint$s" --format sparse --values gptq --out "$ROOT/sp$s-gptq"
  step "$ROOT/ort-int4-joint$s" "${S[@]}" export "$ROOT/joint$s" --format onnx-int4 --stream --out "$ROOT/ort-int4-joint$s"
done
echo "$(date +%T) done: $ROOT" >&2
