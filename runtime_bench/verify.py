"""``slimpack verify`` (here, beside the engines it runs): does the exported artifact, run in its own runtime, compute the reference model?

Two checks on the same inputs, the artifact through its engine (`runtime_bench.engines`) and the reference
(the in-framework model, ``--reference MODEL_DIR``) through torch:

1. perplexity over the evaluation windows of `prune.eval` (the one definition): relative difference
   ``|ppl_artifact − ppl_reference| / ppl_reference`` must be ≤ ``ppl_rel``;
2. greedy decoding of ``tokens`` new tokens after a ``prompt``-token prefix of the evaluation text, with the
   engine's KV cache: the fraction of positions where both produce the same token must be ≥ ``token_match``
   (positions after a first divergence are compared as produced, so one divergence usually costs the rest).

Also reported: the maximum absolute logit difference on the first window. Failing either check is exit 1.

Before any number, the integrity check (`export.artifact.Artifact.check_integrity`): every file against
``export.json``'s sha256 (a missing or malformed list is "not verified", a failure), then the zeros of each
prunable weight counted back from the artifact against the reference's, counted from the reference model
itself (`ReferenceRun.zeros`) — never against a number ``export.json`` records. Failing it is exit 1 too.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.artifact import Artifact
from prune.data import eval_windows, load_texts, tokenize
from prune.errors import SlimpackError
from prune.eval import PerplexityResult, perplexity_of
from prune.io import from_known, read_json_record
from prune.model_config import check_context
from prune.models import resolve_model_path
from prune.spec import EvalSpec
from prune.store import open_chosen
from prune.stream import forward_perplexity
from runtime_bench.engines import open_artifact
from runtime_bench.engines.base import greedy_decode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tolerance:
    ppl_rel: float = 0.01  # |Δppl| / ppl_reference
    token_match: float = 1.0  # fraction of greedy tokens equal


def check_settings(eval_spec: EvalSpec, tolerance: Tolerance, prompt: int, tokens: int, threads: int | None) -> None:
    """One line, before any work, for a verify setting that cannot give a verdict (the CLI's and a recipe's)."""
    eval_spec.check()
    problems = [
        (not tolerance.ppl_rel >= 0, f"--tolerance {tolerance.ppl_rel} must be ≥ 0"),
        (not 0 <= tolerance.token_match <= 1, f"--token-match {tolerance.token_match} must be in [0, 1]"),
        (prompt < 1, f"--prompt {prompt} must be ≥ 1"),
        (tokens < 1, f"--tokens {tokens} must be ≥ 1: verify compares greedy tokens"),
        (prompt > eval_spec.seqlen, f"--prompt {prompt} is longer than one window (--seqlen {eval_spec.seqlen})"),
        (threads is not None and threads < 1, f"--threads {threads} must be ≥ 1"),
    ]
    for bad, message in problems:
        if bad:
            raise SlimpackError(message)


@dataclass(frozen=True)
class VerifyConfig:
    artifact: Path
    reference: str
    eval: EvalSpec = EvalSpec(windows=8)
    tolerance: Tolerance = Tolerance()
    prompt: int = 32
    tokens: int = 32
    threads: int | None = None
    progress: bool = True
    stream: bool | None = None  # the reference read one block at a time (`prune.stream.StreamedForward`) or
    # loaded whole; None: chosen from its size (`prune.store.choose_store`)
    engine_options: dict[str, dict[str, Any]] | None = None  # e.g. {"deepsparse": {"kv_cache": "decode-only"}}

    def check(self) -> None:

        check_settings(self.eval, self.tolerance, self.prompt, self.tokens, self.threads)
        check_context(resolve_model_path(self.reference), {"--seqlen": self.eval.seqlen,
                                                           "--prompt + --tokens": self.prompt + self.tokens})  # fmt: skip


def engine_logits(engine: Any) -> Any:
    def logits(ids: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(engine.logits(ids.numpy())))

    return logits


@dataclass(frozen=True)
class ReferenceRun:
    """The reference model's side of both checks, computed once and shared by every artifact made from that
    model with the same settings (`slimpack run` checks an ONNX and a DeepSparse export of one model)."""

    windows: torch.Tensor  # int64 [windows, seqlen]
    perplexity: Any  # `prune.eval.Perplexity`
    logits0: np.ndarray  # float32 [1, seqlen, vocab]: the first window
    tokens: np.ndarray  # int64 [1, tokens]: greedy continuation of the prompt
    zeros: dict[str, dict[str, int]]  # zeros of each prunable linear, counted from the reference's weights

    @staticmethod
    def key(config: VerifyConfig) -> tuple[Any, ...]:
        return (config.reference, config.eval, config.prompt, config.tokens)

    @classmethod
    def compute(cls, config: VerifyConfig) -> ReferenceRun:
        """Through the reference's store (`prune.store`): loaded whole, or streamed — every window in one
        block-major pass, then one pass per greedy token (no KV cache), the zeros counted one linear at a time
        from the shards."""
        store = open_chosen(config.reference, config.stream, progress=config.progress)
        zeros = store.zeros()
        forward = store.forward()
        tokens = tokenize(forward.tokenizer, load_texts(config.eval.dataset).evaluation)
        windows = eval_windows(tokens, config.eval.seqlen, config.eval.windows)
        ppl, first = forward_perplexity(forward, windows, config.eval.batch_size)
        assert first is not None  # one process holds every window
        greedy = greedy_decode(forward, windows[:1, : config.prompt].numpy(), config.tokens)
        return cls(windows, ppl, first.float().numpy(), greedy, zeros)


@dataclass(frozen=True)
class PerplexityCheck:
    artifact: PerplexityResult
    reference: PerplexityResult
    relative_diff: float  # |Δppl| / ppl_reference


@dataclass(frozen=True)
class GreedyCheck:
    prompt_tokens: int
    new_tokens: int
    equal: int  # positions where the artifact's greedy token is the reference's
    match: float
    first_divergence: int | None
    artifact: list[int]
    reference: list[int]


@dataclass(frozen=True)
class VerifyBrief:
    """`VerifyReport.brief`: the verdict and its figures (None each after an integrity failure, with that check in
    ``integrity``) — a run summary's ``verify`` entry (`runtime_bench.pipeline.summary`)."""

    passed: bool
    perplexity: float | None = None
    reference: float | None = None
    relative_diff: float | None = None
    windows: int | None = None
    greedy_equal: int | None = None
    greedy_tokens: int | None = None
    integrity: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields that apply (an integrity failure: ``passed`` and ``integrity``)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class VerifyReport:
    """What ``slimpack verify`` reports (its ``--json``, a run's ``verify/<artifact>.json``): the integrity check,
    and — when it passed — the perplexity and greedy checks and the verdict. The fields are in the file's
    order; those a report lacks (an artifact that failed its integrity check is run on nothing) are None and
    left out of the file."""

    artifact: str
    format: str
    engine: str
    reference: str
    eval: EvalSpec | None = None
    tolerance: Tolerance | None = None
    perplexity: PerplexityCheck | None = None
    max_abs_logit_diff_window0: float | None = None
    greedy: GreedyCheck | None = None
    integrity: dict[str, Any] = field(default_factory=dict)  # `export.artifact.Artifact.check_integrity`
    engine_load_seconds: float | None = None
    engine_options: dict[str, Any] | None = None
    passed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerifyReport:
        if "eval" not in data:  # an integrity failure: no checks ran
            return from_known(cls, data)
        ppl = data["perplexity"]
        return from_known(
            cls, data, eval=EvalSpec(**data["eval"]), tolerance=Tolerance(**data["tolerance"]),
            perplexity=PerplexityCheck(PerplexityResult(**ppl["artifact"]), PerplexityResult(**ppl["reference"]),
                                       ppl["relative_diff"]),
            greedy=GreedyCheck(**data["greedy"]),
        )  # fmt: skip

    @classmethod
    def read(cls, path: Path) -> VerifyReport:
        """One line when ``path`` is not a verify report."""
        return read_json_record(path, cls.from_dict, "a slimpack verify report")

    def brief(self) -> VerifyBrief:
        """The verdict and the figures a summary shows (an integrity failure: the verdict and that check)."""
        if self.perplexity is None or self.greedy is None or self.eval is None:
            return VerifyBrief(False, integrity=self.integrity)
        return VerifyBrief(
            passed=self.passed,
            perplexity=self.perplexity.artifact.perplexity,
            reference=self.perplexity.reference.perplexity,
            relative_diff=self.perplexity.relative_diff,
            windows=self.eval.windows,
            greedy_equal=self.greedy.equal,
            greedy_tokens=self.greedy.new_tokens,
        )

    def table(self) -> str:
        """A readable markdown table of the report."""
        files, zeros = self.integrity["files"], self.integrity["zeros"]
        changed = [
            f"{what}: {', '.join(files[what])}" for what in ("changed", "missing", "unlisted") if files.get(what)
        ]
        lost = [f"{m} {a} < {r}" for m, (r, a) in list(zeros.get("modules_losing_zeros", {}).items())[:3]]
        lost += [f"{m} missing" for m in zeros.get("modules_missing", [])[:3]]
        counted = f"{zeros.get('artifact')} (reference {zeros.get('source')}){': ' if lost else ''}{', '.join(lost)}"
        rows = [
            ("files against export.json's sha256", files.get("note") or "; ".join(changed) or "all equal", "equal"),
            ("zeros of the pruned weights", zeros.get("note") or counted, "≥ the reference's, weight by weight"),
        ]  # fmt: skip
        ppl, greedy, tol = self.perplexity, self.greedy, self.tolerance
        if ppl is None or greedy is None or tol is None:  # failed its integrity check: nothing was run
            rows.append(("numeric checks", "not run: the artifact is not verified as the one exported", ""))
            return self._table(rows)
        rows += [
            ("perplexity (artifact)", f"{ppl.artifact.perplexity:.4f}", ""),
            ("perplexity (reference)", f"{ppl.reference.perplexity:.4f}", ""),
            ("relative Δ", f"{100 * ppl.relative_diff:.4f} %", f"≤ {100 * tol.ppl_rel:.4g} %"),
            ("greedy tokens equal", f"{greedy.equal}/{greedy.new_tokens}", f"≥ {100 * tol.token_match:.4g} %"),
            ("max \\|Δ logit\\| (window 0)", f"{self.max_abs_logit_diff_window0:.3g}", ""),
        ]
        return self._table(rows)

    def _table(self, rows: list[tuple[str, str, str]]) -> str:
        lines = [
            f"verify {self.format} ({self.engine}) vs {self.reference}: {'PASSED' if self.passed else 'FAILED'}",
            "",
            "| check | value | tolerance |",
            "|---|---|---|",
            *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        ]
        return "\n".join(lines)


