"""Exporters (ONNX with KV cache, ONNX int4, DeepSparse, PyTorch 2:4, GPTQ) and ``verify``: each artifact,
run in its own runtime, must compute the in-framework model (see `export.api` and `export.verify`)."""
