"""The lm-eval model over slimpack's logit sources (`runtime_bench.zeroshot`): lm-evaluation-harness's
``loglikelihood``, ``loglikelihood_rolling`` and ``generate_until`` from a `LogitSource`'s logits, with the
semantics of lm-eval's own Hugging Face model (``lm_eval.models.huggingface.HFLM``, 0.4.13) at batch size 1:

- **BOS**: a string is encoded with the tokenizer's own default for special tokens (a Llama tokenizer prepends
  BOS, SmolLM2's adds nothing), or as ``add_bos_token`` says when it is given; a string that already starts with
  the prefix token's text gets none added (``HFLM.tok_encode``).
- **Prefix token** (rolling windows, empty contexts): the given one, else the tokenizer's BOS, else its EOS.
- **Length**: the last ``max_length + 1`` tokens of ``context + continuation`` (left truncation); rolling windows
  of ``max_length`` tokens (``lm_eval.utils.get_rolling_token_windows``); a generation's context keeps its last
  ``max_length − max_gen_toks`` tokens.
- **Order and grouping**: requests sorted longest first, and continuations of one token that share a context
  scored from one forward (lm-eval's ``Collator``, ``group_by="contexts"``); log-softmax in fp32.
- **Generation**: greedy; stops at an end-of-sequence id (the model's ``generation_config.json``, else the
  tokenizer's EOS) or at ``max_gen_toks``; the text decoded without special tokens, cut before the first of the
  task's ``until`` strings and the EOS text (``postprocess_generated_text``). Where the engine exposes its KV-cache
  loop (`runtime_bench.engines.base.Stepper`), decoding also stops once a stop string has appeared: the text
  before it cannot change.

Imported only when a zero-shot run starts (it imports lm-eval, which imports `datasets`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    Collator,
    _add_special_kwargs,
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
    resolve_max_length,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm.auto import tqdm

from prune.errors import SlimpackError
from prune.ranks import Ranks
from runtime_bench.logit_sources import LogitSource

MAX_GEN_TOKS = 256  # lm-eval's HF model's default ``max_gen_toks``
DEFAULT_WINDOW = 2048  # lm-eval's HF model's window when neither the config nor the tokenizer gives one


def model_window(config: dict[str, Any], tokenizer: Any) -> int:
    """The model's window as lm-eval's HF model finds it (``resolve_max_length``): the config's ``n_positions``,
    ``max_position_embeddings`` or ``n_ctx`` (a nested ``text_config``'s first), else the tokenizer's
    ``model_max_length``, else `DEFAULT_WINDOW`."""
    text = config.get("text_config")
    view = SimpleNamespace(**config, **({"text_config": SimpleNamespace(**text)} if isinstance(text, dict) else {}))
    return int(resolve_max_length(view, tokenizer, default=DEFAULT_WINDOW))


class EngineLM(TemplateLM):
    """lm-eval's HF model's request semantics (module docstring) over ``source``'s logits and greedy decoding.
    ``eos_ids``: the token ids that end a generation (default: the tokenizer's EOS)."""

    def __init__(
        self, source: LogitSource, tokenizer: Any, max_length: int, progress: bool = True,
        add_bos_token: bool | None = None, prefix_token_id: int | None = None, eos_ids: Sequence[int] = (),
        ranks: Ranks | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.source, self.tokenizer, self.max_length, self.progress = source, tokenizer, max_length, progress
        self.ranks = ranks if ranks is not None else Ranks()  # under torchrun: each scores its share, results summed
        self.add_bos_token, self.custom_prefix_token_id = add_bos_token, prefix_token_id
        self.eos_ids = tuple(eos_ids) or (self.eot_token_id,)

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def prefix_token_id(self) -> int:
        if self.custom_prefix_token_id is not None:
            return self.custom_prefix_token_id
        bos = self.tokenizer.bos_token_id
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def adds_bos(self) -> bool:
        """Whether an encoded string starts with BOS (the tokenizer's default, or ``add_bos_token``)."""
        bos = self.tokenizer.bos_token_id
        return bos is not None and self.tok_encode("a")[:1] == [bos]

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None, **_: Any
    ) -> list[int]:
        special = _add_special_kwargs(add_special_tokens, self.add_bos_token)
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        encoding = list(self.tokenizer.encode(string, **special))
        return encoding[-left_truncate_len:] if left_truncate_len else encoding

    def tok_decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=skip_special_tokens)

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self.progress)

    def _loglikelihood_tokens(
        self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False, **_: Any
    ) -> list[tuple[float, bool]]:
        order = Collator(
            requests,
            sort_fn=lambda req: (-len(req[1] + req[2]), tuple(req[1] + req[2])),
            group_by="contexts",
            group_fn=lambda req: req[-2] + req[-1][:-1],
        )
        chunks = [req for chunk in order.get_batched(n=1) for req in chunk]  # one representative per context
        inputs = []
        for _, context, continuation in chunks:
            if not context or not continuation or len(continuation) > self.max_length:
                raise SlimpackError(f"a request of {len(context)} context and {len(continuation)} continuation "
                                    f"tokens cannot be scored in a window of {self.max_length}")  # fmt: skip
            inputs.append(np.asarray((context + continuation)[-(self.max_length + 1) :][:-1], np.int64))
        # under torchrun each rank scores every world-th context (`Ranks.deal`); a request of another rank's gets
        # (0.0, False) here and its owner's answer in the exact sum below (x + 0 = x): one process's results
        mine = set(self.ranks.deal(len(chunks)))
        scored = iter(self.source.logits_of([seq for i, seq in enumerate(inputs) if i in mine]))
        results, requested = [], []
        bar = tqdm(total=len(requests), desc="scoring", disable=disable_tqdm or not self.progress)
        for i, ((request, context, continuation), seq) in enumerate(zip(chunks, inputs)):
            if i in mine:
                logp = torch.log_softmax(torch.from_numpy(np.asarray(next(scored), np.float32)), dim=-1)
                picked = logp[len(seq) - len(continuation) : len(seq)].unsqueeze(0)  # [1, continuation, vocab]
            else:  # only the group's size is read: no logits are made
                picked = torch.zeros(1, len(continuation), 1).expand(1, len(continuation), max(context + continuation) + 1)
            greedy = picked.argmax(dim=-1)
            for req, cont, lp in order.get_cache(req_str=request, cxt_toks=context, cont_toks=continuation,
                                                 logits=picked):  # fmt: skip
                target = torch.tensor(cont, dtype=torch.long).unsqueeze(0)
                answer = (float(torch.gather(lp, 2, target.unsqueeze(-1)).sum()),
                          bool((greedy[:, -target.shape[1] :] == target).all())) if i in mine else (0.0, False)  # fmt: skip
                results.append(answer)
                requested.append(req)
                bar.update(1)
        bar.close()
        if self.ranks.world > 1:
            ll = torch.tensor([r[0] for r in results], dtype=torch.float64)
            hit = torch.tensor([r[1] for r in results], dtype=torch.int64)
            self.ranks.sum_([ll, hit], "the zero-shot scores")
            results = [(a, bool(b)) for a, b in zip(ll.tolist(), hit.tolist())]
        for req, answer in zip(requested, results):
            if req is not None:
                self.cache_hook.add_partial("loglikelihood", req, answer)
        return order.get_original(results)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for index, request in enumerate(requests):
            (text,) = request.args
            for window in get_rolling_token_windows(token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                                                    max_seq_len=self.max_length, context_len=1):  # fmt: skip
                windows.append((None, *make_disjoint_window(window)))
                owners.append(index)
        scored = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for owner, (ll, _) in zip(owners, scored):
            totals[owner] += ll
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def encode_context(self, text: str, keep: int) -> list[int]:
        """A generation's context as lm-eval's HF model encodes a batch (``tok_batch_encode``): BOS by the
        tokenizer's default or ``add_bos_token``, none if the text starts with BOS's text; its last ``keep``."""
        special: dict[str, bool] = {}
        if has_bos_prefix(text, self.tokenizer.bos_token):
            special["add_special_tokens"] = False
        elif self.add_bos_token is not None:
            special["add_special_tokens"] = self.add_bos_token
        return list(self.tokenizer(text, **special)["input_ids"])[-keep:]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        order = Collator([r.args for r in requests], sort_fn=lambda req: (-len(self.tok_encode(req[0])), req[0]),
                         group_by="gen_kwargs", group_fn=lambda req: req[1])  # fmt: skip
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        results: list[str] = []
        work = [req for chunk in order.get_batched(n=1) for req in chunk]
        mine = set(self.ranks.deal(len(work)))  # under torchrun each rank generates every world-th request
        bar = tqdm(total=len(mine), desc="generating", disable=disable_tqdm or not self.progress)
        for i, (context, gen_kwargs) in enumerate(work):
            if i not in mine:
                results.append("")
                continue
            kwargs = normalize_gen_kwargs(gen_kwargs, MAX_GEN_TOKS)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_new = int(kwargs.pop("max_gen_toks"))
            if kwargs.get("do_sample") or kwargs.get("temperature", 0.0) > 0.0:
                raise SlimpackError(
                    f"a task asks for sampled generation ({gen_kwargs}); slimpack generates greedily, as the papers' "
                    "tasks do"
                )
            if max_new >= self.max_length:
                raise SlimpackError(f"a task asks for {max_new} new tokens in a window of {self.max_length}")
            ids = self.encode_context(context, self.max_length - max_new)
            text = self.tok_decode(self.generate(ids, max_new, until))
            results.append(postprocess_generated_text(generation=text, stop=until, think_end_token=None))
            bar.update(1)
        bar.close()
        if self.ranks.world > 1:  # each rank's texts, by request index, as JSON (never pickled)
            for text in self.ranks.gather_text(json.dumps({i: results[i] for i in mine}), "the generated texts"):
                for i, generated in json.loads(text).items():
                    results[int(i)] = generated
        for (context, gen_kwargs), text in zip(work, results):
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return order.get_original(results)

    def generate(self, ids: list[int], max_new: int, until: Sequence[str]) -> list[int]:
        """Greedy tokens after ``ids``, up to and with the first end-of-sequence id, at most ``max_new``."""

        def done(tokens: list[int]) -> bool:
            if tokens[-1] in self.eos_ids:
                return True
            text = self.tok_decode(tokens)
            return any(stop and stop in text for stop in until)

        tokens = [int(t) for t in self.source.generate(np.asarray([ids], np.int64), max_new, done)]
        ends = [i for i, t in enumerate(tokens) if t in self.eos_ids]
        return tokens[: ends[0] + 1] if ends else tokens
