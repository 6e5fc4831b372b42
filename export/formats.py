"""Every export format, registered into `export.base.EXPORTERS` by importing its module: what `export.api` and
`export.artifact.Artifact` import to know the formats (neither imports the other for it)."""

from export import deepsparse, gptq, onnx, semi24, sparse  # noqa: F401  (each registers its format)
