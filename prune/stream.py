"""The streamed path: a model that never sits in memory whole (pruning, GPTQ / joint quantization, perplexity).

`open_streamed(path)` gives a `LoadedModel` whose model is a skeleton (`prune.lazy.LazyCheckpoint`): only the
embedding (stored dtype; its output is cast to fp32 for the blocks) and the rope module are real.
A GPTQ checkpoint is read through its kind's codec: each quantized linear dequantized as its block is read.
`StreamedBlocks` is the walker's `prune.walker.BlockStore` for it: block ``i`` is read from the shards as fp32
on the compute device when the walker enters it and, when it leaves, encoded (`BlockEncoder`: every tensor as
it is, or GPTQ's packed tensors — `quant.checkpoint.GPTQEncoder`), written to a `prune.shards.ShardWriter` in
the output dtype (or only dropped, for a read-only pass such as an allocator's statistics) and released.
`finish` writes what is not in a block (embedding, final norm, lm_head: copied from the source shards), the
config and the tokenizer. Peak memory: one fp32 block, its calibration statistics, the calibration
activations — not the model, and not an output shard (`prune.shards` writes each tensor as it comes).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from prune.architecture import DecoderAdapter, adapter_for
from prune.data import DataSpec, eval_windows, load_texts, tokenize
from prune.errors import SlimpackError
from prune.eval import PerplexityResult, batch_nll, nll_over_ranks, result
from prune.lazy import LazyCheckpoint, fresh_rotary
from prune.manifest import peak_rss_mib
from prune.methods import LayerMethod
from prune.model_config import drop_remote_code, read_config
from prune.models import LoadedModel, checkpoint_kind, resolve_model_path
from prune.ranks import Ranks
from prune.shards import DEFAULT_SHARD_BYTES, ShardWriter
from prune.sparsity import WeightSparsity
from prune.spec import EvalSpec, Resolved, StreamSpec
from prune.walker import Keep, capture_block_inputs, in_memory, run_block

log = logging.getLogger(__name__)

COMPUTE_DTYPE = torch.float32


def stream_refusal(resolved: Resolved, method: LayerMethod | None = None) -> str | None:
    """Why the streamed path cannot run a pruning spec (None: it can): a method that needs whole-model
    gradients, an allocator that runs the whole model. ``method``: the walked method when it is not
    ``resolved``'s own (a quantizer, with or without a joint pruner). The store choice (`prune.store.settle`)
    of `prune.api.prune`, `quant.api.quantize` and ``slimpack run``'s recipe ask here."""
    method = method or resolved.method
    if method.needs_gradients:
        name = resolved.method.name if resolved.method is not None else method.name
        return (
            f"method {name!r} needs whole-model gradients, which --stream cannot give: the fp32 "
            "model and its gradients, 8 bytes per parameter (≈ 50 GiB for a 6.7B model); choose magnitude, wanda, "
            "sparsegpt or pgz, or drop --stream"
        )
    return allocation_refusal(resolved)


def allocation_refusal(resolved: Resolved) -> str | None:
    """Why the streamed path cannot run ``resolved``'s allocator (None: it can; `slimpack plan` asks only this)."""
    if resolved.allocator is not None and not resolved.allocator.streams:
        return (
            f"allocation {resolved.spec.allocation_name!r} runs the whole model; with --stream use uniform, owl, dlp "
            "or log-increase (or a --plan file)"
        )
    return None


def refuse(refusal: str | None) -> None:
    """Raise a job's refusal (`stream_refusal`, `quant.api.quantize_stream_refusal`) as its one line, before any
    work; None: nothing to refuse."""
    if refusal is not None:
        raise SlimpackError(refusal)


