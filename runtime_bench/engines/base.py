"""The engine interface: the one way to run an exported artifact (used by ``slimpack verify`` and the bench).

An `export.artifact.Artifact` is a directory written by ``slimpack export`` (its ``export.json`` names the
format and the engine). An engine loads it in the artifact's own runtime and answers two questions:

- ``logits(input_ids: int64 [B, T]) -> float32 [B, T, V]``: a full forward pass with no past (perplexity).
- ``generate(input_ids: int64 [1, T], max_new_tokens) -> int64 [N]``: greedy decoding with the KV cache,
  returning only the new tokens (token-by-token parity, and the decode benchmark).

Engines are registered by name in `ENGINES`; an artifact's manifest names the engine that runs it
(``"engine"``), so nothing branches on format names. Every engine derives from `EngineBase`, which declares
its limits with their defaults: ``max_batch`` (``batch_note`` says why), ``unavailable()`` (its runtime is
not installed here) and ``timing_unavailable()`` (it runs, but its timings would mean nothing here, e.g. 2:4
kernels without CUDA). An engine that times itself out of process is a `SelfTimed`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from export.artifact import Artifact
from prune.registry import Registry


@runtime_checkable
class Stepper(Protocol):
    """An engine that exposes its KV-cache loop (prefill once, then one token per step)."""

    def prefill(self, input_ids: np.ndarray) -> tuple[np.ndarray, Any]: ...

    def step(self, token: np.ndarray, past: Any) -> tuple[np.ndarray, Any]: ...


def greedy_decode(
    engine: Stepper, input_ids: np.ndarray, max_new_tokens: int, done: Callable[[list[int]], bool] | None = None
) -> np.ndarray:
    """Greedy decoding with the KV cache: plain argmax, no logits processors; new tokens only. ``done``: stop once
    it is true of the tokens so far (none: ``max_new_tokens`` of them)."""
    logits, past = engine.prefill(input_ids)
    tokens: list[int] = []
    while True:
        tokens.append(int(logits[0].argmax()))
        if len(tokens) >= max_new_tokens or (done is not None and done(tokens)):
            return np.array(tokens, np.int64)
        logits, past = engine.step(np.array([[tokens[-1]]], np.int64), past)


class Engine(Protocol):
    """Runs one artifact in its own runtime."""

    name: str
    max_batch: int | None
    batch_note: str

    @classmethod
    def unavailable(cls) -> str | None: ...

    @classmethod
    def timing_unavailable(cls) -> str | None: ...

    def load(self, artifact: Artifact) -> None: ...

    def logits(self, input_ids: np.ndarray) -> np.ndarray: ...

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> np.ndarray: ...

    def context_limit(self) -> int | None: ...

    def close(self) -> None: ...


ENGINES: Registry[type] = Registry("engine", "slimpack.engines")  # pyproject.toml lists them


class EngineBase:
    """The declared limits every engine has, with their defaults (override what differs)."""

    name = "engine"
    max_batch: int | None = None  # most sequences one decode step takes (None: any)
    batch_note = ""

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this engine's runtime cannot run on this machine (not installed), or None."""
        return None

    @classmethod
    def timing_unavailable(cls) -> str | None:
        """Why this engine's timings would mean nothing here, or None (by default: when it cannot run)."""
        return cls.unavailable()

    def context_limit(self) -> int | None:
        """The most tokens one sequence may hold in this loaded artifact, where it is less than any model's
        (a compiled KV cache); None: the model's own window."""
        return None

    def batch_limit(self, batch: int) -> str | None:
        """Why this engine cannot decode ``batch`` sequences at once (None: it can)."""
        if self.max_batch is not None and batch > self.max_batch:
            return f"{self.name} runs batch ≤ {self.max_batch} ({self.batch_note or 'static shapes'})"
        return None


@runtime_checkable
class SelfTimed(Protocol):
    """An engine that times its own generation (it runs out of process, where our clock would add IPC)."""

    def time_generation(self, input_ids: np.ndarray, tokens: int) -> tuple[float, list[float]]:
        """Seconds of the prefill and of each of ``tokens`` decode steps."""
        ...


__all__ = ["ENGINES", "Artifact", "Engine", "EngineBase", "SelfTimed", "Stepper", "greedy_decode"]
