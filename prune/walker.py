"""The layer walker: one block at a time, for every method (SparseGPT §3 / GPTQ's sequential driver).

1. Capture the inputs of decoder block 0 once (a forward pre-hook raises after storing the hidden
   states *and* whatever positional/keyword arguments the model passes: position embeddings, masks,
   cache positions — nothing is hard-coded). Stored on the CPU, one entry per calibration batch.
2. For each block: move it to the compute device; attach the accumulators the method needs to its
   linears with forward hooks (removed in ``finally``); run the calibration batches; compress each
   linear with its planned sparsity; re-run the compressed block so that the next block sees the
   compressed model's activations; move the block back.
   With ``true_sequential`` the linears are handled group by group (qkv → o → gate/up → down), each
   group calibrated on the outputs of the already-compressed groups before it.
Data-free methods (no accumulators) skip all forward passes.

Shapes: hidden states ``[b, seqlen, hidden]``; a linear's hooked input ``[b, seqlen, in]``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from prune.architecture import DecoderAdapter
from prune.masks import Pattern
from prune.methods import LayerMethod
from prune.sparsity import WeightSparsity
from prune.stats import ACCUMULATORS, Accumulator, Stats

log = logging.getLogger(__name__)


class _Captured(Exception):
    """Raised by the block-0 pre-hook to stop the forward pass once its inputs are stored."""


def move(obj: Any, device: torch.device | str) -> Any:
    """Move every tensor inside nested tuples/lists/dicts to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(move(o, device) for o in obj)
    if isinstance(obj, list):
        return [move(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: move(v, device) for k, v in obj.items()}
    return obj


@dataclass
class BlockInputs:
    """The hidden states of one calibration batch (CPU) plus the extra arguments blocks receive."""

    hidden: torch.Tensor
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class WalkRecord:
    name: str
    sparsity: float
    seconds: float


@dataclass
class WalkResult:
    records: list[WalkRecord] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)  # what a method's compress returned, by module


Keep = Callable[[torch.Tensor], torch.Tensor]  # where a hidden state waits for the next block: RAM, or a file


def in_memory(hidden: torch.Tensor) -> torch.Tensor:
    return hidden


def discard(hidden: torch.Tensor) -> torch.Tensor:
    """For outputs nobody reads (a calibration pass whose block is compressed, then run again)."""
    return hidden.new_empty(0)


class BlockStore(Protocol):
    """Where the walker gets each block and where it hands it back: in memory (`InMemoryBlocks`) or streamed
    from the checkpoint's shards (`prune.stream.StreamedBlocks`: read before, written and released after).
    ``keep`` is where the calibration activations wait between blocks (in memory, or spilled to disk);
    ``before`` / ``sparsity``: each prunable linear's zeros (`prune.sparsity.WeightSparsity`) as it entered and
    as it left (as written, where the store writes it)."""

    keep: Keep
    before: dict[str, WeightSparsity]
    sparsity: dict[str, WeightSparsity]

    def __len__(self) -> int: ...

    def enter(self, index: int, device: torch.device | str) -> nn.Module:
        """Block ``index`` on ``device``, ready to run in fp32."""
        ...

    def leave(self, index: int, block: nn.Module, outputs: dict[str, Any]) -> dict[str, Any]:
        """Block ``index`` is finished (compressed, or only read); ``outputs``: what the method returned for its
        linears (by full name). Returns what the walk keeps of them (a streamed store has written them and
        keeps a summary)."""
        ...


class InMemoryBlocks:
    """The blocks of a model held in memory: moved to the compute device and back. ``counted``: record their
    zeros as they enter and leave (a stage's walk; a read-only pass needs none)."""

    def __init__(self, model: nn.Module, adapter: DecoderAdapter, keep: Keep = in_memory, counted: bool = False) -> None:
        self.blocks = adapter.blocks(model)
        self.adapter, self.keep, self.counted = adapter, keep, counted
        self.homes: dict[int, torch.device] = {}
        self.before: dict[str, WeightSparsity] = {}
        self.sparsity: dict[str, WeightSparsity] = {}

    def __len__(self) -> int:
        return len(self.blocks)

    def enter(self, index: int, device: torch.device | str) -> nn.Module:
        block = self.blocks[index]
        self.homes[index] = next(block.parameters()).device
        if self.counted:
            self.before.update(block_sparsity(self.adapter, index, block))
        return block.to(device)

    def leave(self, index: int, block: nn.Module, outputs: dict[str, Any]) -> dict[str, Any]:
        if self.counted:
            self.sparsity.update(block_sparsity(self.adapter, index, block))
        block.to(self.homes.pop(index))
        return outputs


