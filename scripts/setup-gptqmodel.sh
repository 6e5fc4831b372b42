#!/usr/bin/env bash
# Create .venv-gptqmodel: GPTQModel 7.6.0 (CPU) in its own environment — it pins numpy 2.2.6, which the
# main stack does not use — so that tests and `python -m quant.external` can load our GPTQ checkpoints
# with an existing runtime and compare its logits with ours. torch comes first from the CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv-gptqmodel/bin/python ] || "$PYTHON" -m venv .venv-gptqmodel
PIP=(.venv-gptqmodel/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -c constraints-gptqmodel.txt "gptqmodel==7.6.0"
.venv-gptqmodel/bin/python -c "import gptqmodel; print('gptqmodel', gptqmodel.__version__, 'in .venv-gptqmodel')"
