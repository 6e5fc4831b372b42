"""Which store a command holds a model in — resident (loaded whole, fp32) or streamed (a skeleton whose blocks
are read from the shards one at a time, `prune.stream`) — chosen from the model's sizes before any work, so
that no user has to remember a flag for a model larger than memory.

`choose_store(model, asked, budget)`: ``asked`` is ``"auto"`` (the default of every command), ``"stream"`` or
``"resident"`` (the ``--stream`` / ``--resident`` overrides). ``auto`` streams when the whole model in fp32
would not fit the budget (``--max-memory``, else 80 % of the memory available now) or when streaming saves at
least `STREAM_SAVING` (1 GiB) against it; otherwise it loads the model whole (small models: one pass, no
re-reads). A job that cannot stream (``refusal``: a method that needs whole-model gradients, an
allocator that runs the whole model, an output kind without a streamed writer) is resident, and refused in
one line when the resident model would not fit. Both stores give the same numbers: the streamed walk and the
block-major forward run the same operations in fp32 (tests compare them bit for bit).

The store itself is a `ModelStore` (`ResidentStore`, `StreamedStore`, opened by `open_store` / `open_job` /
`open_chosen`): the one place that knows which it is. Stages walk ``store.blocks(…)`` and complete their output
with ``store.save`` (an `Output` says how: `PlainOutput`, `quant.stage.GPTQOutput`); evaluations, zero-shot,
verify and export ask it for perplexity, a `Forward`, the zeros, or to hand the model to an exporter.

The sizes come from the shards' headers and the config alone (the skeleton on the meta device):
- resident ≈ 4 bytes × every parameter (the fp32 model) — what loading it whole holds before any work;
- streamed ≈ 4 bytes × the parameters outside the blocks (embedding, final norm, lm_head) + 2 × the largest
  fp32 block (the block being worked on and the next one read) — `prune.stream.estimate_memory` adds the
  calibration's share once the walk is planned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import psutil
import torch
from torch import nn
from tqdm.auto import tqdm

from prune.architecture import DecoderAdapter, adapter_for
from prune.data import DataSpec, eval_windows, load_texts, tokenize
from prune.errors import SlimpackError
from prune.eval import PerplexityResult, model_logits, perplexity
from prune.lazy import LazyCheckpoint, output_bytes
from prune.model_config import read_config
from prune.models import LoadedModel, checkpoint_kind, load_model, resolve_model_path, save_model
from prune.ranks import Ranks
from prune.shards import ShardWriter
from prune.spec import STORES, EvalSpec, Job, StreamSpec, asked_store
from prune.stream import (
    BlockEncoder,
    PlainEncoder,
    StreamedBlocks,
    StreamedForward,
    finish,
    open_streamed,
    output_writer,
    plan_streamed_walk,
    refuse,
    streamed_perplexity,
)
from prune.walker import BlockStore, InMemoryBlocks, Keep

log = logging.getLogger(__name__)

STREAM_SAVING = 2**30  # auto streams when that saves at least this much memory against loading the model whole
BUDGET_FRACTION = 0.8  # of the memory available now, when no --max-memory is given


@dataclass(frozen=True)
class ModelFootprint:
    """A model's memory in each store, in bytes (see the module docstring)."""

    resident: int
    streamed: int | None  # None: the checkpoint kind cannot be read block by block (it has no tensor codec)

    @classmethod
    def of(cls, path: Path) -> ModelFootprint:
        """From the config and the shards' headers (no weight is read): the skeleton's parameters, or — for a
        kind with no tensor codec — the stored tensors' elements, 4 bytes each."""
        codec = checkpoint_kind(path).codec(read_config(path))
        if codec is None:
            return cls(resident=output_bytes(path, 4), streamed=None)
        lazy = LazyCheckpoint.open(path, codec)
        model = lazy.model
        total = sum(p.numel() for p in model.parameters())
        sizes = [sum(p.numel() for p in block.parameters()) for block in adapter_for(model).blocks(model)]
        outside = total - sum(sizes)
        return cls(resident=4 * total, streamed=4 * outside + 2 * 4 * max(sizes, default=0))


