"""Measured sparsity of a model's prunable linears: one weight's zeros, and their sum over modules (the
manifests' ``sparsity`` section; `prune.report` makes tables of it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def weight_sparsity(w: torch.Tensor) -> dict[str, Any]:
    """``{shape, zeros, numel, sparsity}`` of one weight, measured."""
    z, n = int((w == 0).sum().item()), w.numel()
    return {"shape": list(w.shape), "zeros": z, "numel": n, "sparsity": z / n}


def sparsity_summary(modules: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"overall": s, "zeros": z, "numel": n, "modules": {name: {shape, zeros, numel, sparsity}}}``."""
    zeros = sum(m["zeros"] for m in modules.values())
    numel = sum(m["numel"] for m in modules.values())
    return {"overall": zeros / numel if numel else 0.0, "zeros": zeros, "numel": numel, "modules": dict(modules)}
