"""The specs every stage shares, each declared once: what to prune (`PruneSpec`), how to evaluate (`EvalSpec`)
and what a model-writing stage reads and writes (`Job`). Calibration data is `prune.data.DataSpec`.

The CLI (`prune.cli.prune_spec`), the recipe of ``slimpack run`` and ``slimpack bench sweep`` all parse into
these frozen dataclasses; `PruneSpec.resolve` turns one into built objects (method, pattern, allocator, plan)
and is the single place where a pruning setting is checked — before any model is loaded.

This module is plain data: the registries it resolves against are imported only inside `resolve`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from prune.allocation import ALLOCATORS, read_plan_file
from prune.data import DataSpec, check_dataset
from prune.errors import SlimpackError
from prune.io import check_output_dir
from prune.masks import Pattern
from prune.methods import METHODS
from prune.model_config import check_context
from prune.models import resolve_model_path
from prune.paths import Output, check_writes
from prune.ranks import Ranks
from prune.structured import STRUCTURED


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``["blocksize=128", "percdamp=0.01"]`` → ``{"blocksize": 128, "percdamp": 0.01}``."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SlimpackError(f"bad option {item!r}; use KEY=VALUE, e.g. -O percdamp=0.01")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@dataclass(frozen=True)
class EvalSpec:
    """Perplexity protocol: which text, window length, how many windows (None = all), batch size."""

    dataset: str = "offline"
    seqlen: int = 512
    windows: int | None = 40
    batch_size: int = 1

    def check(self) -> None:
        """One line, before any work, for a protocol that cannot give a perplexity."""
        if self.seqlen < 2:
            raise SlimpackError(f"eval seqlen {self.seqlen} leaves no token to predict; pass a seqlen ≥ 2")
        if self.windows is not None and self.windows < 1:
            raise SlimpackError(
                f"eval windows {self.windows} must be ≥ 1 (all windows: null in a recipe, 0 on the command line)"
            )
        if self.batch_size < 1:
            raise SlimpackError(f"eval batch size {self.batch_size} must be ≥ 1")
        check_dataset(self.dataset)


@dataclass(frozen=True)
class PerplexityProtocol:
    """A paper's perplexity protocol, by name: its evaluation (text, window length, how many windows) and the
    calibration it is paired with. ``--protocol NAME`` replaces the command's own dataset / seqlen / windows
    (and, where it calibrates, nsamples) with these."""

    eval: EvalSpec
    calibration: DataSpec
    used_by: str


PROTOCOLS: dict[str, PerplexityProtocol] = {
    "wikitext2-2048": PerplexityProtocol(
        EvalSpec("wikitext2", 2048, None), DataSpec("c4", 128, 2048, 0),
        "SparseGPT §4 and Wanda §4 (LLaMA-1, OPT): WikiText-2 raw test, every 2048-token window; calibration "
        "128 × 2048 tokens of C4",
    ),
    "wikitext2-4096": PerplexityProtocol(
        EvalSpec("wikitext2", 4096, None), DataSpec("c4", 128, 4096, 0),
        "Wanda's README for LLaMA-2 (its model.seqlen, 4096): 5.12 for dense LLaMA-2-7B, against 5.47 with "
        "2048-token windows",
    ),
    "c4-256x2048": PerplexityProtocol(
        EvalSpec("c4", 2048, 256), DataSpec("c4", 128, 2048, 0),
        "SparseGPT's C4: the first 256 windows of 2048 tokens of the first 1100 validation documents, joined",
    ),
    "ptb-2048": PerplexityProtocol(
        EvalSpec("ptb", 2048, None), DataSpec("c4", 128, 2048, 0),
        "SparseGPT's PTB: the test sentences joined, every 2048-token window",
    ),
    "offline-512": PerplexityProtocol(
        EvalSpec("offline", 512, 40), DataSpec("offline", 32, 512, 0),
        "this project's tables (docs/results/README.md): CPython's pydoc topics, 40 × 512; calibration 32 × 512",
    ),
}  # fmt: skip


def protocol(name: str) -> PerplexityProtocol:
    """The protocol registered as ``name`` (one line naming the known ones otherwise)."""
    if name not in PROTOCOLS:
        raise SlimpackError(f"unknown --protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


@dataclass(frozen=True)
class StructuredSpec:
    """Structured pruning (whole heads and FFN channels): SparsitySolver's ridge compensation and its λ,
    and an optional fixed count of query heads per layer."""

    reconstruct: bool = False
    ridge_lambda: float = 0.9  # = prune.structured.reconstruct.RIDGE_LAMBDA (the paper's λ; a test holds them equal)
    keep_heads: int | None = None


def check_sparsity(sparsity: float) -> float:
    """Validate a sparsity (the fraction of weights pruned); it must lie in [0, 1)."""
    if not 0.0 <= sparsity < 1.0:
        raise SlimpackError(f"sparsity {sparsity} is outside [0, 1); pass e.g. --sparsity 0.5 for 50 %")
    return float(sparsity)


@dataclass(frozen=True)
class PruneSpec:
    """What to prune and how: method (+ options), sparsity, pattern and scope, allocation (+ options) or a plan
    file, true-sequential calibration, and — when set — structured pruning. ``None`` method / allocation
    mean the defaults of the kind of pruning (`method_name`, `allocation_name`)."""

    method: str | None = None
    sparsity: float = 0.5
    pattern: str = "unstructured"
    scope: str | None = None
    allocation: str | None = None
    allocation_options: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    plan: Path | None = None
    true_sequential: bool = False
    structured: StructuredSpec | None = None

    @property
    def method_name(self) -> str:
        return self.method or ("slimgpt" if self.structured is not None else "wanda")

    @property
    def allocation_name(self) -> str:
        return self.allocation or ("log-increase" if self.structured is not None else "uniform")

    def resolve(self) -> Resolved:
        """Build the method, pattern, allocator and plan; any bad value is a one-line `SlimpackError`."""
        plan = read_plan_file(self.plan) if self.plan is not None else None
        allocator = None if plan is not None else ALLOCATORS.build(self.allocation_name, self.allocation_options)
        if self.structured is None:
            method = METHODS.build(self.method_name, self.options)
            pattern = Pattern.parse(self.pattern, self.scope or method.default_scope)
            sparsity = float(pattern.fixed_sparsity if pattern.is_nm else check_sparsity(self.sparsity))
            return Resolved(self, method, pattern, sparsity, allocator, plan, self.allocation_name)

        if self.pattern != "unstructured" or self.scope or self.true_sequential:
            raise SlimpackError("--pattern, --scope and --true-sequential are for unstructured pruning; drop them")
        if not self.structured.ridge_lambda >= 0:
            raise SlimpackError(f"--ridge-lambda {self.structured.ridge_lambda} must be ≥ 0 (the paper uses 0.9)")
        if allocator is not None and not allocator.structured:
            usable = [n for n in ALLOCATORS.names() if ALLOCATORS.get(n).structured]
            raise SlimpackError(
                f"allocation {self.allocation_name!r} works on weight matrices only; for --structured choose one "
                f"of: {', '.join(usable)}"
            )
        method = STRUCTURED.build(self.method_name, self.options)
        return Resolved(self, method, Pattern.parse("unstructured"), float(check_sparsity(self.sparsity)),
                        allocator, plan, self.allocation_name)  # fmt: skip

    def describe(self) -> str:
        """``"wanda 50 % (dlp)"`` / ``"sparsegpt 2:4"`` / ``"slimgpt structured 20 % (log-increase)"``."""
        kind = " structured" if self.structured is not None else ""
        setting = self.pattern if ":" in self.pattern else f"{100 * self.sparsity:.0f} %"
        source = f"plan {self.plan}" if self.plan is not None else self.allocation_name
        return f"{self.method_name}{kind} {setting} ({source})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "plan": str(self.plan) if self.plan is not None else None}


@dataclass(frozen=True)
class Resolved:
    """A `PruneSpec` with its objects built: the layer (or structured) method, the pattern, the sparsity, and
    the allocator — or the plan read from the spec's plan file, as ``(plan, source name)``."""

    spec: PruneSpec
    method: Any
    pattern: Any
    sparsity: float
    allocator: Any
    plan: tuple[dict[str, float], str] | None
    allocation_name: str = "uniform"  # the spec's (`PruneSpec.allocation_name`)


