#!/bin/bash
# What scripts/zeroshot_parity.py compares (issue #29): SmolLM2-135M dense, the same with a tokenizer that prepends
# BOS, the default recipe's models (SparseGPT + DLP 50 %; its GPTQ 4-bit g64 act-order, and that checkpoint's weights
# dequantized for lm-eval's HF model) and their onnx, onnx-int4 and deepsparse artifacts. A step whose output exists
# is skipped. Then: .venv/bin/python scripts/zeroshot_parity.py "$R"
set -eu
cd "$(dirname "$0")/.."
S=".venv/bin/slimpack -q"
R=${1:-runs/parity}
mkdir -p "$R"
DENSE=$(.venv/bin/python -c "from prune.models import materialize_alias; print(materialize_alias('smollm2-135m'))")
[ -e "$R/dense" ] || ln -s "$DENSE" "$R/dense"
[ -e "$R/dense-bos" ] || .venv/bin/python - "$DENSE" "$R/dense-bos" <<'PY'
import shutil, sys
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer
shutil.copytree(sys.argv[1], sys.argv[2])
tok = AutoTokenizer.from_pretrained(sys.argv[2])
bos = tok.bos_token
tok._tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                   special_tokens=[(bos, tok.bos_token_id)])
tok.save_pretrained(sys.argv[2])
assert AutoTokenizer.from_pretrained(sys.argv[2]).encode("hello")[0] == tok.bos_token_id
PY
[ -f "$R/default-prune/slimpack.json" ] ||
  $S prune --model smollm2-135m --method sparsegpt --sparsity 0.5 --allocation dlp --out "$R/default-prune"
[ -f "$R/default-quantize/slimpack.json" ] ||
  $S quantize "$R/default-prune" --bits 4 --group-size 64 --act-order --out "$R/default-quantize"
export_() { [ -f "$R/$1/export.json" ] || $S export "$2" --format "$3" --out "$R/$1"; }
export_ default-quantize-hf "$R/default-quantize" hf
export_ art-onnx "$R/default-prune" onnx
export_ art-onnx-int4 "$R/default-quantize" onnx-int4
export_ art-deepsparse "$R/default-prune" deepsparse
echo "built: $R"
