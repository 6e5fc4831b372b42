"""Scripts that other runtimes' interpreters run, in their own environments: they import nothing of slimpack's
(`tests/unit/test_layers.py` checks it), and slimpack runs them as subprocesses.

- optimum_export.py runs in .venv-optimum (scripts/setup-optimum.sh): it exports the reference ONNX decoder with
  optimum's exporter, whose decode latency our own export is compared with;
- deepsparse_kernels.py runs in .venv-deepsparse (scripts/setup-deepsparse.sh): which kernels DeepSparse picks for
  each layer of a graph, and their time.
"""
