"""The ``onnx`` and ``onnx-int4`` export formats: in memory through `export.onnx_kv`'s graph (and
`export.onnx_int4`'s ``MatMulNBits`` swap), streamed through `export.onnx_stream`. The formats sit above the three
graph modules, so that none of those imports another's caller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from export.base import ZeroCounts
from export.graph_cache import GraphCache
from export.onnx_int4 import BITS, count_int4_zeros, replace_matmuls
from export.onnx_kv import ONNX_FILE, count_zeros, export_onnx_kv, onnx_kv_proto, save_onnx
from export.onnx_stream import export_streamed_int4, export_streamed_onnx
from prune.errors import SlimpackError
from prune.models import LoadedModel, checkpoint_kind
from quant.checkpoint import GPTQCodec, read_quantization_config


class OnnxExporter:
    """``--format onnx``: fp32 ONNX with KV cache for onnxruntime (and optimum's ``ORTModelForCausalLM``)."""

    engine = "onnxruntime"
    per_layer_shapes = True
    model_directory = False

    def __init__(self, opset: int | None = None) -> None:
        self.opset = opset

    def check_source(self, model_dir: Path) -> None:
        return None

    def export(
        self, loaded: LoadedModel, model_dir: Path, out: Path, cache: GraphCache | None = None
    ) -> dict[str, Any]:
        return export_onnx_kv(loaded.model, out, self.opset, cache)

    def export_streamed(self, loaded: LoadedModel, out: Path, progress: bool = True) -> dict[str, Any]:

        assert loaded.lazy is not None
        return export_streamed_onnx(loaded.lazy, out, self.opset, progress)

    def count_zeros(self, out: Path, details: dict[str, Any]) -> ZeroCounts:
        return count_zeros(out / details["file"], details["weights"])


class OnnxInt4Exporter:
    """``--format onnx-int4``: a 4-bit GPTQ checkpoint → ONNX with ``MatMulNBits`` for onnxruntime CPU."""

    engine = "onnxruntime"
    per_layer_shapes = True
    model_directory = False

    def __init__(self, accuracy_level: int = 0, opset: int | None = None) -> None:
        self.accuracy_level = accuracy_level
        self.opset = opset

    def check_source(self, model_dir: Path) -> None:

        qconfig = read_quantization_config(model_dir) if checkpoint_kind(model_dir).quantized else None
        if not qconfig or qconfig.get("quant_method") != "gptq":
            raise SlimpackError(
                f"onnx-int4 needs a GPTQ checkpoint and {str(model_dir)!r} is not quantized; "
                "run `slimpack quantize MODEL --bits 4 --out DIR` first and export DIR"
            )
        if int(qconfig["bits"]) != BITS:
            raise SlimpackError(
                f"onnx-int4 stores 4-bit weights and {str(model_dir)!r} has {qconfig['bits']} bits; quantize with --bits 4"
            )

    def export(
        self, loaded: LoadedModel, model_dir: Path, out: Path, cache: GraphCache | None = None
    ) -> dict[str, Any]:
        quantized = loaded.extras.get("quantized")
        if not quantized:
            raise SlimpackError(
                f"{str(model_dir)!r} loaded without quantized weights; onnx-int4 needs its GPTQ tensors"
            )
        proto, details = onnx_kv_proto(loaded.model, self.opset, cache)
        placed = replace_matmuls(proto, details["weights"], quantized, self.accuracy_level)
        save_onnx(proto, out / ONNX_FILE)
        fp32 = {m: n for m, n in details["weights"].items() if m not in placed}
        return {**details, "weights": fp32, "int4": placed, "accuracy_level": self.accuracy_level}

    def export_streamed(self, loaded: LoadedModel, out: Path, progress: bool = True) -> dict[str, Any]:

        lazy = loaded.lazy
        assert lazy is not None and isinstance(lazy.codec, GPTQCodec)  # `check_source`: a GPTQ checkpoint
        codec = lazy.codec
        return export_streamed_int4(lazy, codec.spec, codec.fmt, out, self.opset, self.accuracy_level, progress)

    def count_zeros(self, out: Path, details: dict[str, Any]) -> ZeroCounts:
        return count_int4_zeros(out / details["file"], details["int4"])