def verify(config: VerifyConfig, reference: ReferenceRun | None = None) -> VerifyReport:
    """Run both checks; returns the report (``passed`` tells the verdict). ``reference``: the reference side,
    if already computed for `ReferenceRun.key` of ``config``."""
    config.check()
    artifact = Artifact.open(config.artifact)
    reference_run = functools.cache(lambda: reference or ReferenceRun.compute(config))  # once the files are equal
    integrity = artifact.check_integrity(lambda: reference_run().zeros, config.progress)
    head = {"artifact": str(config.artifact), "format": artifact.format, "engine": artifact.engine,
            "reference": config.reference}  # fmt: skip
    if not integrity["ok"]:  # unverified or changed files, lost zeros: no number can vouch for this artifact
        log.warning("verify: %s fails its integrity check: %s", artifact.path, integrity)
        return VerifyReport(**head, integrity=integrity, passed=False)
    ref = reference_run()
    start = time.perf_counter()
    engine = open_artifact(artifact, config.threads, config.engine_options)
    load_seconds = time.perf_counter() - start
    windows = ref.windows
    try:
        art_ppl = perplexity_of(engine_logits(engine), windows, config.eval.batch_size, config.progress)
        max_logit_diff = float(np.abs(engine.logits(windows[:1].numpy()) - ref.logits0).max())
        art_tokens = engine.generate(windows[:1, : config.prompt].numpy(), config.tokens)
    finally:
        engine.close()
    ref_ppl, ref_tokens = ref.perplexity, ref.tokens
    equal = ref_tokens == art_tokens
    ppl_rel = abs(art_ppl.perplexity - ref_ppl.perplexity) / ref_ppl.perplexity
    match = float(equal.mean())
    return VerifyReport(
        **head,
        eval=config.eval,
        tolerance=config.tolerance,
        perplexity=PerplexityCheck(art_ppl, ref_ppl, ppl_rel),
        max_abs_logit_diff_window0=max_logit_diff,
        greedy=GreedyCheck(
            prompt_tokens=config.prompt,
            new_tokens=config.tokens,
            equal=int(equal.sum()),
            match=match,
            first_divergence=None if equal.all() else int(np.argmin(equal)),
            artifact=art_tokens.tolist(),
            reference=ref_tokens.tolist(),
        ),
        integrity=integrity,
        engine_load_seconds=round(load_seconds, 2),
        engine_options=(config.engine_options or {}).get(artifact.engine, {}),
        passed=ppl_rel <= config.tolerance.ppl_rel and match >= config.tolerance.token_match,
    )
