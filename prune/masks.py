"""The one mask selector: importance scores → boolean prune mask.

Patterns (the papers' conventions):
- unstructured, ``row`` scope ("per-output", Wanda §3): each output row of ``W: [out, in]`` loses exactly
  ``round(s · in)`` weights, the lowest-scoring ones of that row;
- unstructured, ``layer`` scope (magnitude / SparseGPT style): the whole matrix loses ``round(s · out · in)``
  lowest-scoring weights;
- N:M: in every group of M consecutive input weights of a row, exactly N weights (the lowest-scoring) are
  zeroed — so 2:4 and 4:8 are 50 % sparse. This is the convention of the SparseGPT and Wanda code
  (``prunen``/``prune_n`` count the pruned weights of a group). The selector takes N from the module's sparsity,
  ``N = round(s · M)``, so one rule serves the uniform pattern (``s = N/M``) and mixed N:M (each module its own
  ``s``, a multiple of ``1/M``); the pattern gives M.

Shapes: ``score: [out, in]`` (any float dtype) → ``mask: [out, in]`` bool, ``True`` = pruned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from prune.errors import SlimpackError

SCOPES = ("row", "layer")


@dataclass(frozen=True)
class Pattern:
    """A sparsity pattern: unstructured (with a comparison scope) or N:M (N zeros in every M)."""

    n: int = 0
    m: int = 0
    scope: str = "row"

    @property
    def is_nm(self) -> bool:
        return self.m > 0

    @property
    def fixed_sparsity(self) -> float | None:
        """The sparsity an N:M pattern implies (N/M); ``None`` for unstructured."""
        return self.n / self.m if self.is_nm else None

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.is_nm else f"unstructured/{self.scope}"

    @classmethod
    def parse(cls, text: str, scope: str = "row") -> Pattern:
        """Parse ``"unstructured"`` or ``"N:M"``; raises `SlimpackError` naming the bad value."""
        if scope not in SCOPES:
            raise SlimpackError(f"unknown scope {scope!r}; choose one of: {', '.join(SCOPES)}")
        if text == "unstructured":
            return cls(scope=scope)
        match = re.fullmatch(r"(\d+):(\d+)", text.strip())
        if not match:
            raise SlimpackError(f"bad pattern {text!r}; use 'unstructured' or N:M such as 2:4 or 4:8")
        n, m = int(match.group(1)), int(match.group(2))
        if not 0 < n < m:
            raise SlimpackError(f"bad N:M pattern {text!r}: need 0 < N < M (N zeros in every M weights), e.g. 2:4")
        return cls(n=n, m=m, scope="row")

    def check_features(self, in_features: int, name: str) -> None:
        """N:M groups run along the input features, so M must divide them."""
        if self.is_nm and in_features % self.m:
            raise SlimpackError(
                f"pattern {self} does not fit {name}: M={self.m} does not divide its {in_features} input "
                f"features; choose an M that divides {in_features}"
            )


def prune_count(sparsity: float, n: int) -> int:
    """How many of ``n`` weights a sparsity prunes — the one rounding rule of every mask."""
    return round(sparsity * n)


def _lowest(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (along the last dim) of the k lowest scores."""
    return torch.topk(score, k, dim=-1, largest=False, sorted=False).indices


def select_prune_mask(score: torch.Tensor, sparsity: float, pattern: Pattern) -> torch.Tensor:
    """Return a bool mask (True = prune) of the same shape as ``score: [out, in]``: ``sparsity`` of each row
    (``row`` scope) or of the matrix (``layer``); for N:M, ``round(sparsity · M)`` of each group of M."""
    if score.dim() != 2:
        raise ValueError(f"score must be 2-D [out, in], got shape {tuple(score.shape)}")
    out_f, in_f = score.shape
    mask = torch.zeros_like(score, dtype=torch.bool)
    if pattern.is_nm:
        if in_f % pattern.m:
            raise ValueError(f"M={pattern.m} does not divide {in_f} columns")
        groups = score.reshape(out_f, in_f // pattern.m, pattern.m)
        gmask = mask.view(out_f, in_f // pattern.m, pattern.m)
        n = round(sparsity * pattern.m)
        if n:
            gmask.scatter_(2, _lowest(groups, n), True)
        return mask
    if pattern.scope == "row":
        k = prune_count(sparsity, in_f)
        if k:
            mask.scatter_(1, _lowest(score, k), True)
        return mask
    k = prune_count(sparsity, score.numel())
    if k:
        mask.view(-1)[_lowest(score.reshape(-1), k)] = True
    return mask
