"""The quantize stage behind ``slimpack quantize``: a (pruned) model in, a GPTQ checkpoint + manifest out, through
the core's stage template (`prune.stage.run_stage`).

Sequential mode: the source's exact zeros are its prune mask (prune first with ``slimpack prune``).
Joint mode (``joint``: a `PruneSpec`): the pruner and the quantizer share one walk — see `quant.methods`.
The stage itself, and its output, are `quant.stage`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from prune.errors import SlimpackError
from prune.manifest import Manifest
from prune.models import checkpoint_kind, resolve_model_path
from prune.spec import Job, PruneSpec, StreamSpec
from prune.stage import run_stage
from prune.store import settle
from prune.stream import stream_refusal
from quant.spec import DEQUANTIZED, QuantizeSpec
from quant.stage import Quantize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizeConfig:
    job: Job
    quant: QuantizeSpec = field(default_factory=QuantizeSpec)
    joint: PruneSpec | None = None  # prune in the same walk


def recipe_stream(quant: QuantizeSpec, stream: StreamSpec) -> StreamSpec:
    """A streamed recipe's ``stream`` for its quantize stage: the recipe's one ``dtype`` names its plain model
    directories' (the prune stage's output); a GPTQ checkpoint stores float16 whatever it says."""
    return stream if quant.checkpoint_format == DEQUANTIZED else replace(stream, dtype=None)


def quantize_stream_refusal(stage: Quantize, stream: StreamSpec | None) -> str | None:
    """Why the streamed path cannot run this quantization (None: it can)."""
    refusal = stream_refusal(stage.resolved, stage.method)
    dtype = stream.dtype if stream is not None else None
    if refusal is None and stage.quant.checkpoint_format != DEQUANTIZED and dtype not in (None, "float16"):
        return f"a GPTQ checkpoint stores float16; drop --dtype {dtype}"
    return refusal


def quantize(config: QuantizeConfig) -> Manifest | None:
    """Quantize ``config.job.model`` (optionally pruning it in the same walk) into a GPTQ checkpoint."""
    stage = Quantize(config.quant, config.joint)  # every setting checked before the model is read
    kind = checkpoint_kind(resolve_model_path(config.job.model))
    if kind.quantized:
        raise SlimpackError(
            f"{config.job.model!r} is already quantized ({kind.name}); quantize the unquantized (pruned) model instead"
        )
    return run_stage(settle(config.job, quantize_stream_refusal(stage, config.job.stream)), stage)
