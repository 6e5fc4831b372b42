"""The engine interface: the one way to run an exported artifact (used by ``slimpack verify`` and the bench).

An `Artifact` is a directory written by ``slimpack export`` (its ``export.json`` names the format). An
engine loads it in the artifact's own runtime and answers two questions:

- ``logits(input_ids: int64 [B, T]) -> float32 [B, T, V]``: a full forward pass with no past (perplexity).
- ``generate(input_ids: int64 [1, T], max_new_tokens) -> int64 [N]``: greedy decoding with the KV cache,
  returning only the new tokens (token-by-token parity, and the decode benchmark).

Engines are registered by name in `ENGINES`; an artifact's manifest names the engine that runs it
(``"engine"``), so nothing branches on format names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from prune.errors import SlimpackError
from prune.registry import Registry

EXPORT_MANIFEST = "export.json"


@dataclass(frozen=True)
class Artifact:
    """An exported model directory and its manifest (``export.json``)."""

    path: Path
    format: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path) -> Artifact:
        path = Path(path)
        manifest_path = path / EXPORT_MANIFEST
        if not manifest_path.is_file():
            raise SlimpackError(
                f"{str(path)!r} is not an exported artifact (no {EXPORT_MANIFEST}); make one with `slimpack export`"
            )
        manifest = json.loads(manifest_path.read_text())
        return cls(path=path, format=str(manifest["format"]), manifest=manifest)

    @property
    def engine(self) -> str:
        return str(self.manifest["engine"])


class Stepper(Protocol):
    """An engine that exposes its KV-cache loop (prefill once, then one token per step)."""

    def prefill(self, input_ids: np.ndarray) -> tuple[np.ndarray, Any]: ...

    def step(self, token: np.ndarray, past: Any) -> tuple[np.ndarray, Any]: ...


def greedy_decode(engine: Stepper, input_ids: np.ndarray, max_new_tokens: int) -> np.ndarray:
    """Greedy decoding with the KV cache: plain argmax, no logits processors, no stop token; new tokens only."""
    logits, past = engine.prefill(input_ids)
    tokens: list[int] = []
    while True:
        tokens.append(int(logits[0].argmax()))
        if len(tokens) >= max_new_tokens:
            return np.array(tokens, np.int64)
        logits, past = engine.step(np.array([[tokens[-1]]], np.int64), past)


class Engine(Protocol):
    """Runs one artifact in its own runtime."""

    name: str

    def load(self, artifact: Artifact) -> None: ...

    def logits(self, input_ids: np.ndarray) -> np.ndarray: ...

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> np.ndarray: ...

    def close(self) -> None: ...


ENGINES: Registry[type] = Registry("engine")