@dataclass(frozen=True)
class StreamSpec:
    """The streamed path (`prune.stream`): the output's dtype (None: the source's), shard size, memory budget,
    and where calibration activations go when they would exceed it (`prune.stream.Spill`)."""

    dtype: str | None = None
    shard_mib: float = 2048
    max_memory_mib: float | None = None  # refuse a run whose estimated peak exceeds it
    offload_dir: str | None = None  # calibration activations spilled here when they would exceed max_memory_mib

    def check(self) -> None:
        if self.max_memory_mib is not None and not 0 < self.max_memory_mib < math.inf:
            raise SlimpackError(f"--max-memory {self.max_memory_mib} MiB must be a number > 0, e.g. 8000")
        if self.dtype is not None and self.dtype not in STREAM_DTYPES:
            raise SlimpackError(f"--dtype {self.dtype!r} is not one of {', '.join(STREAM_DTYPES)}")
        if not 1 / 1024 <= self.shard_mib <= MAX_SHARD_MIB:
            raise SlimpackError(
                f"--shard-size {self.shard_mib} MiB must be a number from 1/1024 to {MAX_SHARD_MIB} (MiB), e.g. 2048"
            )
        if self.offload_dir is not None:
            check_writes([Output("--offload-dir", Path(self.offload_dir), "dir")], [])

    def torch_dtype(self) -> Any:
        import torch

        return None if self.dtype is None else getattr(torch, self.dtype)


