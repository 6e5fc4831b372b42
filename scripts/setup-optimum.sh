#!/usr/bin/env bash
# Create .venv-optimum: optimum-onnx 0.1.0 (optimum 2.1.0, onnxruntime) in its own environment — it pins
# transformers < 4.58, the main stack is on transformers 5 — so that runtime_bench/external/optimum_export.py
# can export the reference ONNX decoder (ORTModelForCausalLM layout) that our export's latency is compared with.
# torch comes first from the CPU wheel; optimum 2.1.0 asks only torch>=1.11, so the main stack's torch fits.
# accelerate is not a dependency of optimum-onnx, but optimum's post-processing needs it to deduplicate tied
# weights (embed_tokens / lm_head); without it the exported file carries the embedding twice.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
[ -x .venv-optimum/bin/python ] || "$PYTHON" -m venv .venv-optimum
PIP=(.venv-optimum/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -c constraints-optimum.txt "optimum-onnx[onnxruntime]==0.1.0" "accelerate==1.15.0"
.venv-optimum/bin/python -c "import optimum.exporters.onnx, transformers, torch, onnxruntime, importlib.metadata as m
print('optimum-onnx', m.version('optimum-onnx'), 'optimum', m.version('optimum'), 'transformers', transformers.__version__,
      'torch', torch.__version__, 'onnxruntime', onnxruntime.__version__, 'in .venv-optimum')"