def open_streamed(spec: str | Path) -> LoadedModel:
    """A model directory (or alias) opened as a skeleton (``.lazy``: where its weights lie), read through its
    checkpoint kind's codec (plain, or GPTQ: dequantized as read)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(spec)
    kind = checkpoint_kind(path)
    codec = kind.codec(read_config(path))
    if codec is None:
        raise SlimpackError(
            f"{str(path)!r} is a {kind.name} checkpoint, which the streamed path does not read yet — drop --stream"
        )
    lazy = LazyCheckpoint.open(path, codec)
    model = lazy.model
    adapter = adapter_for(model)
    embed = model.get_submodule(adapter.embed_path)
    lazy.materialize(embed, adapter.embed_path, None, "cpu")  # stored dtype
    embed.register_forward_hook(lambda module, args, out: out.to(COMPUTE_DTYPE))
    fresh_rotary(model, adapter.rotary_path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    drop_remote_code(tokenizer.init_kwargs)  # its tokenizer_config.json names no code (the config's: `lazy`)
    return LoadedModel(model, tokenizer, str(spec), path, kind.name, adapter, lazy=lazy)


class BlockEncoder(Protocol):
    """How a finished block is written: its tensors by full name (the writer converts floating ones to its
    dtype), and what the walk keeps of the block's method outputs (``outputs``: by full module name)."""

    def encode(
        self, prefix: str, block: nn.Module, outputs: dict[str, Any]
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]: ...


