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
Data-free methods (no accumulators) skip all forward passes. Linears that read one input (an adapter group:
q/k/v, gate/up) share one set of accumulators (`SharedInput`).

On N ranks (torchrun, `prune.ranks`) the same walk runs in every process, and this module is where work is split:
each rank captures and propagates its contiguous share of the calibration batches; after a group's calibration
pass the float64 statistics are summed across ranks; then `compress_group` runs each OBS solve on one owner rank
and broadcasts the new weight (cheap methods run everywhere on the same sums). One rank is the special case of
this, not a second code path.

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
from prune.methods import LayerMethod, SendsOutput
from prune.ranks import Ranks
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


class SharedInput:
    """The accumulators of linears that read one input tensor (a group of `DecoderAdapter.groups`: q/k/v, gate/up):
    each input is counted once, for all of them — one float64 Hessian where there were three. That they do read
    one tensor is checked: every member must have seen each input the group counted (`check`)."""

    def __init__(self, names: Sequence[str], accs: dict[str, Accumulator]) -> None:
        self.names, self.accs = tuple(names), accs
        self.last: torch.Tensor | None = None
        self.inputs = 0
        self.seen = dict.fromkeys(self.names, 0)

    def hook(self, name: str):  # noqa: ANN201
        def fed(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if args[0] is not self.last:
                for acc in self.accs.values():
                    acc.update(args[0])
                self.last, self.inputs = args[0], self.inputs + 1
            self.seen[name] += 1

        return fed

    def check(self) -> None:
        self.last = None
        if any(n != self.inputs for n in self.seen.values()):
            raise RuntimeError(f"linears {self.names} were declared to read one input but read different ones "
                               f"(inputs counted per linear: {self.seen}, distinct: {self.inputs})")  # fmt: skip

    def parts(self) -> list[torch.Tensor]:
        return [t for need in sorted(self.accs) for t in self.accs[need].parts()]


def collect(
    block: nn.Module,
    linears: dict[str, nn.Linear],
    needs: tuple[str, ...],
    inputs: Sequence[BlockInputs],
    device: torch.device | str,
    keep: Keep = in_memory,
    shares: Sequence[Sequence[str]] = (),
) -> tuple[dict[str, SharedInput], list[torch.Tensor]]:
    """Feed the needed accumulators of ``linears`` with one pass over the calibration batches; returns them by
    linear (the linears of one of ``shares`` read one input and share one `SharedInput`) and the block's outputs
    of that pass."""
    groups = [[n for n in share if n in linears] for share in shares]
    groups = [g for g in groups if g] + [[n] for n in linears if not any(n in g for g in groups)]
    feeds: dict[str, SharedInput] = {}
    for group in sorted(groups, key=lambda g: list(linears).index(g[0])):
        width = linears[group[0]].in_features
        shared = SharedInput(group, {need: ACCUMULATORS[need](width, device) for need in needs})
        feeds.update(dict.fromkeys(group, shared))
    handles = [lin.register_forward_hook(feeds[name].hook(name)) for name, lin in linears.items()]
    try:
        outs = run_block(block, inputs, device, keep)
    finally:
        for h in handles:
            h.remove()
    for feed in unique(feeds):
        feed.check()
    return feeds, outs


def unique(feeds: dict[str, SharedInput]) -> list[SharedInput]:
    """Each `SharedInput` once, in the order of its first linear."""
    seen: dict[int, SharedInput] = {}
    for feed in feeds.values():
        seen.setdefault(id(feed), feed)
    return list(seen.values())


def solve_cost(layer: nn.Linear) -> float:
    """The work of one OBS sweep on ``layer`` (``W: [out, in]``): the Cholesky factor and inverse of ``H: [in, in]``
    (∝ in³) and the column-by-column update of ``W`` (∝ out · in²) — what balances owner ranks."""
    return float(layer.in_features) ** 3 + float(layer.out_features) * float(layer.in_features) ** 2


def compress_group(
    method: LayerMethod,
    members: dict[str, nn.Linear],
    feeds: dict[str, SharedInput],
    prefix: str,
    plan: Mapping[str, float],
    pattern: Pattern,
    grads: dict[str, torch.Tensor] | None,
    device: torch.device | str,
    ranks: Ranks,
    result: WalkResult,
) -> dict[str, Any]:
    """Compress the linears of one calibrated group; returns what the method returned, by full name (on rank 0:
    all of them; on another rank: none, unless the method is a statistics collector).

    The ranks' statistics are summed first (float64). A `LayerMethod` whose ``solver`` is True (an OBS sweep:
    SparseGPT, GPTQ, PGZ, the joint mode) runs each linear on one owner rank, chosen to balance `solve_cost`;
    the owner broadcasts the new weight and sends what the method returned to rank 0 (the writer). Other
    methods run on every rank on the same summed statistics, which gives every rank the same weights with
    nothing sent. One rank is the special case: it owns everything and sends nothing."""
    if ranks.world > 1:
        for feed in unique(feeds):
            ranks.sum_(feed.parts(), f"the statistics of {prefix}")
    names = list(members)
    owners = ranks.owners([solve_cost(members[n]) for n in names]) if method.solver else [ranks.rank] * len(names)
    outputs: dict[str, Any] = {}
    for name, owner in zip(names, owners):
        feed = feeds.pop(name, None)
        if owner != ranks.rank:
            continue
        full = f"{prefix}.{name}"
        # handed over and released once used: a linear's sweep never sits beside the statistics of the linears
        # done before it (their Hessians: 0.38 GiB at LLaMA-2-7B's block); a group's float64 sums go with its last
        values = {need: acc.result() for need, acc in feed.accs.items()} if feed is not None else {}
        del feed
        if grads is not None and full in grads:
            values["grad"] = grads[full].to(device)
        start = time.perf_counter()
        output = method.compress(members[name], Stats(values, owned=True), plan[full], pattern)
        del values
        if output is not None:
            outputs[full] = output
        result.records.append(WalkRecord(full, plan[full], time.perf_counter() - start))
    if method.solver and ranks.world > 1:
        for name, owner in zip(names, owners):
            full = f"{prefix}.{name}"
            ranks.broadcast_([members[name].weight.data], owner, f"the weights of {full}")
            if isinstance(method, SendsOutput):
                outputs.update(send_output(method, members[name], full, outputs.pop(full, None), owner, ranks))
            elif full in outputs:
                raise TypeError(f"{method.name} returns a record for {full} but does not say how it travels to the "
                                "writing rank (prune.methods.SendsOutput)")  # fmt: skip
    # rank 0 writes what the methods returned; a statistics collector's values (an allocation's) serve every rank
    return outputs if ranks.writes or not method.modifies_weights else {}


def send_output(method: SendsOutput, layer: nn.Linear, full: str, output: Any, owner: int, ranks: Ranks) -> dict[str, Any]:
    """What ``owner`` computed for ``layer`` (``output``: given on ``owner`` only), handed to rank 0."""
    if owner == 0:
        return {full: output} if ranks.rank == 0 else {}
    if ranks.rank == owner:
        ranks.send_(list(method.output_tensors(output).values()), 0, f"the output of {full}")
        return {}
    if ranks.rank == 0:
        tensors = method.output_like(layer)
        ranks.recv_(list(tensors.values()), owner, f"the output of {full}")
        return {full: method.output_from(tensors)}
    return {}


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
    ranks: Ranks | None = None,
) -> WalkResult:
    """Compress every prunable linear of ``model`` in place, block by block.

    ``plan`` gives each linear's sparsity (for N:M patterns, N/M of that module: the mask selector takes its N
    from it). ``block_done(index)`` is called after each block. A method whose
    ``modifies_weights`` is False (a statistics collector) hands on its calibration outputs
    instead of re-running the block. ``store``: where the blocks come from (default: ``model``'s, in memory);
    ``model`` then only needs what runs before block 0 (`capture_block_inputs`).

    ``ranks`` (`prune.ranks.Ranks`, under torchrun): each rank calibrates its contiguous share of ``batches``;
    the statistics are summed across ranks and each linear compressed as `compress_group` says; every rank then
    runs its own share through the compressed block. Rank 0's ``outputs`` hold every linear's."""
    ranks = ranks if ranks is not None else Ranks()
    modifies = method.modifies_weights
    calibrated = bool(method.needs)
    if calibrated and not batches:
        raise ValueError(f"method {method.name!r} needs calibration batches")
    if method.needs_gradients and grads is None:
        raise ValueError(f"method {method.name!r} needs gradients")
    result = WalkResult()
    store = store if store is not None else InMemoryBlocks(model, adapter)
    mine = [batches[i] for i in ranks.share(len(batches))] if calibrated and batches else []
    inputs = capture_block_inputs(model, adapter, mine, device, store.keep) if calibrated else []
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
            feeds, outs = (
                collect(block, members, method.needs, inputs, device, keep, adapter.groups) if calibrated else ({}, [])
            )
            outputs.update(compress_group(method, members, feeds, prefix, plan, pattern, grads, device, ranks, result))
        if calibrated:
            if modifies:
                outs = run_block(block, inputs, device, store.keep)
            for inp, out in zip(inputs, outs):
                inp.hidden = out
        result.outputs.update(store.leave(index, block, outputs))
        if block_done is not None:
            block_done(index)
    return result
