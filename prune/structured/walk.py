"""The structured walk: block by block, prune heads, then FFN channels, on the shared walker's machinery.

Per block (SlimGPT `004_…` §4 runs layer-wise the same way): calibrate the attention's last linear
(``o_proj``) on the block inputs → the method picks the heads (SlimGPT also compensates ``o_proj``) →
optional ridge reconstruction (SparsitySolver `003_…` Eq. 8) → cut q rows / o columns; then calibrate
``down_proj`` *through the already-pruned attention* → channels → reconstruction → cut gate/up rows and down
columns; finally re-run the pruned block so the next block sees the pruned model's activations.
Block-0 input capture, statistics collection and block re-runs are `prune.walker`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from prune.architecture import DecoderAdapter
from prune.manifest import UnitRecord
from prune.ranks import Ranks
from prune.stats import Stats
from prune.structured import StructuredMethod
from prune.structured.reconstruct import RIDGE_LAMBDA, ridge_compensate
from prune.structured.shapes import block_counts, block_shape, cut_channels, cut_heads, head_columns, unit_names
from prune.walker import BlockInputs, BlockStore, InMemoryBlocks, capture_block_inputs, collect, discard, run_block

log = logging.getLogger(__name__)


def _prune_unit(
    block: nn.Module,
    linear: nn.Linear,
    needs: tuple[str, ...],
    inputs: Sequence[BlockInputs],
    device: torch.device | str,
    choose: Callable[[torch.Tensor, Stats], list[int]],  # (W, stats) → removed heads / channels
    columns: Callable[[list[int]], torch.Tensor],  # removed heads / channels → their input columns
    reconstruct: bool,
    lam: float,
    ranks: Ranks,
    owner: int,
) -> list[int]:
    """Calibrate ``linear`` (every rank its share, summed), choose the units and compensate on ``owner``; every
    rank gets the choice and the compensated weight."""
    accs, _ = collect(block, {"unit": linear}, needs, inputs, device, discard)  # the block is run again after
    feed = accs.pop("unit")
    ranks.sum_(feed.parts(), "a structured unit's statistics")
    W = linear.weight.data
    removed: list[int] = []
    if ranks.rank == owner:
        stats = Stats({need: acc.result() for need, acc in feed.accs.items()})
        removed = choose(W, stats)
        if reconstruct and removed:
            ridge_compensate(W, stats["hessian"], feed.accs["hessian"].count, columns(removed).tolist(), lam)
    del feed
    removed = ranks.broadcast_ints(removed, owner, "a structured unit's choice")
    ranks.broadcast_([W], owner, "a structured unit's weights")
    return removed


def structured_walk(
    model: nn.Module,
    adapter: DecoderAdapter,
    method: StructuredMethod,
    plan: Mapping[str, float],
    batches: Sequence[torch.Tensor],
    device: torch.device | str = "cpu",
    reconstruct: bool = False,
    keep_heads: int | None = None,
    lam: float = RIDGE_LAMBDA,
    progress: bool = True,
    store: BlockStore | None = None,
    ranks: Ranks | None = None,
) -> list[UnitRecord]:
    """Remove heads and FFN channels of every block in place as ``plan`` (``{unit: ratio}``) says. ``store``:
    where the blocks come from and go (default: ``model``'s, in memory; `prune.stream.StreamedBlocks` reads
    each from the shards and writes it, cut, to the output). ``ranks`` (under torchrun): each rank calibrates
    its share of ``batches``; a block's head search runs on one rank and its channel search on the next
    (they follow each other: the channels are calibrated through the cut attention), the choice broadcast."""
    ranks = ranks if ranks is not None else Ranks()
    needs = tuple(sorted(set(method.needs) | ({"hessian"} if reconstruct else set())))
    blocks = adapter.blocks(model)  # the shapes only (a streamed model's are on the meta device)
    store = store if store is not None else InMemoryBlocks(model, adapter)
    counts = [
        block_counts(plan[a], plan[m], block_shape(b), a, keep_heads)
        for b, (a, m) in ((b, unit_names(adapter.block_prefix(i))) for i, b in enumerate(blocks))
    ]  # every block checked before any work
    mine = [batches[i] for i in ranks.share(len(batches))]
    inputs = capture_block_inputs(model, adapter, mine, device, store.keep)
    records: list[UnitRecord] = []
    for index in tqdm(range(len(store)), desc=f"{method.name} blocks", disable=not progress):
        block = store.enter(index, device)
        shape = block_shape(block)
        attn_name, mlp_name = unit_names(adapter.block_prefix(index))
        n_heads, n_channels = counts[index]

        start = time.perf_counter()
        heads: list[int] = []
        if n_heads:
            heads = _prune_unit(
                block, block.self_attn.o_proj, needs, inputs, device,
                lambda W, s: method.heads(W, s, n_heads, shape.head_dim, shape.kv_heads),
                lambda r: head_columns(r, shape.head_dim), reconstruct, lam, ranks, (2 * index) % ranks.world,
            )  # fmt: skip
            cut_heads(block.self_attn, [h for h in range(shape.heads) if h not in set(heads)])
        records.append(UnitRecord(attn_name, plan[attn_name], heads, shape.heads, shape.heads - len(heads),
                                  time.perf_counter() - start))  # fmt: skip

        start = time.perf_counter()
        channels: list[int] = []
        if n_channels:
            channels = _prune_unit(
                block, block.mlp.down_proj, needs, inputs, device,
                lambda W, s: method.channels(W, s, n_channels),
                lambda r: torch.tensor(r, dtype=torch.long), reconstruct, lam, ranks, (2 * index + 1) % ranks.world,
            )  # fmt: skip
            gone = set(channels)
            cut_channels(block.mlp, [c for c in range(shape.intermediate) if c not in gone])
        records.append(UnitRecord(mlp_name, plan[mlp_name], channels, shape.intermediate,
                                  shape.intermediate - len(channels), time.perf_counter() - start))  # fmt: skip

        for inp, out in zip(inputs, run_block(block, inputs, device, store.keep)):
            inp.hidden = out
        store.leave(index, block, {})
    return records
