"""Exporters (ONNX with KV cache, DeepSparse, ONNX int4, PyTorch 2:4) and perplexity-parity ``verify``.

Not built yet: issue #5 fills this package.
"""