STREAM_DTYPES = ("float32", "bfloat16", "float16")
STORES = ("auto", "stream", "resident")  # where a model is held (`prune.store`): chosen, or forced


def section_stream(section: StreamSpec | None) -> bool | None:
    """A recipe's or sweep's ``stream:`` section as a step's ``stream`` argument: True (streamed, as the section
    asks) or None (no section: each step's store is chosen from the model's size, `prune.store`)."""
    return True if section is not None else None


def asked_store(stream: bool | None) -> str:
    """A command's ``stream`` argument as a store: None → ``auto``, True → ``stream``, False → ``resident``."""
    return "auto" if stream is None else "stream" if stream else "resident"


MAX_SHARD_MIB = 2**20  # 1 TiB: a shard size beyond any disk (inf, 1e300) is a typing error


class Evaluation(Protocol):
    """A further evaluation of a stage's output beside perplexity, asked for by an upper floor (zero-shot tasks:
    `runtime_bench.zeroshot.ZeroShotEvaluation`); its result is the manifest's ``evaluation[name]``."""

    name: str

    def check(self) -> None:
        """Refuse bad settings with one line, before any work."""
        ...

    def settings(self) -> dict[str, Any]:
        """What determines the result (JSON data, for a step's cache key)."""
        ...

    def run(self, store: Any, written: Path) -> dict[str, Any]:
        """Evaluate the stage's output as ``store`` (`prune.store.ModelStore`) holds it after the stage
        (`prune.store.ModelStore.forward` of ``written``: what ``--eval``'s perplexity measures). A result with a
        ``summary`` string is shown in the stage's one-line summary."""
        ...


@dataclass(frozen=True)
class Job:
    """What a model-writing stage reads and writes, and how: source model, output directory, calibration
    data, compute device, whether an existing output may be replaced, the evaluation (None: none), and
    whether the model is streamed block by block from its shards (None: loaded whole); ``evaluations``: further
    evaluations of the output (`Evaluation`), beside the perplexity of ``evaluate``."""

    model: str
    out: Path
    data: DataSpec = field(default_factory=DataSpec)
    device: str = "cpu"
    overwrite: bool = False
    evaluate: EvalSpec | None = None
    progress: bool = True
    stream: StreamSpec | None = None
    evaluations: tuple[Evaluation, ...] = ()
    store: str = "auto"  # auto | stream | resident (`prune.store`): ``stream`` is None after a resident choice
    ranks: Ranks = field(default_factory=Ranks, compare=False)  # this process under torchrun (`prune.ranks`)

    def rank_data(self) -> DataSpec:
        """The calibration this rank runs (under torchrun, its share of the samples, `prune.ranks.Ranks.share`):
        what a streamed walk's memory and time estimates and ``--max-memory`` count — per rank."""
        return replace(self.data, nsamples=max(1, len(self.ranks.share(self.data.nsamples))))

    def check(self, need: int, record: str) -> None:
        """Every setting, and the output (`prune.io.check_output_dir`: room for ``need`` bytes,
        `prune.store.output_size`; ``record``: the file naming an earlier output, `prune.manifest.MANIFEST`)."""
        if self.store not in STORES:
            raise SlimpackError(f"store {self.store!r} is not one of {', '.join(STORES)}")
        if self.stream is not None:
            self.stream.check()
        self.data.check()
        if self.evaluate is not None:
            self.evaluate.check()
        for evaluation in self.evaluations:
            evaluation.check()
        source = resolve_model_path(self.model)
        check_output_dir(Path(self.out), self.overwrite, [source], need, record=record)
        if self.stream is not None and self.stream.offload_dir is not None:  # the API's callers too (`prune.paths`)
            check_writes([Output("--offload-dir", Path(self.stream.offload_dir), "dir")], [source])
        check_context(
            source,
            {"--seqlen": self.data.seqlen, **({"--seqlen (eval)": self.evaluate.seqlen} if self.evaluate else {})},
        )

    def settings(self) -> dict[str, Any]:
        """What determines the output (for a step's cache key): everything but progress and overwrite."""
        return {"model": self.model, "out": str(self.out), "data": asdict(self.data), "device": self.device,
                "evaluate": asdict(self.evaluate) if self.evaluate else None,
                "stream": asdict(self.stream) if self.stream else None,
                **({"evaluations": {e.name: e.settings() for e in self.evaluations}} if self.evaluations else {})}  # fmt: skip
