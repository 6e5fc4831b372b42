"""What to quantize with, declared once for the CLI, the recipe and the sweep: `QuantizeSpec` is the grid
(`quant.grid.QuantSpec`: bits, group size, symmetry, act-order, static groups) plus the method, its options
and the checkpoint format. Joint pruning is a `prune.spec.PruneSpec` beside it (`quant.api.QuantizeConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prune.errors import SlimpackError
from quant.grid import QuantSpec
from quant.pack import CHECKPOINT_BITS, ZERO_OFFSET

DEQUANTIZED = "dequantized"  # no packed checkpoint: any bit width, simulated (e.g. 5–7 bits)
CHECKPOINT_FORMATS = (*ZERO_OFFSET, DEQUANTIZED)


@dataclass(frozen=True)
class QuantizeSpec(QuantSpec):
    method: str = "gptq"
    checkpoint_format: str = "gptq"
    options: dict[str, Any] = field(default_factory=dict)  # blocksize, percdamp (GPTQ)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.checkpoint_format not in CHECKPOINT_FORMATS:
            raise SlimpackError(
                f"unknown checkpoint format {self.checkpoint_format!r}; choose one of: {', '.join(CHECKPOINT_FORMATS)}"
            )
        if self.checkpoint_format != DEQUANTIZED and self.bits not in CHECKPOINT_BITS:
            raise SlimpackError(
                f"the GPTQ checkpoint format stores {CHECKPOINT_BITS} bits, not {self.bits}; use one of those, "
                f"or --checkpoint-format {DEQUANTIZED} to write the dequantized weights"
            )

    def describe(self) -> str:
        return f"{self.method} {self.bits}-bit g{self.group_size}" + (" act-order" if self.act_order else "")
