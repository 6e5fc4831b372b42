"""Calibration and evaluation text → token windows.

Corpora (registry `CORPORA`), each giving a calibration text and an evaluation text:
- ``offline``: CPython's ``pydoc_data.topics`` (≈465 KB of English prose, always installed). Topics are
  joined in sorted key order; the last 20 % of the characters (cut at a line break) is the evaluation
  part, the rest the calibration part — disjoint and deterministic.
- a local text file (``--dataset PATH``): split the same way.
- ``wikitext2``, ``c4``, ``ptb``: the Hugging Face ``datasets`` loaders as SparseGPT/Wanda use them
  (WikiText-2 raw train/test joined with blank lines; C4 shard 0 of ``en`` train / validation, the first
  1100 validation documents; PTB train/test sentences joined with spaces).

Calibration: ``nsamples`` windows of ``seqlen`` tokens at random offsets (``torch.Generator`` seeded
with ``seed``) in the calibration tokens. Evaluation: consecutive non-overlapping windows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from prune.errors import SlimpackError
from prune.registry import Registry

log = logging.getLogger(__name__)

EVAL_FRACTION = 0.2


@dataclass(frozen=True)
class DataSpec:
    """Which text, and how many calibration windows of which length; recorded in every manifest."""

    dataset: str = "offline"
    nsamples: int = 32
    seqlen: int = 512
    seed: int = 0

    def check(self) -> None:
        if self.nsamples < 1:
            raise SlimpackError(f"nsamples {self.nsamples} must be ≥ 1; e.g. --nsamples 32")
        if self.seqlen < 2:
            raise SlimpackError(f"seqlen {self.seqlen} must be ≥ 2; e.g. --seqlen 512")
        check_dataset(self.dataset)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Texts:
    calibration: str
    evaluation: str


def split_text(text: str, eval_fraction: float = EVAL_FRACTION) -> Texts:
    """Deterministic disjoint split: the tail ``eval_fraction`` of the characters, cut at a line break."""
    cut = int(len(text) * (1 - eval_fraction))
    nl = text.rfind("\n", 0, cut)
    cut = nl + 1 if nl > 0 else cut
    return Texts(calibration=text[:cut], evaluation=text[cut:])


CORPORA: Registry[Callable[[], Texts]] = Registry("dataset")


@CORPORA.register("offline")
def offline_corpus() -> Texts:
    from pydoc_data.topics import topics

    return split_text("\n\n".join(topics[key] for key in sorted(topics)))


def offline_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on the offline corpus (no download): for random-weight models with
    real shapes and for tests. Its ids stay below ``vocab_size``."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator([topics[k] for k in sorted(topics)][:200], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def local_file_corpus(path: Path) -> Texts:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SlimpackError(f"dataset file {str(path)!r} is not UTF-8 text; pass a plain text file") from None
    if not text.strip():
        raise SlimpackError(f"dataset file {str(path)!r} is empty; pass a text file with content")
    return split_text(text)


@dataclass(frozen=True)
class HFCorpus:
    """A corpus read through ``datasets.load_dataset`` (one call per split), as the papers use it."""

    path: str
    name: str | None
    calib_split: str
    eval_split: str
    field: str
    joiner: str
    calib_files: str | None = None
    eval_files: str | None = None
    eval_docs: int | None = None

    def _load(self, split: str, files: str | None, loader: Callable[..., Any]) -> str:
        kwargs: dict[str, Any] = {"split": "train" if files else split}
        if files:
            kwargs["data_files"] = {"train": files}
        data = loader(self.path, self.name, **kwargs) if self.name else loader(self.path, **kwargs)
        texts = data[self.field]
        if split == self.eval_split and self.eval_docs is not None:
            texts = texts[: self.eval_docs]
        return self.joiner.join(texts)

    def texts(self, loader: Callable[..., Any] | None = None) -> Texts:
        if loader is None:
            try:
                from datasets import load_dataset as loader
            except ImportError:  # pragma: no cover
                raise SlimpackError("dataset loaders need the `datasets` package; pip install datasets") from None
        try:
            return Texts(
                calibration=self._load(self.calib_split, self.calib_files, loader),
                evaluation=self._load(self.eval_split, self.eval_files, loader),
            )
        except (ConnectionError, OSError, FileNotFoundError) as err:
            raise SlimpackError(
                f"cannot load dataset {self.path!r} ({type(err).__name__}); it needs the Hugging Face hub or "
                f"a local datasets cache — or use --dataset offline / a local text file"
            ) from None


HF_CORPORA: dict[str, HFCorpus] = {
    "wikitext2": HFCorpus("wikitext", "wikitext-2-raw-v1", "train", "test", "text", "\n\n"),
    "ptb": HFCorpus("ptb_text_only", "penn_treebank", "train", "test", "sentence", " "),
    "c4": HFCorpus(
        "allenai/c4",
        None,
        "train",
        "validation",
        "text",
        " ",
        calib_files="en/c4-train.00000-of-01024.json.gz",
        eval_files="en/c4-validation.00000-of-00008.json.gz",
        eval_docs=1100,
    ),
}
for _name, _corpus in HF_CORPORA.items():
    CORPORA.register(_name)(_corpus.texts)


def check_dataset(dataset: str) -> None:
    """One line if ``dataset`` names neither a registered corpus nor a local text file (nothing is read)."""
    if dataset not in CORPORA and not Path(dataset).is_file():
        raise SlimpackError(
            f"unknown dataset {dataset!r}: not a file and not one of {', '.join(CORPORA.names())}; "
            "pass a corpus name or a path to a text file"
        )


def load_texts(dataset: str) -> Texts:
    """Resolve ``dataset``: a registered corpus name, or a path to a local text file."""
    check_dataset(dataset)
    if dataset in CORPORA:
        return CORPORA.get(dataset)()
    return local_file_corpus(Path(dataset))


def tokenize(tokenizer: Any, text: str) -> torch.Tensor:
    """The whole text as one 1-D LongTensor of token ids (no special tokens added between parts)."""
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def calibration_starts(n_tokens: int, nsamples: int, seqlen: int, seed: int) -> list[int]:
    """Seeded random window offsets in a text of ``n_tokens`` tokens."""
    if n_tokens <= seqlen:
        raise SlimpackError(
            f"calibration text has {n_tokens} tokens, too few for --seqlen {seqlen}; lower --seqlen or use more text"
        )
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_tokens - seqlen, (nsamples,), generator=gen).tolist()


def calibration_windows(tokens: torch.Tensor, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """``[nsamples, seqlen]`` windows at seeded random offsets."""
    starts = calibration_starts(tokens.numel(), nsamples, seqlen, seed)
    return torch.stack([tokens[s : s + seqlen] for s in starts])


def heldout_windows(tokens: torch.Tensor, n: int, spec: DataSpec) -> torch.Tensor:
    """``[n, seqlen]`` windows of the calibration split that overlap no calibration window of ``spec``
    (nor each other): candidates are drawn with seed ``spec.seed + 1`` and rejected on overlap."""
    taken = calibration_starts(tokens.numel(), spec.nsamples, spec.seqlen, spec.seed)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    chosen: list[int] = []
    for _ in range(1000 * n):
        start = int(torch.randint(0, tokens.numel() - spec.seqlen, (1,), generator=gen))
        if all(abs(start - t) >= spec.seqlen for t in taken + chosen):
            chosen.append(start)
            if len(chosen) == n:
                return torch.stack([tokens[s : s + spec.seqlen] for s in chosen])
    raise SlimpackError(
        f"the calibration text has no room for {n} held-out windows beside {spec.nsamples} calibration windows; "
        "use fewer samples or more text"
    )


def eval_windows(tokens: torch.Tensor, seqlen: int, windows: int | None = None) -> torch.Tensor:
    """``[n, seqlen]`` consecutive non-overlapping windows (the trailing partial window is dropped)."""
    available = tokens.numel() // seqlen
    if available == 0:
        raise SlimpackError(f"evaluation text has {tokens.numel()} tokens, fewer than one window of {seqlen}")
    n = available if windows is None else windows
    if n > available:
        raise SlimpackError(
            f"--windows {n} asks for more than the {available} windows of {seqlen} tokens the evaluation text holds"
        )
    return tokens[: n * seqlen].reshape(n, seqlen)


class Calibration:
    """The calibration split of one `DataSpec` for one tokenizer, tokenized once (on first use): the calibration
    batches (`batches`) and held-out windows disjoint from them (`heldout`). ``used`` tells whether any were
    drawn, ``tokens`` how many calibration tokens."""

    def __init__(self, tokenizer: Any, spec: DataSpec) -> None:
        self.tokenizer, self.spec = tokenizer, spec
        self._tokens: torch.Tensor | None = None
        self._batches: list[torch.Tensor] | None = None

    @property
    def text_tokens(self) -> torch.Tensor:
        if self._tokens is None:
            if self.tokenizer is None:
                raise SlimpackError("this step needs calibration text, and the model has no tokenizer")
            self._tokens = tokenize(self.tokenizer, load_texts(self.spec.dataset).calibration)
        return self._tokens

    def batches(self) -> list[torch.Tensor]:
        """The calibration set as ``[1, seqlen]`` batches (the same list on every call)."""
        if self._batches is None:
            self.spec.check()
            windows = calibration_windows(self.text_tokens, self.spec.nsamples, self.spec.seqlen, self.spec.seed)
            log.info("calibration: %d × %d tokens from %s (seed %d)", self.spec.nsamples, self.spec.seqlen,
                     self.spec.dataset, self.spec.seed)  # fmt: skip
            self._batches = list(windows.split(1))
        return self._batches

    def heldout(self, n: int) -> list[torch.Tensor]:
        """``n`` held-out windows of the calibration split (see `heldout_windows`), as ``[1, seqlen]`` batches."""
        return list(heldout_windows(self.text_tokens, n, self.spec).split(1))

    @property
    def used(self) -> bool:
        return self._batches is not None

    @property
    def tokens(self) -> int:
        return sum(b.numel() for b in self._batches or [])


def calibration_batches(tokenizer: Any, spec: DataSpec, batch_size: int = 1) -> list[torch.Tensor]:
    """The calibration set of ``spec`` as ``[batch_size, seqlen]`` batches."""
    return list(torch.cat(Calibration(tokenizer, spec).batches()).split(batch_size))
