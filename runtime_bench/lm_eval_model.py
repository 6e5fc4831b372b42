"""The lm-eval model over slimpack's logit sources (`runtime_bench.zeroshot`): lm-evaluation-harness's
``loglikelihood``, ``loglikelihood_rolling`` and ``generate_until`` from a `LogitSource`'s logits.

Imported only when a zero-shot run starts (it imports lm-eval, which imports `datasets`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm.auto import tqdm

from runtime_bench.logit_sources import LogitSource, continuation_logprob


class EngineLM(TemplateLM):
    """Scores ``(context, continuation)`` token pairs with ``source``'s logits of ``(context + continuation)[:-1]``
    (the last ``max_length`` tokens); generates greedily with ``source.generate``."""

    def __init__(self, source: LogitSource, tokenizer: Any, max_length: int, progress: bool = True) -> None:
        super().__init__()
        self.source, self.tokenizer, self.max_length, self.progress = source, tokenizer, max_length, progress

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return list(self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens)))

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self.progress)

    def _loglikelihood_tokens(
        self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        sequences, targets = [], []
        for _, context, continuation in requests:
            whole = (list(context) + list(continuation))[-(self.max_length + 1) :]
            sequences.append(np.asarray(whole[:-1], np.int64))
            targets.append(list(continuation))
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))  # batches of like lengths
        results: list[tuple[float, bool]] = [(0.0, False)] * len(sequences)
        scored = self.source.logits_of([sequences[i] for i in order])
        bar = tqdm(scored, total=len(order), desc="scoring", disable=disable_tqdm or not self.progress)
        for i, logits in zip(order, bar):
            results[i] = continuation_logprob(logits[-len(targets[i]) :], targets[i])
            if requests[i][0] is not None:
                self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        out = []
        for request in requests:
            (text,) = request.args
            windows = get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                context_len=1,
            )  # fmt: skip
            scored = self._loglikelihood_tokens([(None, *make_disjoint_window(w)) for w in windows])
            out.append(sum(ll for ll, _ in scored))
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out = []
        for request in requests:
            context, kwargs = request.args
            until = kwargs.get("until") or [self.tokenizer.decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", 256))
            ids = self.tok_encode(context)[-(self.max_length - max_new) :]
            tokens = self.source.generate(np.asarray([ids], np.int64), max_new)[0]
            text = self.tokenizer.decode(list(tokens), skip_special_tokens=True)
            for stop in until:
                text = text.split(stop)[0]
            out.append(text)
        return out
