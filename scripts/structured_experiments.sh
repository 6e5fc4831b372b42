#!/bin/bash
# The structured / rl-search experiments of docs/results/structured.md (one at a time, 2 cores).
set -u
cd "$(dirname "$0")/.."
S=.venv/bin/slimpack
R=${1:-runs/structured}
mkdir -p $R
p() { local name=$1; shift; [ -f $R/$name/slimpack.json ] && return; echo "== $name"; /usr/bin/time -f "%e s wall" $S -q prune --model smollm2-135m --eval --out $R/$name "$@" 2>&1 | grep -v "it/s\]" | tail -2; }
plan_of() { .venv/bin/python -c "import json,sys; m=json.load(open(sys.argv[1])); json.dump({'plan': m['allocation']['plan'], 'allocation': m['allocation']['name']}, open(sys.argv[2],'w'))" $1 $2; }
p slimgpt-log-20 --structured --sparsity 0.2
p slimgpt-log-50 --structured --sparsity 0.5
p slimgpt-uniform-20 --structured --sparsity 0.2 --allocation uniform
p slimgpt-uniform-50 --structured --sparsity 0.5 --allocation uniform
p slimgpt-nogcd-log-20 --structured --sparsity 0.2 -O grouped_cholesky=false
p slimgpt-nogcd-log-50 --structured --sparsity 0.5 -O grouped_cholesky=false
p l2-uniform-20 --structured --method activation-l2 --sparsity 0.2 --allocation uniform
p l2-uniform-recon-20 --structured --method activation-l2 --sparsity 0.2 --allocation uniform --reconstruct
p l2-uniform-50 --structured --method activation-l2 --sparsity 0.5 --allocation uniform
p l2-uniform-recon-50 --structured --method activation-l2 --sparsity 0.5 --allocation uniform --reconstruct
p l2-search-20 --structured --method activation-l2 --sparsity 0.2 --allocation rl-search -A episodes=200
plan_of $R/l2-search-20/slimpack.json $R/l2-search-20.plan.json
p l2-search-recon-20 --structured --method activation-l2 --sparsity 0.2 --plan $R/l2-search-20.plan.json --reconstruct
p wanda-search-70 --method wanda --sparsity 0.7 --allocation rl-search -A episodes=300
p wanda-owl-70 --method wanda --sparsity 0.7 --allocation owl
p wanda-dlp-70 --method wanda --sparsity 0.7 --allocation dlp
p wanda-uniform-70 --method wanda --sparsity 0.7
p wanda-search-60-reused --method wanda --sparsity 0.6 --allocation rl-search -A episodes=45 -A agent=$R/wanda-search-70/agent
p wanda-search-60-fresh --method wanda --sparsity 0.6 --allocation rl-search -A episodes=45
# dense perplexity, ONNX exports of the SlimGPT models, their verify, and one interleaved latency comparison
[ -f $R/dense.json ] || $S -q eval smollm2-135m --json $R/dense.json
DENSE=$(.venv/bin/python -c "from prune.models import materialize_alias; print(materialize_alias('smollm2-135m'))")
for m in dense slim-20 slim-50; do
  src=$DENSE; [ $m = slim-20 ] && src=$R/slimgpt-log-20; [ $m = slim-50 ] && src=$R/slimgpt-log-50
  [ -f $R/onnx-$m/export.json ] || $S -q export $src --format onnx --out $R/onnx-$m
done
for m in 20 50; do
  [ -f $R/verify-slim-$m.json ] || $S -q verify $R/onnx-slim-$m --reference $R/slimgpt-log-$m --json $R/verify-slim-$m.json
done
[ -f $R/latency.json ] || .venv/bin/slimpack -q bench torch-dense=$DENSE torch-slim-20=$R/slimgpt-log-20 \
  torch-slim-50=$R/slimgpt-log-50 onnx-dense=$R/onnx-dense onnx-slim-20=$R/onnx-slim-20 onnx-slim-50=$R/onnx-slim-50 \
  --prompt 128 --tokens 32 --rounds 5 --warmup 1 --batch 0 --threads 2 --json $R/latency.json
.venv/bin/python scripts/structured_report.py $R > $R/tables.md
echo done
