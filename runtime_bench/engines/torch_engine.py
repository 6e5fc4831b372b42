"""Torch engines: the in-framework model (``torch``: HF directories and GPTQ checkpoints, dequantized) and
the 2:4 semi-structured checkpoint (``torch-semi24``: sparse kernels on CUDA, exact dense weights on CPU).

Also the reference side of ``slimpack verify`` (`TorchEngine.from_model`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from export.semi24 import load_semi24
from prune.models import load_model
from prune.store import ResidentForward
from runtime_bench.engines.base import Artifact, EngineBase, greedy_decode


class TorchEngine(EngineBase):
    """Eager PyTorch on a loaded model; ``generate`` is transformers' greedy decoding with its KV cache."""

    name = "torch"

    def __init__(self, threads: int | None = None, device: str = "cpu") -> None:
        self.threads = threads
        self.device = device
        self.model: nn.Module | None = None

    @classmethod
    def from_model(cls, model: nn.Module, device: str = "cpu") -> TorchEngine:
        engine = cls(device=device)
        engine.model = model
        return engine

    def load(self, artifact: Artifact) -> None:

        self.model = load_model(artifact.path, device=self.device).model

    def _threads(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    def _forward(self) -> ResidentForward:
        assert self.model is not None, "load() first"
        return ResidentForward(self.model, None, self.device)

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        self._threads()
        return self._forward().logits(input_ids)

    def prefill(self, input_ids: np.ndarray) -> tuple[np.ndarray, Any]:
        """Last-position logits ``[B, V]`` and the KV cache after the prompt."""
        self._threads()
        return self._forward().prefill(input_ids)

    def step(self, token: np.ndarray, past: Any) -> tuple[np.ndarray, Any]:
        """One decode step of ``token: [B, 1]`` with the cache: its logits ``[B, V]`` and the grown cache."""
        return self._forward().step(token, past)

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> np.ndarray:
        return greedy_decode(self, input_ids, max_new_tokens)

    def close(self) -> None:
        self.model = None


class Semi24Engine(TorchEngine):
    """A semi24 checkpoint: ``SparseSemiStructuredTensor`` weights on CUDA; on the CPU its exact dense
    weights in fp32 arithmetic (torch has no CPU 2:4 kernel)."""

    name = "torch-semi24"

    def __init__(self, threads: int | None = None, device: str | None = None) -> None:
        super().__init__(threads, device or ("cuda" if torch.cuda.is_available() else "cpu"))

    @classmethod
    def timing_unavailable(cls) -> str | None:
        """The 2:4 kernels are CUDA-only: on the CPU this engine runs (verify) but would time dense weights."""
        return None if torch.cuda.is_available() else "torch-semi24 needs CUDA (2:4 sparse kernels); no GPU here"

    def load(self, artifact: Artifact) -> None:

        self.model = load_semi24(
            artifact.path, self.device, dtype=None if self.device.startswith("cuda") else torch.float32
        )