def block_sparsity(adapter: DecoderAdapter, index: int, block: nn.Module) -> dict[str, WeightSparsity]:
    """The zeros of block ``index``'s prunable linears, by full name."""
    prefix = adapter.block_prefix(index)
    return {f"{prefix}.{name}": WeightSparsity.of(lin.weight) for name, lin in adapter.linears(block).items()}


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module,
    adapter: DecoderAdapter,
    batches: Sequence[torch.Tensor],
    device: torch.device | str,
    keep: Keep = in_memory,
) -> list[BlockInputs]:
    """Run the model up to block 0 for every batch and keep block 0's inputs on the CPU (``keep``: where)."""
    store: list[BlockInputs] = []

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        store.append(BlockInputs(keep(move(hidden, "cpu")), move(tuple(args[1:]), "cpu"), move(kwargs, "cpu")))
        raise _Captured

    pre = adapter.pre_block_modules(model)
    homes = [next(m.parameters(), torch.empty(0)).device for m in pre]
    handle = adapter.blocks(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for m in pre:
            m.to(device)
        for ids in batches:
            try:
                model(input_ids=ids.to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
        for m, home in zip(pre, homes):
            m.to(home)
    return store


@torch.no_grad()
def run_block(
    block: nn.Module, inputs: Sequence[BlockInputs], device: torch.device | str, keep: Keep = in_memory
) -> list[torch.Tensor]:
    """Run one block on every stored batch; returns its outputs on the CPU, each kept by ``keep`` as soon as
    it is computed."""
    outs = []
    for inp in inputs:
        out = block(inp.hidden.to(device), *move(inp.args, device), **move(inp.kwargs, device))
        out = out[0] if isinstance(out, tuple) else out
        outs.append(keep(out.to("cpu")))
    return outs


def collect(
    block: nn.Module,
    linears: dict[str, nn.Linear],
    needs: tuple[str, ...],
    inputs: Sequence[BlockInputs],
    device: torch.device | str,
    keep: Keep = in_memory,
) -> tuple[dict[str, dict[str, Accumulator]], list[torch.Tensor]]:
    """Feed the needed accumulators of ``linears`` with one pass over the calibration batches;
    returns them and the block's outputs of that pass."""
    accs = {
        name: {need: ACCUMULATORS[need](lin.in_features, device) for need in needs} for name, lin in linears.items()
    }

    def make_hook(targets: dict[str, Accumulator]):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            for acc in targets.values():
                acc.update(args[0])

        return hook

    handles = [lin.register_forward_hook(make_hook(accs[name])) for name, lin in linears.items()]
    try:
        outs = run_block(block, inputs, device, keep)
    finally:
        for h in handles:
            h.remove()
    return accs, outs


def walk(
    model: nn.Module,
    adapter: DecoderAdapter,
    method: LayerMethod,
    plan: Mapping[str, float],
    pattern: Pattern,
    batches: Sequence[torch.Tensor] | None = None,
    grads: dict[str, torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    true_sequential: bool = False,
    progress: bool = True,
    block_done: Callable[[int], None] | None = None,
    store: BlockStore | None = None,
) -> WalkResult:
    """Compress every prunable linear of ``model`` in place, block by block.

    ``plan`` gives each linear's sparsity (for N:M patterns, N/M of that module: the mask selector takes its N
    from it). ``block_done(index)`` is called after each block. A method whose
    ``modifies_weights`` is False (a statistics collector) hands on its calibration outputs
    instead of re-running the block. ``store``: where the blocks come from (default: ``model``'s, in memory);
    ``model`` then only needs what runs before block 0 (`capture_block_inputs`)."""
    modifies = method.modifies_weights
    calibrated = bool(method.needs)
    if calibrated and not batches:
        raise ValueError(f"method {method.name!r} needs calibration batches")
    if method.needs_gradients and grads is None:
        raise ValueError(f"method {method.name!r} needs gradients")
    result = WalkResult()
    store = store if store is not None else InMemoryBlocks(model, adapter)
    inputs = capture_block_inputs(model, adapter, batches, device, store.keep) if calibrated else []
    for index in tqdm(range(len(store)), desc=f"{method.name} blocks", disable=not progress):
        block = store.enter(index, device)
        prefix = adapter.block_prefix(index)
        linears = adapter.linears(block)
        groups = adapter.groups if true_sequential else (tuple(linears),)
        outs: list[torch.Tensor] = []
        outputs: dict[str, Any] = {}
        for group in groups:
            members = {name: linears[name] for name in group}
            keep = discard if modifies else store.keep  # a compressed block is run again below
            accs, outs = collect(block, members, method.needs, inputs, device, keep) if calibrated else ({}, [])
            for name, lin in members.items():
                full = f"{prefix}.{name}"
                # handed over and released once used: a linear's sweep never sits beside the statistics of
                # the linears done before it (their Hessians: 0.38 GiB at LLaMA-2-7B's block)
                values = {need: acc.result() for need, acc in accs.pop(name, {}).items()}
                if grads is not None and full in grads:
                    values["grad"] = grads[full].to(device)
                start = time.perf_counter()
                output = method.compress(lin, Stats(values, owned=True), plan[full], pattern)
                del values
                if output is not None:
                    outputs[full] = output
                result.records.append(WalkRecord(full, plan[full], time.perf_counter() - start))
            del accs
        if calibrated:
            if modifies:
                outs = run_block(block, inputs, device, store.keep)
            for inp, out in zip(inputs, outs):
                inp.hidden = out
        result.outputs.update(store.leave(index, block, outputs))
        if block_done is not None:
            block_done(index)
    return result
