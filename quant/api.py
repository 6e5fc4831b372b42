"""The quantize stage behind ``slimpack quantize``: a (pruned) model in, a GPTQ checkpoint + manifest out, through
the core's stage template (`prune.stage.run_stage`).

Sequential mode: the source's exact zeros are its prune mask (prune first with ``slimpack prune``).
Joint mode (``joint``: a `PruneSpec`): the pruner and the quantizer share one walk — see `quant.methods`.
Streamed (``job.stream``): the source is read one block at a time and each quantized block is written as it is
finished (`quant.checkpoint.GPTQEncoder`), so a 7B model needs one block's memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch

from prune.allocation import ALLOCATORS
from prune.data import Calibration
from prune.errors import SlimpackError
from prune.manifest import Manifest, MethodRecord
from prune.masks import Pattern
from prune.models import LoadedModel, checkpoint_kind, resolve_model_path, save_model
from prune.report import model_sparsity, sparsity_summary
from prune.spec import Job, PruneSpec, Resolved, StreamSpec
from prune.stage import Outcome, check_layers, prepare_walk, run_stage
from prune.store import settle
from prune.stream import StreamedBlocks, finish, output_writer, plan_streamed_walk, stream_refusal
from prune.walker import in_memory, walk
from quant.checkpoint import GPTQEncoder, quantization_config, save_gptq, write_gptq_config
from quant.methods import QUANT_METHODS, QuantizedLayer
from quant.spec import DEQUANTIZED, QuantizeSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizeConfig:
    job: Job
    quant: QuantizeSpec = field(default_factory=QuantizeSpec)
    joint: PruneSpec | None = None  # prune in the same walk


class Quantize:
    """The quantize stage: GPTQ / RTN walked block by block, optionally with a joint pruner."""

    def __init__(self, quant: QuantizeSpec, joint: PruneSpec | None) -> None:
        if joint is not None and joint.structured is not None:
            raise SlimpackError("joint quantization prunes weights, not heads; prune --structured first, then quantize")
        if joint is not None and quant.act_order:
            raise SlimpackError(
                "--act-order cannot be combined with --joint-with: the joint sweep visits columns in order"
            )
        self.quant = quant
        if joint is not None:
            self.resolved = joint.resolve()
        else:  # nothing to prune: a uniform plan of 0 over a plain pattern
            uniform = ALLOCATORS.build("uniform", {})
            self.resolved = Resolved(PruneSpec(sparsity=0.0), None, Pattern(), 0.0, uniform, None)
        self.joint = joint
        pruner = self.resolved.method
        self.method = QUANT_METHODS.build(quant.method, {"spec": quant.grid, "pruner": pruner, **quant.options})

    @property
    def linear_bytes(self) -> float | None:
        """A GPTQ checkpoint's bytes per linear weight: the codes, and a float16 scale and a zero per group."""
        if self.quant.checkpoint_format == DEQUANTIZED:
            return None
        group = self.quant.group_size if self.quant.group_size > 0 else 4096
        return self.quant.bits / 8 + (2 + self.quant.bits / 8) / group

    def check_model(self, loaded: LoadedModel) -> None:
        check_layers(loaded, self.quant.grid.check_layer, self.resolved.pattern.check_features)

    def apply(self, loaded: LoadedModel, calibration: Calibration, job: Job, out: Path) -> Outcome:
        r, q = self.resolved, self.quant
        model, adapter = loaded.model, loaded.adapter
        assert adapter is not None
        source = Manifest.read_if_any(Path(job.model)) if Path(job.model).is_dir() else None
        store = self.streamed_store(loaded, job, out) if job.stream is not None else None
        if store is None:
            linears = adapter.named_linears(model)
            sparsity_before = model_sparsity(linears)["overall"]
        prep = prepare_walk(loaded, r, self.method, calibration, job.device, job.progress,
                            store.keep if store is not None else in_memory)  # fmt: skip
        result = walk(model, adapter, self.method, prep.allocation.plan, r.pattern, prep.batches, prep.grads,
                      job.device, r.spec.true_sequential, job.progress, store=store)  # fmt: skip
        qconfig = quantization_config(q.grid, self.method.percdamp, self.method.name, q.checkpoint_format,
                                      r.spec.true_sequential)  # fmt: skip
        if store is None:
            layers: dict[str, QuantizedLayer] = result.outputs
            pruned = sum(int(ql.pruned.sum()) for ql in layers.values())
            kept = sum(int((lin.weight.data[layers[n].pruned] == 0).sum()) for n, lin in linears.items())
            sparsity = model_sparsity(linears)

            def save(directory: Path) -> None:
                if q.checkpoint_format == DEQUANTIZED:  # a plain fp32 model holding the grid values
                    save_model(model, loaded.tokenizer, directory)
                else:
                    save_gptq(model, {n: ql.weight for n, ql in layers.items()}, loaded.tokenizer, directory, qconfig)

        else:  # the walk wrote every block; ``result.outputs`` holds each linear's `PackedCount`
            sparsity_before = sparsity_summary(store.before)["overall"]
            sparsity = sparsity_summary(store.sparsity)
            pruned = sum(c.pruned for c in result.outputs.values())
            kept = sum(c.kept for c in result.outputs.values())

            def save(directory: Path) -> None:
                write = None if q.checkpoint_format == DEQUANTIZED else partial(write_gptq_config, qconfig=qconfig)
                finish(loaded, store.writer, directory, write)

        log.info("%d/%d pruned zeros kept", kept, pruned)
        return Outcome(
            stage="quantize",
            method=MethodRecord(self.method.name, self.method.options()),
            pattern=str(r.pattern),
            target_sparsity=prep.target,
            sparsity=sparsity,
            save=save,
            allocation=prep.allocation if self.joint else None,
            allocation_record=prep.record if self.joint else None,
            true_sequential=r.spec.true_sequential,
            compress_seconds=sum(rec.seconds for rec in result.records),
            quantization={
                **q.grid.to_dict(),
                "checkpoint_format": q.checkpoint_format,
                "source": source.brief() if source is not None else None,
                "sparsity_before": sparsity_before,
                "pruned_zeros": {"pruned": pruned, "kept": kept, "fraction_kept": kept / pruned if pruned else 1.0},
            },
        )

    def streamed_store(self, loaded: LoadedModel, job: Job, out: Path) -> StreamedBlocks:
        """The walk's blocks read from the source's shards and written, quantized, into ``out`` (``--stream``)."""
        stream, q = job.stream, self.quant
        assert stream is not None and loaded.lazy is not None and loaded.adapter is not None
        if q.checkpoint_format == DEQUANTIZED:
            dtype = stream.torch_dtype() or torch.float32  # the grid values, exactly, unless --dtype says otherwise
        else:
            dtype = torch.float16  # the format's
        keep = plan_streamed_walk(loaded, self.method.needs, job.data, stream, self.method.modifies_weights, job.device)
        writer = output_writer(out, loaded.lazy, dtype, int(stream.shard_mib * 2**20))
        return StreamedBlocks(loaded.lazy, loaded.adapter, writer, GPTQEncoder(q.checkpoint_format), keep)


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


def quantize(config: QuantizeConfig) -> Manifest:
    """Quantize ``config.job.model`` (optionally pruning it in the same walk) into a GPTQ checkpoint."""
    stage = Quantize(config.quant, config.joint)  # every setting checked before the model is read
    kind = checkpoint_kind(resolve_model_path(config.job.model))
    if kind.quantized:
        raise SlimpackError(
            f"{config.job.model!r} is already quantized ({kind.name}); quantize the unquantized (pruned) model instead"
        )
    return run_stage(settle(config.job, quantize_stream_refusal(stage, config.job.stream)), stage)
