#!/usr/bin/env bash
# Create .venv-deepsparse: DeepSparse 1.8.0 (Neural Magic's sparse CPU runtime; 1.9.0 on PyPI is an empty
# stub) in its own environment. Its wheels stop at Python 3.11 and it pins onnx < 1.15 and numpy < 2, so it
# cannot share the main .venv; runtime_bench/engines/deepsparse_client.py runs deepsparse_worker.py with this
# environment's python as a subprocess. No torch: the worker imports only numpy and deepsparse.
# onnxruntime, pandas, geocoder, … come with sparsezoo, which deepsparse requires.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
if ! "$PYTHON" -c 'import sys; sys.exit(not ((3, 8) <= sys.version_info[:2] <= (3, 11)))' 2>/dev/null; then
    echo "DeepSparse 1.8.0 needs Python 3.8–3.11; set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
[ -x .venv-deepsparse/bin/python ] || "$PYTHON" -m venv .venv-deepsparse
PIP=(.venv-deepsparse/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" -c constraints-deepsparse.txt "deepsparse==1.8.0"
.venv-deepsparse/bin/python -c "import deepsparse, onnx, numpy
print('deepsparse', deepsparse.__version__, 'onnx', onnx.__version__, 'numpy', numpy.__version__, 'in .venv-deepsparse')"
