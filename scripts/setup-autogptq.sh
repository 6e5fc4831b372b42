#!/usr/bin/env bash
# Create .venv-autogptq: AutoGPTQ 0.7.1 (its last release, March 2024) in its own environment — pinned to
# its time's stack (transformers 4.38.2, numpy 1.26, datasets 2.18), not the main one — so that tests and
# `slimpack check autogptq` can load our GPTQ checkpoints with it and compare its logits with
# ours. torch comes first from the CPU wheel; AutoGPTQ is built from its sdist with BUILD_CUDA_EXT=0 (a pure
# Python wheel: the PyPI binary wheel's CUDA 12.1 extensions cannot load without libcudart, and a CUDA build
# stops on a CPU torch), so it runs its torch fallback QuantLinear. Everything under `nice -n 19`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv-autogptq/bin/python ] || nice -n 19 "$PYTHON" -m venv .venv-autogptq
PIP=(nice -n 19 .venv-autogptq/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" "torch==2.13.0"
BUILD_CUDA_EXT=0 "${PIP[@]}" -c constraints-autogptq.txt --no-binary auto-gptq "auto-gptq==0.7.1"
.venv-autogptq/bin/python -c "import auto_gptq; print('auto_gptq', auto_gptq.__version__, 'in .venv-autogptq')"