@dataclass(frozen=True)
class StoreChoice:
    """The chosen store and why, in one line (logged at INFO, and in the error of a run that cannot fit)."""

    streamed: bool
    reason: str


def available_bytes() -> int:
    """Memory available to a new allocation now (page cache counts as available)."""
    return int(psutil.virtual_memory().available)


def process_bytes() -> int:
    """What this process holds now (its resident set)."""
    return int(psutil.Process().memory_info().rss)


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def choose_store(
    path: Path, asked: str = "auto", budget_bytes: int | None = None, refusal: str | None = None
) -> StoreChoice:
    """`decide`, logged with its reason (INFO)."""
    choice = decide(Path(path), asked, budget_bytes, refusal)
    log.info("store %s", choice.reason)
    return choice


def decide(path: Path, asked: str, budget_bytes: int | None, refusal: str | None) -> StoreChoice:
    """The store of the model directory ``path`` (see the module docstring). ``budget_bytes``: ``--max-memory``,
    the whole process's (None: `BUDGET_FRACTION` of `available_bytes` for the model); ``refusal``: why this job
    cannot stream (None: it can)."""
    if asked not in STORES:
        raise SlimpackError(f"store {asked!r} is not one of {', '.join(STORES)}")
    if asked == "stream":
        refuse(refusal)
        return StoreChoice(True, "streamed: --stream")
    if asked == "resident":
        return StoreChoice(False, "resident: --resident")
    footprint = ModelFootprint.of(path)
    if budget_bytes is not None:  # a budget for the whole process: what it holds already is spent
        budget, source = budget_bytes - process_bytes(), "--max-memory, less what the process holds"
    else:
        budget, source = int(BUDGET_FRACTION * available_bytes()), "the memory available now"
    if refusal is not None or footprint.streamed is None:  # it cannot stream: resident, if it fits
        resident = footprint.resident
        why = refusal or "this checkpoint kind cannot be read block by block"
        if resident > budget:
            raise SlimpackError(
                f"the whole model in fp32 needs ≈ {gib(resident)}, more than {gib(budget)} ({source}), and it cannot "
                f"stream: {why}"
            )
        return StoreChoice(False, f"resident: ≈ {gib(resident)} in fp32 fits {gib(budget)}; it cannot stream ({why})")
    if footprint.resident > budget:
        return StoreChoice(
            True,
            f"streamed: the whole model in fp32 would take ≈ {gib(footprint.resident)}, more than {gib(budget)} "
            f"({source}); streamed ≈ {gib(footprint.streamed)} plus calibration",
        )
    if footprint.resident - footprint.streamed >= STREAM_SAVING:
        return StoreChoice(
            True,
            f"streamed: ≈ {gib(footprint.streamed)} plus calibration against ≈ {gib(footprint.resident)} for the whole "
            "model in fp32 (--resident loads it whole)",
        )
    return StoreChoice(
        False,
        f"resident: the whole model in fp32 takes ≈ {gib(footprint.resident)}; streaming would save less than "
        f"{gib(STREAM_SAVING)}",
    )


def settle(job: Job, refusal: str | None = None) -> Job:
    """``job`` with its store chosen (`choose_store`; ``refusal``: why it cannot stream): streamed — ``stream``
    holds its settings (the defaults when none were given) — or resident (``stream`` None). Logged with the
    reason."""
    settings = job.stream or StreamSpec()
    budget = None if settings.max_memory_mib is None else int(settings.max_memory_mib * 2**20)
    choice = choose_store(resolve_model_path(job.model), job.store, budget, refusal)
    return replace(job, store="stream" if choice.streamed else "resident", stream=settings if choice.streamed else None)


class Output(Protocol):
    """What a model-writing stage writes, in either store: a plain model directory (`PlainOutput`) or a stage's
    own format (`quant.stage.GPTQOutput`). A streamed store writes each block as the walk leaves it (``encoder``,
    in ``streamed_dtype``) and then the rest (``write_config``); a resident store saves the model whole
    (``save``) once the walk is done."""

    encoder: BlockEncoder

    def streamed_dtype(self, stream: StreamSpec) -> torch.dtype | None:
        """The dtype floating tensors are written in when streamed (None: the source's stored dtype)."""
        ...

    def save(self, loaded: LoadedModel, outputs: dict[str, Any], directory: Path) -> None:
        """Write the whole model held in memory (``outputs``: what the walk kept of each linear)."""
        ...

    def write_config(self, config: Any, directory: Path) -> None:
        """Write the config of a streamed output, once its tensors are written."""
        ...