class PlainEncoder:
    """Every tensor as it is (a plain model directory); the outputs are kept as they are."""

    def encode(
        self, prefix: str, block: nn.Module, outputs: dict[str, Any]
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {f"{prefix}.{name}": tensor for name, tensor in block.state_dict().items()}, outputs


class StreamedBlocks:
    """The blocks of a `LazyCheckpoint`: read in fp32 on entry; on leaving encoded (`BlockEncoder`), written to
    ``writer`` (if any) and released."""

    def __init__(
        self,
        lazy: LazyCheckpoint,
        adapter: DecoderAdapter,
        writer: ShardWriter | None = None,
        encoder: BlockEncoder | None = None,
        keep: Keep = in_memory,
    ) -> None:
        self.lazy, self.adapter, self.writer = lazy, adapter, writer
        self.encoder = encoder or PlainEncoder()
        self.keep = keep  # where the calibration activations wait: in memory, or `Spill`
        self.blocks = adapter.blocks(lazy.model)
        self.before: dict[str, WeightSparsity] = {}  # prunable linear → its zeros as read
        self.sparsity: dict[str, WeightSparsity] = {}  # prunable linear → its zeros as written

    def __len__(self) -> int:
        return len(self.blocks)

    def enter(self, index: int, device: torch.device | str) -> nn.Module:
        block = self.blocks[index]
        prefix = self.adapter.block_prefix(index)
        self.lazy.materialize(block, prefix, COMPUTE_DTYPE, device)
        for name, lin in self.adapter.linears(block).items():
            self.before[f"{prefix}.{name}"] = WeightSparsity.of(lin.weight)
        return block

    def leave(self, index: int, block: nn.Module, outputs: dict[str, Any]) -> dict[str, Any]:
        kept = outputs
        if self.writer is not None:
            prefix = self.adapter.block_prefix(index)
            tensors, kept = self.encoder.encode(prefix, block, outputs)
            stored = {name: self.writer.add(name, tensor) for name, tensor in tensors.items()}
            for name, lin in self.adapter.linears(block).items():  # zeros as stored, or as computed (encoded)
                full = f"{prefix}.{name}"
                self.sparsity[full] = WeightSparsity.of(stored.get(f"{full}.weight", lin.weight))
        self.lazy.release(block)
        return kept


def output_writer(
    directory: Path, lazy: LazyCheckpoint, dtype: torch.dtype | None, shard_bytes: int | None
) -> ShardWriter:
    """The writer of a streamed output: ``dtype`` (default: the source's stored dtype)."""
    return ShardWriter(directory, dtype or lazy.stored_dtype(), shard_bytes or DEFAULT_SHARD_BYTES)


def finish(
    loaded: LoadedModel,
    writer: ShardWriter,
    directory: Path,
    write_config: Callable[[Any, Path], None] | None = None,
) -> None:
    """Write the tensors outside the blocks (copied from the source), close the shards, write config (with
    ``write_config(config, directory)`` when the output kind has its own) and tokenizer: ``directory`` then
    holds a complete model directory."""
    lazy = loaded.lazy
    adapter = loaded.adapter
    assert lazy is not None and adapter is not None
    inside = adapter.blocks_path + "."
    outside = [n for n in lazy.model.state_dict() if not n.startswith(inside) and lazy.stored(n)]
    for name, tensor in lazy.read(outside, None, "cpu").items():
        writer.add(name, tensor)
    writer.close()
    config = lazy.model.config
    config.dtype = writer.dtype
    if write_config is not None:
        write_config(config, directory)
    else:
        config.save_pretrained(directory)
    if (lazy.path / "generation_config.json").is_file():
        shutil.copy2(lazy.path / "generation_config.json", directory / "generation_config.json")
    if loaded.tokenizer is not None:
        loaded.tokenizer.save_pretrained(directory)


class StreamedForward:
    """The forward pass of a streamed model, block-major: every batch through block 0, then block 1, …, then
    the final norm and lm_head — one block in memory at a time (SparseGPT's evaluation). The same operations
    on the same batches as the whole-model forward, so the same logits, bit for bit.

    `prefill` / `step` serve greedy decoding (`runtime_bench.engines.base.greedy_decode`) without a KV cache:
    ``past`` is the sequence so far and each step runs it whole again, reading every block — slow (one pass
    over the checkpoint per token), for verifying a few tokens of a model that does not fit in memory."""

    def __init__(self, loaded: LoadedModel, device: str = "cpu", progress: bool = True) -> None:
        """``loaded``: a skeleton (`open_streamed`)."""
        self.loaded, self.device, self.progress = loaded, device, progress
        self.tokenizer = loaded.tokenizer
        self.head: tuple[nn.Module, nn.Module] | None = None

    @classmethod
    def open(cls, model_dir: Path, device: str = "cpu", progress: bool = True) -> StreamedForward:
        return cls(open_streamed(model_dir), device, progress)

    @torch.no_grad()
    def logits_of(self, batches: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The logits ``[b, s, vocab]`` of each batch of token ids ``[b, s]``, one batch at a time."""
        loaded, device = self.loaded, self.device
        lazy, adapter = loaded.lazy, loaded.adapter
        assert lazy is not None and adapter is not None
        inputs = capture_block_inputs(loaded.model, adapter, batches, device)
        store = StreamedBlocks(lazy, adapter)
        for index in tqdm(range(len(store)), desc="blocks", disable=not self.progress):
            block = store.enter(index, device)
            for inp, out in zip(inputs, run_block(block, inputs, device)):
                inp.hidden = out
            store.leave(index, block, {})
        norm, lm_head = self._head()
        for inp in inputs:
            yield lm_head(norm(inp.hidden.to(device)))

    def _head(self) -> tuple[nn.Module, nn.Module]:
        """The final norm and lm_head, read once (fp32, on the device) and kept."""
        if self.head is None:
            model, lazy, adapter = self.loaded.model, self.loaded.lazy, self.loaded.adapter
            assert lazy is not None and adapter is not None
            paths = [adapter.norm_path, "lm_head"]
            for path in paths:  # a tied lm_head: a fp32 copy of the embedding (`LazyCheckpoint.stored_name`)
                lazy.materialize(model.get_submodule(path), path, COMPUTE_DTYPE, self.device)
            self.head = (model.get_submodule(paths[0]), model.get_submodule(paths[1]))
        return self.head

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64))
        return next(iter(self.logits_of([ids]))).numpy()

    def prefill(self, input_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.logits(input_ids)[:, -1], np.asarray(input_ids, np.int64)

    def step(self, token: np.ndarray, past: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.concatenate([past, np.asarray(token, np.int64)], axis=1)
        return self.logits(ids)[:, -1], ids


def forward_perplexity(
    forward: Any, windows: torch.Tensor, batch_size: int = 1, ranks: Ranks | None = None
) -> tuple[PerplexityResult, torch.Tensor | None]:
    """`prune.eval.perplexity` of ``windows`` through ``forward`` (a `prune.store.Forward`: `StreamedForward`
    runs every batch in one block-major pass), and the logits of the first window (verify compares them; None
    on a rank whose share does not hold it). ``ranks``: each runs its share (`prune.eval.nll_over_ranks`)."""
    start = time.perf_counter()
    first: list[torch.Tensor] = []

    def nll_of(batches: list[torch.Tensor]) -> Iterator[tuple[float, int]]:
        for batch, logits in zip(batches, forward.logits_of(batches)):
            if not first and batch.data_ptr() == windows.data_ptr():
                first.append(logits[:1].clone())  # not a view of the whole batch
            yield batch_nll(logits, batch)

    total, count = nll_over_ranks(list(windows.split(batch_size)), nll_of, ranks)
    return result(total, count, windows, time.perf_counter() - start), (first[0] if first else None)


def streamed_perplexity(
    model_dir: Path, spec: EvalSpec, device: str = "cpu", progress: bool = True, ranks: Ranks | None = None
) -> PerplexityResult:
    """`prune.eval.perplexity` of the model in ``model_dir``, block-major (`StreamedForward`): the same number
    as the whole-model forward, bit for bit, with one block in memory."""
    start = time.perf_counter()
    forward = StreamedForward.open(model_dir, device, progress)
    tokens = tokenize(forward.tokenizer, load_texts(spec.dataset).evaluation)
    windows = eval_windows(tokens, spec.seqlen, spec.windows)
    ppl, _ = forward_perplexity(forward, windows, spec.batch_size, ranks)
    return replace(ppl, seconds=time.perf_counter() - start)


class Spill:
    """A `prune.walker.Keep` for activations larger than the memory budget (``--offload-dir``): each hidden
    state is written to a file under ``directory`` and returned memory-mapped from it. The file is unlinked at
    once: its pages are the kernel's to evict and re-read (file-backed, not anonymous memory), its disk space
    is freed with the tensor, and a killed run leaves no file behind (only the directory, if it made it)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.detach().contiguous()
        fd, name = tempfile.mkstemp(prefix="slimpack-activations-", suffix=".bin", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(memoryview(hidden.reshape(-1).view(torch.uint8).numpy()))
            mapped = torch.from_file(name, shared=True, size=hidden.numel(), dtype=hidden.dtype)
        finally:
            os.unlink(name)
        return mapped.view(hidden.shape)


@dataclass(frozen=True)
class MemoryEstimate:
    """The memory model of a streamed walk, in bytes: what is resident at the peak (one block in fp32, its
    calibration statistics and the OBS sweep's work, the calibration activations — inputs and outputs of a
    block —, the embedding in its stored dtype) on top of what the process already holds. The output writer
    holds no shard (`prune.shards.ShardWriter` writes each tensor into its file as it is added)."""

    parts: dict[str, int]
    per_sample: int  # activation bytes of one calibration window

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        items = ", ".join(f"{k} {v / 2**30:.2f}" for k, v in self.parts.items())
        return f"≈ {self.total / 2**30:.2f} GiB ({items} GiB)"


def largest_block(loaded: LoadedModel) -> nn.Module:
    """The skeleton's block with the most parameters (a structured model's blocks differ): what the memory and
    time models size a streamed walk by."""
    assert loaded.lazy is not None and loaded.adapter is not None
    return max(loaded.adapter.blocks(loaded.lazy.model), key=lambda b: sum(p.numel() for p in b.parameters()))


def estimate_memory(loaded: LoadedModel, needs: tuple[str, ...], data: DataSpec) -> MemoryEstimate:
    """`MemoryEstimate` of pruning ``loaded`` (a skeleton) with a method that accumulates ``needs``."""
    lazy, adapter = loaded.lazy, loaded.adapter
    assert lazy is not None and adapter is not None
    largest = largest_block(loaded)
    block = sum(p.numel() for p in largest.parameters()) * 4
    linears = list(adapter.linears(largest).values())
    stats = 0
    if "hessian" in needs:  # while calibrating, one float64 sum [in, in] per group of linears reading one input
        # (`prune.walker.SharedInput`); the largest's is then cast to its fp32 H (both held for a moment) and
        # released; its sweep holds H (factored in place, `prune.stats.Stats.owned`) and the factor
        by_name = adapter.linears(largest)
        widest = max(lin.in_features for lin in linears)
        stats = max(sum(8 * by_name[g[0]].in_features ** 2 for g in adapter.groups), 12 * widest**2)
    elif needs:
        stats = sum(8 * lin.in_features for lin in linears)
    hidden = lazy.model.config.hidden_size
    per_sample = 2 * data.seqlen * hidden * 4  # a block's inputs and outputs, fp32
    parts = {
        "runtime": int(peak_rss_mib() * 2**20),
        "block": block,
        "statistics": stats,
        "activations": per_sample * data.nsamples if needs else 0,
    }
    return MemoryEstimate(parts, per_sample)


@dataclass(frozen=True)
class MachineRates:
    """This machine's speed now on the two kinds of work a walk does: fp32 matrix products (FLOP/s) and
    row sorts (elements/s, as mask selection sorts each row's scores)."""

    flops: float
    sort: float

    @classmethod
    def measure(cls, device: torch.device | str = "cpu") -> MachineRates:
        """The best of three ``[512, 2048] × [2048, 2048]`` products and of three sorts of ``[256, 4096]`` rows
        on ``device`` (≈ 0.2 s on 2 CPU cores)."""
        dev = torch.device(device)
        a, b, rows = (
            torch.randn(512, 2048, device=dev),
            torch.randn(2048, 2048, device=dev),
            torch.randn(256, 4096, device=dev),
        )

        def best(run: Callable[[], Any]) -> float:
            times = []
            for _ in range(3):
                start = time.perf_counter()
                run()
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                times.append(time.perf_counter() - start)
            return min(times)

        return cls(2 * 512 * 2048 * 2048 / best(lambda: torch.mm(a, b)), rows.numel() / best(lambda: rows.sort(dim=1)))


@dataclass(frozen=True)
class TimeEstimate:
    """The time model of a streamed walk: the work of one block (the largest) — floating-point operations and
    sorted elements — over the rates measured on this machine now (`MachineRates`), times the blocks. Reading
    and writing the shards, norms, rope and copies are not counted; docs/results/scale.md compares the model
    with measured runs."""

    block_flops: float
    block_sorted: float
    blocks: int
    rates: MachineRates

    @property
    def per_block(self) -> float:
        return self.block_flops / self.rates.flops + self.block_sorted / self.rates.sort

    def describe(self) -> str:
        total = self.per_block * self.blocks
        return (f"≈ {total / 60:.0f} min ({self.per_block:.1f} s/block × {self.blocks} blocks; this machine now: "
                f"{self.rates.flops / 1e9:.0f} GFLOP/s fp32 matmul, {self.rates.sort / 1e6:.0f} M elements/s sorted)")  # fmt: skip


OBS_EFFICIENCY = 0.5  # the OBS sweep's share of the matmul rate: SparseGPT on LLaMA-2-7B blocks (scale.md)


def estimate_time(
    loaded: LoadedModel, needs: tuple[str, ...], data: DataSpec, reruns: bool, rates: MachineRates
) -> TimeEstimate:
    """`TimeEstimate` of walking ``loaded`` (a skeleton) with a method that accumulates ``needs`` (calibrated:
    one pass of the calibration tokens through the block, a second when the compressed block ``reruns``); a
    Hessian adds ``XᵀX`` per linear (``2·in²`` per token) and the OBS sweep's inverse and updates
    (``in³ + 2·in²·out``: SparseGPT §3, GPTQ Alg. 1; its column blocks run at `OBS_EFFICIENCY` of the matmul
    rate); every weight is sorted once (mask selection)."""
    lazy, adapter = loaded.lazy, loaded.adapter
    assert lazy is not None and adapter is not None
    blocks = adapter.blocks(lazy.model)
    linears = list(adapter.linears(largest_block(loaded)).values())
    weights = sum(lin.in_features * lin.out_features for lin in linears)
    tokens = data.nsamples * data.seqlen
    hidden = lazy.model.config.hidden_size
    per_pass = 2 * weights * tokens + 2 * tokens * data.seqlen * hidden  # the linears, and QKᵀ / PV (causal)
    flops = (1 + int(reruns)) * per_pass if needs else 0.0
    if "hessian" in needs:
        flops += sum(2 * lin.in_features**2 * tokens for lin in linears)
        obs = sum(lin.in_features**3 + 2 * lin.in_features**2 * lin.out_features for lin in linears)
        flops += obs / OBS_EFFICIENCY
    return TimeEstimate(flops, weights, len(blocks), rates)


def plan_streamed_walk(
    loaded: LoadedModel, needs: tuple[str, ...], data: DataSpec, stream: StreamSpec, reruns: bool = True,
    device: torch.device | str = "cpu",
) -> Keep:  # fmt: skip
    """What a streamed walk says before any work: its estimated time and peak memory (logged), and the memory
    budget's verdict (`check_budget`: where the calibration activations wait, or a one-line refusal)."""
    estimate = estimate_time(loaded, needs, data, reruns, MachineRates.measure(device))
    log.info("streamed run: estimated time %s", estimate.describe())
    return check_budget(estimate_memory(loaded, needs, data), stream, data)


def check_budget(estimate: MemoryEstimate, stream: StreamSpec, data: DataSpec) -> Keep:
    """Where the calibration activations wait between blocks, within ``stream.max_memory_mib``: in memory if
    they fit (or no budget is set), else spilled to ``stream.offload_dir`` (`Spill`; always, when it is given
    without a budget). A run that cannot fit either way is refused (one line, before any work) naming what
    would fit."""
    budget_mib, offload = stream.max_memory_mib, stream.offload_dir
    log.info("streamed run: estimated peak memory %s", estimate.describe())
    fits = budget_mib is None or estimate.total <= budget_mib * 2**20
    if offload is not None and (budget_mib is None or not fits):
        spilled = MemoryEstimate({**estimate.parts, "activations": estimate.per_sample}, estimate.per_sample)
        log.info("activations spilled to %s: estimated peak memory %s", offload, spilled.describe())
        if budget_mib is not None and spilled.total > budget_mib * 2**20:
            raise SlimpackError(
                f"--max-memory {budget_mib:.0f} MiB is too small for this run even with the activations in "
                f"{offload!r}, estimated {spilled.describe()}; raise --max-memory"
            )
        return Spill(Path(offload))
    if fits:
        return in_memory
    assert budget_mib is not None
    fixed = estimate.total - estimate.parts["activations"]
    room = budget_mib * 2**20 - fixed
    count = int(room // estimate.per_sample) if room > 0 else 0
    hint = (
        f"--nsamples {count} (of {data.nsamples}) would fit, or --offload-dir DIR keeps the activations on disk"
        if count > 0
        else f"even one block needs {fixed / 2**30:.2f} GiB; raise --max-memory"
    )
    raise SlimpackError(
        f"--max-memory {budget_mib:.0f} MiB is too small for this run, estimated {estimate.describe()}; {hint}"
    )
