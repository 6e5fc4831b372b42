"""Measured sparsity of a model's prunable linears: one weight's zeros (`WeightSparsity`), and their sum over
modules (`SparsityRecord`, the manifests' ``sparsity`` section; `prune.report` makes tables of it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the records are read without torch (`prune.manifest`); only `WeightSparsity.of` sees tensors
    import torch


@dataclass(frozen=True)
class WeightSparsity:
    """One weight's zeros, measured: JSON ``{shape, zeros, numel, sparsity}``."""

    shape: list[int]
    zeros: int
    numel: int
    sparsity: float

    @classmethod
    def of(cls, w: torch.Tensor) -> WeightSparsity:
        z, n = int((w == 0).sum().item()), w.numel()
        return cls(list(w.shape), z, n, z / n)


@dataclass
class SparsityRecord:
    """A model's sparsity. Unstructured (zeros summed over modules): JSON ``{overall, zeros, numel, modules:
    {name: WeightSparsity}}``; structured (`structured`): ``{overall, parameters_removed}``, the fraction of the
    blocks' parameters removed. Fields that do not apply are None and left out of the JSON."""

    overall: float
    zeros: int | None = None
    numel: int | None = None
    modules: dict[str, WeightSparsity] | None = None
    parameters_removed: int | None = None

    @classmethod
    def of(cls, modules: Mapping[str, WeightSparsity]) -> SparsityRecord:
        zeros = sum(m.zeros for m in modules.values())
        numel = sum(m.numel for m in modules.values())
        return cls(zeros / numel if numel else 0.0, zeros, numel, dict(modules))

    @classmethod
    def structured(cls, removed: float, parameters_removed: int) -> SparsityRecord:
        return cls(removed, parameters_removed=parameters_removed)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SparsityRecord:
        modules = data.get("modules")
        return cls(
            overall=float(data["overall"]), zeros=data.get("zeros"), numel=data.get("numel"),
            modules=None if modules is None else {name: WeightSparsity(**m) for name, m in modules.items()},
            parameters_removed=data.get("parameters_removed"),
        )  # fmt: skip
