"""The Cholesky of the damped Hessian: retried with growing damping, then one clear error."""

from __future__ import annotations

import logging

import pytest
import torch

from prune.errors import SlimpackError
from prune.obs import DAMPING_TRIES, inverse_hessian_factor


def test_a_positive_definite_hessian_is_damped_once_exactly() -> None:
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    H = 2 * x.T @ x / 64
    damped = H.clone()
    damped[range(8), range(8)] += 0.01 * torch.mean(torch.diag(H))
    U = inverse_hessian_factor(H.clone(), 0.01)
    assert torch.equal(U, torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped)), upper=True))


def test_an_indefinite_hessian_is_retried_with_more_damping(caplog: pytest.LogCaptureFixture) -> None:
    H = torch.diag(torch.tensor([1.0, 1.0, -0.05]))  # mean diag 0.65: 1 % damping is too little, 10 % enough
    with caplog.at_level(logging.WARNING, logger="prune.obs"):
        U = inverse_hessian_factor(H, 0.01)
    assert "factored with damping 0.1 (asked: 0.01)" in caplog.text
    damped = torch.diag(torch.tensor([1.065, 1.065, 0.015]))  # + 10 % of the mean diagonal
    assert torch.isfinite(U).all() and torch.allclose(U.T @ U, torch.linalg.inv(damped))


def test_a_hessian_no_damping_can_fix_is_one_clear_error() -> None:
    H = -torch.eye(4)  # mean diag < 0: damping only makes it worse
    with pytest.raises(SlimpackError, match=rf"not positive definite even with damping 10 \({DAMPING_TRIES} tries"):
        inverse_hessian_factor(H, 0.01)


def test_an_inverse_that_is_not_positive_definite_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.linalg.cholesky

    def fail_upper(A: torch.Tensor, *, upper: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
        if upper:
            raise torch.linalg.LinAlgError("not positive definite")
        return real(A)

    monkeypatch.setattr(torch.linalg, "cholesky", fail_upper)
    with pytest.raises(SlimpackError, match=r"Hessian \[3×3\]: its inverse is not positive definite with damping 0.01"):
        inverse_hessian_factor(torch.eye(3), 0.01)
