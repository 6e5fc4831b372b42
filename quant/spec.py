"""What to quantize with, declared once for the CLI, the recipe and the sweep: `QuantizeSpec` is the grid
(`QuantSpec`: bits, group size, symmetry, act-order, static groups; its math is `quant.grid`) plus the method, its
options and the checkpoint format. Joint pruning is a `prune.spec.PruneSpec` beside it (`quant.api.QuantizeConfig`).
The settings are checked here when they are made, and against a model's layers (`check_group_size`) before any
work."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from prune.errors import SlimpackError

CHECKPOINT_BITS = (2, 3, 4, 8)  # what GPTQ runtimes read
ZERO_OFFSET = {"gptq": 1, "gptq_v2": 0}  # stored qzeros = zero − offset (`quant.pack`)
DEQUANTIZED = "dequantized"  # no packed checkpoint: any bit width, simulated (e.g. 5–7 bits)
CHECKPOINT_FORMATS = (*ZERO_OFFSET, DEQUANTIZED)
BITS_RANGE = range(2, 9)


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize: bits, group size (−1 = per row), symmetry, act-order, static groups."""

    bits: int = 4
    group_size: int = 128
    sym: bool = True
    act_order: bool = False
    static_groups: bool = False

    def __post_init__(self) -> None:
        if self.bits not in BITS_RANGE:
            raise SlimpackError(f"bits {self.bits} is outside 2–8; pass e.g. --bits 4")
        if self.group_size != -1 and self.group_size < 1:
            raise SlimpackError(f"group size {self.group_size} must be −1 (per row) or a positive size such as 64")

    def to_dict(self) -> dict[str, Any]:
        """The grid's own fields (a subclass's, e.g. `QuantizeSpec`'s method, left out)."""
        return {f.name: getattr(self, f.name) for f in fields(QuantSpec)}


def check_group_size(group_size: int, in_features: int, name: str) -> None:
    """Groups tile a layer's input dimension exactly; say which layer does not fit (before any work)."""
    if group_size != -1 and in_features % group_size:
        divisors = [d for d in range(2, in_features + 1) if in_features % d == 0]
        near = sorted(sorted(divisors, key=lambda d: abs(d - group_size))[:2])
        raise SlimpackError(
            f"group size {group_size} does not divide the {in_features} input features of {name}; "
            f"choose a divisor of {in_features} (e.g. {' or '.join(map(str, near))}) or -1 (one group per row)"
        )


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
