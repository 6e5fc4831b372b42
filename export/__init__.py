"""export/ — the third floor: owns the artifact format and writes every deployable one.

Holds: `artifact` (`Artifact` and ``export.json``: the format runtimes read), `base` (the `Exporter` protocol and
registry), one module per format (`sparse` (+ `hf`), `onnx` (+ `onnx-int4`), `deepsparse`, `semi24`, `gptq`), the ONNX
graph modules below `onnx` (`onnx_kv`, `onnx_int4`, `onnx_stream`),
`sparse_format` (the sparse weight format's tensor math), `graph_cache` (a traced
graph reused across models of one shape), `api` (`export_model`:
checks, atomic output, zeros counted back), `cli` (``slimpack export``).
May import: `prune`, `quant`. Running an artifact (engines, ``verify``) is `runtime_bench`'s. The formats and the sparse
checkpoint kinds are pyproject.toml's entry points (`prune.registry`): every command reads a sparse checkpoint.
"""
