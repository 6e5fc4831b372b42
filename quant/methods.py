"""Quantization methods as layer methods of the core's walker: GPTQ (Frantar et al., ICLR 2023,
Algorithm 1, run by the shared OBS sweep `prune.obs.obs_sweep`) and round-to-nearest (RTN, the baseline).

Mask-aware: the prune mask of a layer is its exact zeros (an already pruned model) — plus, in joint mode,
the mask of the pruning method walked together with the quantizer:
- a `prune.methods.JointPruner` (SparseGPT, PGZ) prunes and quantizes in its own single pass;
- a `prune.methods.MaskPruner` (a metric: Wanda, magnitude, Pruner-Zero) gives its mask first, then GPTQ's sweep
  quantizes the kept weights and compensates both the pruning and the rounding error.
A masked weight is exactly 0 on every grid (`quant.grid`), and the sweep sets it when its column is
reached, so error propagation never revives it.

``compress`` returns a `QuantizedWeight` (codes ``[out, in]``, grid ``[out, G]``, ``g_idx [in]``) plus the
layer's prune mask; the walker collects them for the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from prune.errors import SlimpackError
from prune.masks import Pattern
from prune.methods import JointPruner, LayerMethod, MaskPruner
from prune.obs import obs_sweep, round_to_grid
from prune.registry import Registry
from prune.stats import Stats
from quant.grid import GroupQuantizer, QuantizedWeight, group_count
from quant.spec import QuantSpec

COUNT_ROWS = 256  # rows of a weight counted at once (`QuantizedLayer.of`)


@dataclass
class QuantizedLayer:
    """What a quantization method returns for one linear: its grid codes, the weights that must be zero, and
    how many of them are exactly zero in the quantized weight (``kept``: a `ZeroCount`, as a streamed
    store keeps it once the layer is written, `quant.checkpoint.PackedCount`)."""

    weight: QuantizedWeight
    pruned: torch.Tensor  # [out, in] bool: weights that must be (and are) exactly zero
    kept: int

    @classmethod
    def of(cls, weight: QuantizedWeight, pruned: torch.Tensor, quantized: torch.Tensor) -> QuantizedLayer:
        """``quantized``: the layer's weight after quantization (the grid values). Counted `COUNT_ROWS` rows at a
        time: the sweep's Hessian is still held here, and a boolean index (``quantized[pruned]``) would first list
        the pruned positions as int64 pairs (0.36 GiB for LLaMA-2-7B's ``down_proj`` at 50 %)."""
        kept = sum(
            int(torch.logical_and(quantized[i : i + COUNT_ROWS] == 0, pruned[i : i + COUNT_ROWS]).sum())
            for i in range(0, quantized.shape[0], COUNT_ROWS)
        )
        return cls(weight, pruned, kept)

    @property
    def pruned_count(self) -> int:
        return int(self.pruned.sum())


class ZeroCount(Protocol):
    """What a quantize walk keeps of each linear, whatever the store: its pruned weights and how many of them
    the quantized weight keeps exactly zero."""

    @property
    def pruned_count(self) -> int: ...

    @property
    def kept(self) -> int: ...


class _Quantizer:
    """Shared bookkeeping of GPTQ and RTN: the grid spec and an optional joint pruner."""

    name = "quantizer"
    default_scope = "layer"
    modifies_weights = True
    solver = False
    percdamp: float | None = None  # the Hessian damping recorded in the checkpoint (None: no Hessian, as RTN)

    def __init__(self, spec: QuantSpec, pruner: LayerMethod | None = None) -> None:
        self.spec = spec
        self.pruner = pruner
        self.needs: tuple[str, ...] = ()
        self.needs_gradients = pruner.needs_gradients if pruner is not None else False

    def _pruned(self, layer: nn.Linear, stats: Stats, sparsity: float, pattern: Pattern) -> torch.Tensor:
        """Exact zeros of the layer, plus the joint pruner's mask (metric pruners)."""
        mask = layer.weight.data == 0
        if self.pruner is not None:
            if not isinstance(self.pruner, MaskPruner):
                raise SlimpackError(f"method {self.pruner.name!r} cannot be joined with {self.name}")
            mask |= self.pruner.prune_mask(layer, stats, sparsity, pattern)
        return mask

    # `prune.methods.SendsOutput`: a `QuantizedLayer` as plain tensors, from an owner rank to the writing rank

    def output_tensors(self, output: QuantizedLayer) -> dict[str, torch.Tensor]:
        w = output.weight
        return {"codes": w.codes, "scales": w.scales, "zeros": w.zeros, "g_idx": w.g_idx,
                "pruned": output.pruned.to(torch.uint8), "kept": torch.tensor([output.kept], dtype=torch.int64)}  # fmt: skip

    def output_like(self, layer: nn.Linear) -> dict[str, torch.Tensor]:
        out, width = layer.weight.shape
        groups = group_count(self.spec, width)
        return {"codes": torch.empty(out, width, dtype=torch.uint8), "scales": torch.empty(out, groups),
                "zeros": torch.empty(out, groups, dtype=torch.int32), "g_idx": torch.empty(width, dtype=torch.int32),
                "pruned": torch.empty(out, width, dtype=torch.uint8), "kept": torch.empty(1, dtype=torch.int64)}  # fmt: skip

    def output_from(self, tensors: dict[str, torch.Tensor]) -> QuantizedLayer:
        t = tensors
        weight = QuantizedWeight(t["codes"], t["scales"], t["zeros"], t["g_idx"], self.spec)
        return QuantizedLayer(weight, t["pruned"].bool(), int(t["kept"].item()))

    def options(self) -> dict[str, Any]:
        joint = None if self.pruner is None else {"name": self.pruner.name, "options": self.pruner.options()}
        return {**self.spec.to_dict(), "joint_with": joint}


class GPTQ(_Quantizer):
    """GPTQ through the OBS sweep; in joint mode with the pruner's mask or the pruner's own sweep."""

    name = "gptq"
    solver = True  # an OBS sweep per linear
    def __init__(
        self, spec: QuantSpec, pruner: LayerMethod | None = None, blocksize: int = 128, percdamp: float = 0.01
    ) -> None:
        super().__init__(spec, pruner)
        if blocksize < 1 or percdamp < 0:
            raise SlimpackError(f"blocksize {blocksize} must be ≥ 1 and percdamp {percdamp} ≥ 0 (GPTQ: 128, 0.01)")
        self.blocksize = blocksize
        self.percdamp = percdamp
        extra = tuple(n for n in (pruner.needs if pruner is not None else ()) if n != "hessian")
        self.needs = ("hessian", *extra)

    def compress(self, layer: nn.Linear, stats: Stats, sparsity: float, pattern: Pattern) -> QuantizedLayer:
        W = layer.weight.data
        quantizer = GroupQuantizer(self.spec, *W.shape)
        if isinstance(self.pruner, JointPruner):
            zeros = W == 0
            Wq, mask = self.pruner.compress_joint(layer, stats, sparsity, pattern, quantizer)
            pruned = zeros | mask
        else:
            pruned = self._pruned(layer, stats, sparsity, pattern)
            Wq, _ = obs_sweep(
                W,
                stats["hessian"],
                fixed_mask=pruned,
                quantizer=quantizer,
                act_order=self.spec.act_order,
                blocksize=self.blocksize,
                percdamp=self.percdamp,
                consume_H=stats.owned,  # its last use: `_pruned` above only reads it
            )
        W.copy_(Wq.to(W.dtype))
        return QuantizedLayer.of(quantizer.result(), pruned, W)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "blocksize": self.blocksize, "percdamp": self.percdamp}


class RTN(_Quantizer):
    """Round-to-nearest on the same grid: no calibration, no error feedback."""

    name = "rtn"

    def __init__(self, spec: QuantSpec, pruner: LayerMethod | None = None) -> None:
        if spec.act_order or spec.static_groups:
            raise SlimpackError("--act-order / static groups order GPTQ's columns by its Hessian; RTN has none")
        if pruner is not None:
            raise SlimpackError("joint mode is one GPTQ pass; with RTN prune first (slimpack prune), then quantize")
        super().__init__(spec, pruner)

    def compress(self, layer: nn.Linear, stats: Stats, sparsity: float, pattern: Pattern) -> QuantizedLayer:
        W = layer.weight.data
        pruned = W == 0
        quantizer = GroupQuantizer(self.spec, *W.shape)
        Wq = round_to_grid(W.float(), quantizer)
        W.copy_(Wq.to(W.dtype))
        return QuantizedLayer.of(quantizer.result(), pruned, W)


QUANT_METHODS: Registry[type[_Quantizer]] = Registry("quantization method")
QUANT_METHODS.register("gptq")(GPTQ)
QUANT_METHODS.register("rtn")(RTN)
