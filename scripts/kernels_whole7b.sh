#!/usr/bin/env bash
# A whole LLaMA-2-7B shape (random bf16 weights) in the sparse engine, and the checkpoint sizes of
# docs/results/kernels.md: magnitude 50 % and 70 % (streamed), `export --format sparse` with each values kind, then
# one generation of the 50 % bf16 artifact in a fresh process (slimpack bench memory: peak RSS, tokens/s). Needs
# ~33 GB of disk at its peak (the dense model and one pruned copy, 12.6 GB each, and one export); outputs no
# longer needed are deleted as it goes. Writes ROOT/whole7b.json.
#   bash scripts/kernels_whole7b.sh [ROOT=/tmp/w7b]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-/tmp/w7b}
S=(.venv/bin/slimpack -q)
mkdir -p "$ROOT"
size() { du -sb "$1" | cut -f1; }
log() { echo "$(date +%T) $*" >&2; }
declare -A SIZES
[ -e "$ROOT/model" ] || { log build; .venv/bin/python scripts/shape_model.py llama2-7b "$ROOT/model"; }
SIZES[dense-bf16]=$(size "$ROOT/model")
for s in 50 70; do
  [ -e "$ROOT/m$s" ] || { log "prune $s"; "${S[@]}" prune --model "$ROOT/model" --method magnitude --sparsity "0.$s" --stream --out "$ROOT/m$s"; }
  for v in bf16 fp16 int8; do
    [ "$s" = 70 ] && [ "$v" = fp16 ] && continue
    out="$ROOT/sp$s-$v"
    [ -e "$out" ] || { log "export $s $v"; "${S[@]}" export "$ROOT/m$s" --format sparse --values "$v" --out "$out"; }
    SIZES[sp$s-$v]=$(size "$out")
    [ "$s-$v" = 50-bf16 ] || rm -rf "$out"
  done
  if [ "$s" = 50 ]; then
    log "generate (peak RSS)"
    "${S[@]}" bench memory "$ROOT/sp50-bf16" --threads 2 --prompt 16 --tokens 32 --json "$ROOT/memory50.json" >&2
    log "decode speed"
    "${S[@]}" bench "$ROOT/sp50-bf16" --threads 2 --prompt 16 --tokens 16 --rounds 2 --batch 0 --json "$ROOT/bench50.json"
  fi
  rm -rf "$ROOT/m$s"
done
{
  echo "{\"sizes\": {"
  first=1
  for k in "${!SIZES[@]}"; do [ $first = 1 ] || echo ","; first=0; printf '  "%s": %s' "$k" "${SIZES[$k]}"; done
  echo "}, \"memory50\": $(cat "$ROOT/memory50.json"), \"bench50\": $(cat "$ROOT/bench50.json"), \"packed50\": $(python3 -c "import json;print(json.dumps(json.load(open('$ROOT/sp50-bf16/export.json'))['linear_bytes']))")}"
} > "$ROOT/whole7b.json"
log "done: $ROOT/whole7b.json"
