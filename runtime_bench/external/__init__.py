"""Scripts that run inside other runtimes' environments (no slimpack import there).

optimum_export.py runs in .venv-optimum (scripts/setup-optimum.sh): it exports the reference ONNX decoder with
optimum's exporter, whose decode latency our own export is compared with.
"""
