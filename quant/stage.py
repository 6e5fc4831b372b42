"""The quantize stage (`Quantize`, run by `prune.stage.run_stage` for `quant.api.quantize`): GPTQ / RTN walked block
by block, optionally with a joint pruner, written as a `GPTQOutput` (`prune.store.Output`): from a streamed store each
quantized block as it is finished (`quant.checkpoint.GPTQEncoder`), so a 7B model needs one block's memory; from a
resident one the checkpoint saved whole (`quant.checkpoint.save_gptq`). ``--bits`` goes `quant.spec.QuantizeSpec`
→ the layer method (`quant.methods`) → the OBS sweep (`prune.obs`) → its grid (`quant.grid`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from prune.allocation import ALLOCATORS
from prune.data import Calibration
from prune.errors import SlimpackError
from prune.manifest import Manifest, MethodRecord, PrunedZeros, QuantizationRecord
from prune.masks import Pattern
from prune.models import LoadedModel, save_model
from prune.prepare import check_layers, prepare_walk
from prune.sparsity import SparsityRecord
from prune.spec import Job, PruneSpec, Resolved, StreamSpec
from prune.stage import Outcome
from prune.store import ModelStore
from prune.walker import walk
from quant.checkpoint import GPTQEncoder, quantization_config, save_gptq, write_gptq_config
from quant.methods import QUANT_METHODS, ZeroCount
from quant.spec import DEQUANTIZED, QuantizeSpec, QuantSpec, check_group_size

log = logging.getLogger(__name__)


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
        self.grid: QuantSpec = quant  # a QuantizeSpec is its grid: bits, group size, symmetry, act-order, groups
        self.method = QUANT_METHODS.build(quant.method, {"spec": self.grid, "pruner": pruner, **quant.options})

    @property
    def linear_bytes(self) -> float | None:
        """A GPTQ checkpoint's bytes per linear weight: the codes, and a float16 scale and a zero per group."""
        if self.quant.checkpoint_format == DEQUANTIZED:
            return None
        group = self.quant.group_size if self.quant.group_size > 0 else 4096
        return self.quant.bits / 8 + (2 + self.quant.bits / 8) / group

    def check_model(self, loaded: LoadedModel) -> None:
        check_layers(loaded, partial(check_group_size, self.grid.group_size), self.resolved.pattern.check_features)

    def apply(self, store: ModelStore, calibration: Calibration, job: Job, out: Path) -> Outcome:
        r, q = self.resolved, self.quant
        loaded = store.loaded
        assert loaded.adapter is not None
        source = Manifest.read_if_any(Path(job.model)) if Path(job.model).is_dir() else None
        qconfig = quantization_config(self.grid, self.method.percdamp, self.method.name, q.checkpoint_format,
                                      r.spec.true_sequential)  # fmt: skip
        output = GPTQOutput(q.checkpoint_format, qconfig)
        blocks = store.blocks(self.method.needs, self.method.modifies_weights, job.rank_data(), output, out)
        prep = prepare_walk(store, r, self.method, calibration, blocks.keep, job.device, job.progress, job.ranks)
        result = walk(loaded.model, loaded.adapter, self.method, prep.allocation.plan, r.pattern, prep.batches,
                      prep.grads, job.device, r.spec.true_sequential, job.progress, store=blocks, ranks=job.ranks)  # fmt: skip
        counts: list[ZeroCount] = list(result.outputs.values())
        pruned = sum(c.pruned_count for c in counts)
        kept = sum(c.kept for c in counts)
        log.info("%d/%d pruned zeros kept", kept, pruned)
        return Outcome(
            stage="quantize",
            method=MethodRecord(self.method.name, self.method.options()),
            pattern=str(r.pattern),
            target_sparsity=prep.sparsity,
            sparsity=SparsityRecord.of(blocks.sparsity),
            save=partial(store.save, output, result.outputs),
            allocation=prep.allocation if self.joint else None,
            allocation_record=prep.record if self.joint else None,
            true_sequential=r.spec.true_sequential,
            compress_seconds=sum(rec.seconds for rec in result.records),
            quantization=QuantizationRecord(
                **self.grid.to_dict(),
                checkpoint_format=q.checkpoint_format,
                source=source.brief() if source is not None else None,
                sparsity_before=SparsityRecord.of(blocks.before).overall,
                pruned_zeros=PrunedZeros(pruned, kept, kept / pruned if pruned else 1.0),
            ),
        )


@dataclass(frozen=True)
class GPTQOutput:
    """A `prune.store.Output`: the GPTQ checkpoint (`quant.checkpoint`) — or, for `quant.spec.DEQUANTIZED`, a
    plain model directory holding the grid values (fp32, unless a streamed run's ``--dtype`` says otherwise)."""

    fmt: str
    qconfig: dict[str, Any]

    @property
    def encoder(self) -> GPTQEncoder:
        return GPTQEncoder(self.fmt)

    def streamed_dtype(self, stream: StreamSpec) -> torch.dtype | None:
        if self.fmt == DEQUANTIZED:
            return stream.torch_dtype() or torch.float32  # the grid values, exactly
        return torch.float16  # the format's

    def save(self, loaded: LoadedModel, outputs: dict[str, Any], directory: Path) -> None:
        if self.fmt == DEQUANTIZED:
            save_model(loaded.model, loaded.tokenizer, directory)
        else:
            save_gptq(loaded.model, {n: ql.weight for n, ql in outputs.items()}, loaded.tokenizer, directory,
                      self.qconfig)  # fmt: skip

    def write_config(self, config: Any, directory: Path) -> None:
        if self.fmt == DEQUANTIZED:
            config.save_pretrained(directory)
        else:
            write_gptq_config(config, directory, self.qconfig)
