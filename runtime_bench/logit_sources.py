"""Where zero-shot log-likelihoods come from: a `LogitSource` gives the next-token logits of token sequences (and
greedy continuation). Shared by `runtime_bench.zeroshot` (which opens a source) and `runtime_bench.lm_eval_model`
(lm-eval's model over a source), so neither imports the other.

- `EngineSource`: any slimpack engine (`runtime_bench.engines`), one forward per sequence (or right-padded
  batches: a causal model's logits before the padding do not see it).
- `ForwardSource`: a model directory through its store's `prune.store.Forward` — resident (one whole-model
  forward per batch) or streamed (`prune.stream.StreamedForward`: every request's sequence through block 0,
  then block 1, …, one block in memory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from prune.errors import SlimpackError
from runtime_bench.engines.base import Stepper, greedy_decode

Done = Callable[[list[int]], bool]  # a generation's stop test on its tokens so far


class LogitSource(Protocol):
    """Next-token logits of token sequences, and greedy continuation."""

    def logits_of(self, sequences: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
        """The logits ``[len(s), vocab]`` of each int64 sequence ``s``, in order."""
        ...

    def generate(self, input_ids: np.ndarray, max_new_tokens: int, done: Done | None = None) -> np.ndarray:
        """Greedy continuation (new tokens, at most ``max_new_tokens``) of ``input_ids: [1, T]``; ``done``: where
        the source decodes step by step, it stops once this is true of the tokens so far."""
        ...


def padded_batches(
    sequences: Sequence[np.ndarray], batch_size: int, pad_id: int
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Consecutive groups of ``batch_size`` sequences as int64 ``[b, longest]`` right-padded with ``pad_id``, with
    each sequence's length (a causal model's logits before the padding do not see it)."""
    for start in range(0, len(sequences), batch_size):
        group = sequences[start : start + batch_size]
        ids = np.full((len(group), max(len(s) for s in group)), pad_id, dtype=np.int64)
        for row, seq in enumerate(group):
            ids[row, : len(seq)] = seq
        yield ids, [len(seq) for seq in group]


class EngineSource:
    """A slimpack engine's logits: ``batch_size`` sequences per forward, right-padded with ``pad_id``."""

    def __init__(self, engine: Any, batch_size: int = 1, pad_id: int = 0) -> None:
        limit = engine.batch_limit(batch_size)
        if limit:
            raise SlimpackError(f"--batch-size {batch_size}: {limit}; use --batch-size 1")
        self.engine, self.batch_size, self.pad_id = engine, batch_size, pad_id

    def logits_of(self, sequences: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
        for ids, lengths in padded_batches(sequences, self.batch_size, self.pad_id):
            logits = np.asarray(self.engine.logits(ids))
            for row, n in enumerate(lengths):
                yield logits[row, :n]

    def generate(self, input_ids: np.ndarray, max_new_tokens: int, done: Done | None = None) -> np.ndarray:
        if isinstance(self.engine, Stepper):  # its own KV-cache loop: stop early
            return greedy_decode(self.engine, input_ids, max_new_tokens, done)
        return np.asarray(self.engine.generate(input_ids, max_new_tokens)).reshape(-1)  # e.g. DeepSparse's worker


class ForwardSource:
    """A `prune.store.Forward` (resident, or streamed: all sequences block-major), ``batch_size`` (right-padded)
    sequences per batch."""

    def __init__(self, forward: Any, batch_size: int = 1, pad_id: int = 0) -> None:
        self.forward, self.batch_size, self.pad_id = forward, batch_size, pad_id

    def logits_of(self, sequences: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
        padded = list(padded_batches(sequences, self.batch_size, self.pad_id))
        batches = [torch.from_numpy(ids) for ids, _ in padded]
        for logits, (_, lengths) in zip(self.forward.logits_of(batches), padded):
            for row, n in enumerate(lengths):
                yield logits[row, :n].float().numpy()

    def generate(self, input_ids: np.ndarray, max_new_tokens: int, done: Done | None = None) -> np.ndarray:
        return greedy_decode(self.forward, input_ids, max_new_tokens, done)