class PlainOutput:
    """A plain model directory: the resident model in fp32 (`prune.models.save_model`), a streamed one in the
    stream's dtype (``--dtype``; the source's by default)."""

    encoder: BlockEncoder = PlainEncoder()

    def streamed_dtype(self, stream: StreamSpec) -> torch.dtype | None:
        return stream.torch_dtype()

    def save(self, loaded: LoadedModel, outputs: dict[str, Any], directory: Path) -> None:
        save_model(loaded.model, loaded.tokenizer, directory)

    def write_config(self, config: Any, directory: Path) -> None:
        config.save_pretrained(directory)


class ModelExporter(Protocol):
    """An exporter as a store hands it the model (`export.base.Exporter`): whole, or streamed."""

    def export(self, loaded: LoadedModel, model_dir: Path, out: Path, cache: Any = None) -> dict[str, Any]: ...

    def export_streamed(self, loaded: LoadedModel, out: Path, progress: bool = True) -> dict[str, Any]: ...


class Forward(Protocol):
    """A causal LM's logits, whatever holds it: every batch (`logits_of`), and greedy decoding's two steps
    (`runtime_bench.engines.base.greedy_decode`)."""

    tokenizer: Any

    def logits_of(self, batches: list[torch.Tensor]) -> Iterator[torch.Tensor]: ...

    def logits(self, input_ids: np.ndarray) -> np.ndarray: ...

    def prefill(self, input_ids: np.ndarray) -> tuple[np.ndarray, Any]: ...

    def step(self, token: np.ndarray, past: Any) -> tuple[np.ndarray, Any]: ...


