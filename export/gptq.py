"""``--format gptq``: the standard GPTQ checkpoint as an artifact (the files `quant.checkpoint` wrote).

The source must already be a GPTQ checkpoint (``slimpack quantize``); its files are copied unchanged, so
any GPTQ runtime loads the artifact. Its engine is slimpack's own loader (`quant.checkpoint.load_gptq`,
dequantized torch weights); GPTQModel's kernels are compared separately by `slimpack check gptqmodel`.
Zeros are counted from the packed integers: a weight is exactly 0 when its code equals its zero point.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from export.base import ZeroCounts
from export.graph_cache import GraphCache
from prune.errors import SlimpackError
from prune.manifest import MANIFEST
from prune.models import LoadedModel, checkpoint_kind
from quant.checkpoint import load_gptq


def gptq_zeros(directory: Path) -> ZeroCounts:
    """Exact zeros of every quantized linear of a GPTQ checkpoint, from its codes and zero points."""
    counts: ZeroCounts = {}
    for name, qw in load_gptq(directory).quantized.items():
        g = qw.g_idx.long()
        counts[name] = {"zeros": int((qw.codes.int() == qw.zeros[:, g]).sum()), "numel": qw.codes.numel()}
    return counts


class GptqExporter:
    engine = "torch"
    per_layer_shapes = True
    model_directory = True

    def check_source(self, model_dir: Path) -> None:
        if not checkpoint_kind(model_dir).quantized:
            raise SlimpackError(
                f"--format gptq needs a GPTQ checkpoint and {str(model_dir)!r} is not quantized; "
                "run `slimpack quantize MODEL --out DIR` first and export DIR"
            )

    def export(
        self, loaded: LoadedModel, model_dir: Path, out: Path, cache: GraphCache | None = None
    ) -> dict[str, Any]:
        files = [p for p in model_dir.iterdir() if p.is_file() and p.name != MANIFEST]
        for path in files:
            shutil.copy2(path, out / path.name)
        return {"files": sorted(p.name for p in files)}

    def count_zeros(self, out: Path, details: dict[str, Any]) -> ZeroCounts:
        return gptq_zeros(out)