class ResidentForward:
    """`Forward` of a model held in memory, on ``device`` already: one whole-model forward per batch; decoding
    with the KV cache. The one such forward: the ``torch`` engine runs its artifacts through it too."""

    def __init__(self, model: nn.Module, tokenizer: Any = None, device: str = "cpu") -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device

    @torch.inference_mode()
    def logits_of(self, batches: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        logits = model_logits(self.model, self.device)
        for batch in batches:
            yield logits(batch)

    def _ids(self, input_ids: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self.device)

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        return next(iter(self.logits_of([self._ids(input_ids)]))).float().cpu().numpy()

    @torch.inference_mode()
    def prefill(self, input_ids: np.ndarray) -> tuple[np.ndarray, Any]:
        # the head on the last position only, as Hugging Face's ``generate`` runs its prefill (``logits_to_keep``)
        out = self.model(input_ids=self._ids(input_ids), use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float().cpu().numpy(), out.past_key_values

    @torch.inference_mode()
    def step(self, token: np.ndarray, past: Any) -> tuple[np.ndarray, Any]:
        out = self.model(input_ids=self._ids(token), past_key_values=past, use_cache=True)
        return out.logits[:, -1].float().cpu().numpy(), out.past_key_values


class ModelStore(Protocol):
    """A model held for one command, resident (`ResidentStore`) or streamed (`StreamedStore`). Everything that
    differs between the two is here: the stages, the evaluations, export and verify ask the store and never
    which one it is."""

    runtime: str  # what computes its logits, as reports name it: "torch" or "torch, streamed"
    progress: bool
    loaded: LoadedModel  # the whole model, or a skeleton whose blocks stay in the shards (``loaded.lazy``)
    settings: StreamSpec | None  # the manifest's ``stream``: a streamed store's settings (None: resident)

    def blocks(self, needs: tuple[str, ...], reruns: bool, data: DataSpec, output: Output | None = None,
               out: Path | None = None) -> BlockStore:  # fmt: skip
        """The walker's blocks for a walk accumulating ``needs`` (``reruns``: the compressed block runs again),
        its calibration ``data`` within the memory budget; with ``output``, each finished block is written
        into ``out`` as ``output`` says (streamed) or kept for `save` (resident)."""
        ...

    def reader(self, keep: Keep) -> Callable[[], BlockStore]:
        """Fresh read-only passes over the blocks (an allocator's statistics); ``keep``: where activations wait."""
        ...

    def save(self, output: Output, outputs: dict[str, Any], directory: Path) -> None:
        """Complete the model directory ``directory`` after a walk whose blocks came from `blocks`."""
        ...

    def perplexity(self, spec: EvalSpec, written: Path | None = None, ranks: Ranks | None = None) -> PerplexityResult:
        """`prune.eval.perplexity` of the model as this store holds it — after a stage, as the stage left it
        (resident: in memory; streamed: as written to ``written``)."""
        ...

    def forward(self, written: Path | None = None) -> Forward:
        """The model's logits (after a stage: as in `perplexity`)."""
        ...

    def zeros(self) -> dict[str, dict[str, int]]:
        """``{linear: {zeros, numel}}`` of every prunable linear as stored."""
        ...

    def export(self, exporter: ModelExporter, out: Path, cache: Any = None) -> dict[str, Any]:
        """Write ``exporter``'s artifact into ``out`` from this store; returns its details."""
        ...


@dataclass
class ResidentStore:
    """The model loaded whole (fp32, on the CPU; the walker moves each block to ``device``)."""

    loaded: LoadedModel
    device: str = "cpu"
    progress: bool = True
    runtime: str = "torch"
    settings: StreamSpec | None = None

    @classmethod
    def open(cls, model: str | Path, settings: StreamSpec, device: str, progress: bool) -> ResidentStore:
        return cls(load_model(model), device, progress)

    def blocks(self, needs: tuple[str, ...], reruns: bool, data: DataSpec, output: Output | None = None,
               out: Path | None = None) -> BlockStore:  # fmt: skip
        return InMemoryBlocks(self.loaded.model, self.adapter, counted=True)

    @property
    def adapter(self) -> DecoderAdapter:
        assert self.loaded.adapter is not None
        return self.loaded.adapter

    def reader(self, keep: Keep) -> Callable[[], BlockStore]:
        return partial(InMemoryBlocks, self.loaded.model, self.adapter, keep)

    def save(self, output: Output, outputs: dict[str, Any], directory: Path) -> None:
        output.save(self.loaded, outputs, directory)

    def perplexity(self, spec: EvalSpec, written: Path | None = None, ranks: Ranks | None = None) -> PerplexityResult:
        loaded = self.loaded
        loaded.model.to(self.device)
        windows = eval_windows(tokenize(loaded.tokenizer, load_texts(spec.dataset).evaluation), spec.seqlen,
                               spec.windows)  # fmt: skip
        return perplexity(loaded.model, windows, spec.batch_size, self.device, self.progress, ranks)

    def forward(self, written: Path | None = None) -> Forward:
        # the whole model on ``device``, as `perplexity` does: this store is chosen only for a model that fits
        return ResidentForward(self.loaded.model.to(self.device), self.loaded.tokenizer, self.device)

    def zeros(self) -> dict[str, dict[str, int]]:
        return {
            name: {"zeros": int((lin.weight == 0).sum()), "numel": lin.weight.numel()}
            for name, lin in self.adapter.named_linears(self.loaded.model).items()
        }

    def export(self, exporter: ModelExporter, out: Path, cache: Any = None) -> dict[str, Any]:
        assert self.loaded.path is not None
        return exporter.export(self.loaded, self.loaded.path, out, cache)


@dataclass
class StreamedStore:
    """A skeleton whose blocks are read from the shards one at a time (`prune.stream`); a stage's output is
    written block by block as the walk leaves each one."""

    loaded: LoadedModel
    settings: StreamSpec = field(default_factory=StreamSpec)
    device: str = "cpu"
    progress: bool = True
    runtime: str = "torch, streamed"
    writer: ShardWriter | None = None

    @classmethod
    def open(cls, model: str | Path, settings: StreamSpec, device: str, progress: bool) -> StreamedStore:
        return cls(open_streamed(model), settings, device, progress)

    @property
    def lazy(self) -> LazyCheckpoint:
        assert self.loaded.lazy is not None
        return self.loaded.lazy

    @property
    def adapter(self) -> DecoderAdapter:
        assert self.loaded.adapter is not None
        return self.loaded.adapter

    def blocks(self, needs: tuple[str, ...], reruns: bool, data: DataSpec, output: Output | None = None,
               out: Path | None = None) -> BlockStore:  # fmt: skip
        keep = plan_streamed_walk(self.loaded, needs, data, self.settings, reruns, self.device)
        if output is None or out is None:  # a read-only pass (or a rank that does not write, `prune.stage`)
            return StreamedBlocks(self.lazy, self.adapter, keep=keep)
        assert out is not None
        dtype = output.streamed_dtype(self.settings)
        self.writer = output_writer(out, self.lazy, dtype, int(self.settings.shard_mib * 2**20))
        return StreamedBlocks(self.lazy, self.adapter, self.writer, output.encoder, keep)

    def reader(self, keep: Keep) -> Callable[[], BlockStore]:
        return partial(StreamedBlocks, self.lazy, self.adapter, keep=keep)

    def save(self, output: Output, outputs: dict[str, Any], directory: Path) -> None:
        assert self.writer is not None, "blocks(…, output) first"
        finish(self.loaded, self.writer, directory, output.write_config)

    def perplexity(self, spec: EvalSpec, written: Path | None = None, ranks: Ranks | None = None) -> PerplexityResult:
        return streamed_perplexity(written or self.lazy.path, spec, self.device, self.progress, ranks)

    def forward(self, written: Path | None = None) -> Forward:
        if written is None:  # this store's own skeleton
            return StreamedForward(self.loaded, self.device, self.progress)
        return StreamedForward.open(written, self.device, self.progress)

    def zeros(self) -> dict[str, dict[str, int]]:
        """Each linear read from the shards (decoded), counted and dropped."""
        counts = {}
        for name in tqdm(self.adapter.named_linears(self.loaded.model), desc="source zeros", disable=not self.progress):
            weight = self.lazy.read([f"{name}.weight"], None, "cpu")[f"{name}.weight"]
            counts[name] = {"zeros": int((weight == 0).sum()), "numel": weight.numel()}
        return counts

    def export(self, exporter: ModelExporter, out: Path, cache: Any = None) -> dict[str, Any]:
        return exporter.export_streamed(self.loaded, out, self.progress)


STORE_KINDS: dict[bool, Callable[[str | Path, StreamSpec, str, bool], ModelStore]] = {
    False: ResidentStore.open,
    True: StreamedStore.open,
}  # a `StoreChoice`'s ``streamed`` → how that store opens a model


def open_store(
    model: str | Path, choice: StoreChoice, settings: StreamSpec | None = None, device: str = "cpu",
    progress: bool = True,
) -> ModelStore:  # fmt: skip
    """The store ``choice`` names, holding ``model`` (``settings``: the streamed store's, default ones if None)."""
    return STORE_KINDS[choice.streamed](model, settings or StreamSpec(), device, progress)


def open_chosen(
    model: str | Path, stream: bool | None = None, device: str = "cpu", progress: bool = True,
    refusal: str | None = None,
) -> ModelStore:  # fmt: skip
    """A read-only command's store for ``model`` (eval, verify's reference, zero-shot, export): ``stream``
    True / False forces it (``--stream`` / ``--resident``), None chooses (`choose_store`; ``refusal``: why
    this command cannot stream)."""
    choice = choose_store(resolve_model_path(model), asked_store(stream), refusal=refusal)
    return open_store(model, choice, None, device, progress)


def open_job(job: Job) -> ModelStore:
    """The store of a `settle`d job."""
    return open_store(job.model, StoreChoice(job.stream is not None, job.store), job.stream, job.device, job.progress)


def output_size(job: Job, linear_bytes: float | None = None) -> int:
    """The output of a `settle`d job, estimated from the source's headers: floats as written (fp32 from the
    resident store, the stream's dtype streamed), the blocks' linear weights at ``linear_bytes`` each where the
    stage stores them otherwise (4-bit codes)."""
    dtype = None if job.stream is None else job.stream.torch_dtype()
    float_bytes = 4 if job.stream is None else None if dtype is None else dtype.itemsize
    return output_bytes(resolve_model_path(job.model), float_bytes, linear_bytes)
