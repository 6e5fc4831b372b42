"""The ``slimpack`` command line: `main`, the `Command` registry, the argument groups every package shares
(calibration data, evaluation, output, the pruning spec), and the core's own commands: ``prune``, ``plan``,
``inspect``, ``report``.

Higher packages define their commands in their own ``cli.py`` (``quantize``, ``check``: `quant.cli`; ``export``:
`export.cli`; ``eval`` (perplexity, and zero-shot tasks on any engine), ``verify``, ``bench``, ``run``:
`runtime_bench.cli`, whose ``main`` is the console script); `COMMANDS` lists them all as pyproject.toml's entry
points ``slimpack.commands`` (`prune.registry`). Each command parses its
arguments into the package's config dataclasses — the pruning spec through `prune_spec`, the one parser of it — and calls the package API. Errors a user can fix
are printed as one line on stderr (exit 2) and nothing is written.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from prune.api import PlanConfig, PruneConfig, plan, prune
from prune.data import DataSpec
from prune.errors import SlimpackError
from prune.inspect import inspect_dir
from prune.io import write_json_atomic
from prune.manifest import EvalRecord, Manifest
from prune.models import model_location
from prune.paths import Output, check_writes, labelled_path
from prune.plots import perplexity_bars
from prune.ranks import DEFAULT_TIMEOUT_S, Ranks, RanksLost
from prune.registry import Registry
from prune.report import RESULT_TABLES, pivot_table, results_table, sparsity_table, summarize
from prune.spec import (
    PROTOCOLS,
    STREAM_DTYPES,
    EvalSpec,
    Evaluation,
    Job,
    PruneSpec,
    StreamSpec,
    StructuredSpec,
    asked_store,
    parse_options,
    protocol,
)

log = logging.getLogger("slimpack")


class Command(Protocol):
    help: str
    distributed: bool  # runs under torchrun on several ranks (the others are refused there, `main`)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


COMMANDS: Registry[type[Command]] = Registry("command", "slimpack.commands")  # pyproject.toml lists them


class Reads(argparse.Action):
    """A path argument the command reads (``kind``: ``model`` — a directory, hub id or alias; ``path`` — a file
    or directory, when one exists by that name; ``labelled`` — a path, or ``NAME=PATH``). Every output is checked apart from it (`prune.paths`)."""

    def __init__(self, option_strings: Sequence[str], dest: str, kind: str = "path", **kwargs: Any) -> None:
        self.kind = kind
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)

    def locate(self, value: Any) -> Path | None:
        """Where the input ``value`` lies on this machine (None: nowhere yet, e.g. a dataset name)."""
        if self.kind == "labelled":  # NAME=PATH or PATH (`prune.paths.labelled_path`)
            value = labelled_path(str(value))[1]
        return model_location(str(value)) if self.kind == "model" else Path(value) if Path(value).exists() else None


class Writes(argparse.Action):
    """A path argument the command writes: a ``file`` or a ``dir``, and what is written ``beside`` it
    (``(suffix, kind)``: a plan's ``.png``). `main` checks each with `prune.paths.check_writes` before the
    command runs — the one rule of which paths may be written."""

    def __init__(
        self, option_strings: Sequence[str], dest: str, kind: str = "file",
        beside: tuple[tuple[str, str], ...] = (), **kwargs: Any,
    ) -> None:  # fmt: skip
        self.kind, self.beside = kind, beside
        kwargs.setdefault("type", Path)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)

    def outputs(self, value: Any) -> list[Output]:
        option = max(self.option_strings, key=len) if self.option_strings else self.dest
        path = Path(value)
        beside = [] if path.name in ("", "..") else [Output(option, path.with_suffix(s), k) for s, k in self.beside]
        return [Output(option, path, self.kind), *beside]


def declared_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[Path], list[Output]]:
    """The inputs and outputs the parsed command line names (its `Reads` and `Writes`, sub-commands included)."""
    inputs: list[Path] = []
    outputs: list[Output] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                more_in, more_out = declared_paths(chosen, args)
                inputs, outputs = inputs + more_in, outputs + more_out
            continue
        value = getattr(args, action.dest, None)
        values = [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]
        if isinstance(action, Reads):
            inputs += [p for v in values if (p := action.locate(v)) is not None]
        elif isinstance(action, Writes):
            outputs += [o for v in values for o in action.outputs(v)]
    return inputs, outputs


class OutputEvaluation(Protocol):
    """Arguments an upper floor adds to every model-writing command for a further evaluation of its output
    (zero-shot tasks: `runtime_bench.cli`), and the `Evaluation` they ask for (None: not asked)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def evaluation(self, args: argparse.Namespace) -> Evaluation | None: ...


OUTPUT_EVALUATIONS: Registry[type[OutputEvaluation]] = Registry("output evaluation", "slimpack.output_evaluations")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("calibration data")
    g.add_argument(
        "--dataset", action=Reads, default="offline", help="offline | wikitext2 | c4 | ptb | PATH to a text file"
    )
    g.add_argument("--nsamples", type=int, default=32, help="calibration windows (default 32)")
    g.add_argument("--seqlen", type=int, default=512, help="tokens per calibration/eval window (default 512)")
    g.add_argument("--seed", type=int, default=0, help="seed of the calibration window offsets")


def data_spec(args: argparse.Namespace, protocol_name: str | None = None) -> DataSpec:
    """The calibration of the command line, or of the perplexity protocol ``protocol_name`` (``--protocol``,
    with the command's ``--seed``)."""
    if protocol_name:
        return replace(protocol(protocol_name).calibration, seed=args.seed)
    return DataSpec(args.dataset, args.nsamples, args.seqlen, args.seed)


def add_eval_arguments(parser: argparse.ArgumentParser, windows_default: int | None = 40) -> None:
    g = parser.add_argument_group("evaluation")
    g.add_argument("--eval-dataset", action=Reads, default=None, help="text to evaluate on (default: --dataset)")
    g.add_argument("--windows", type=int, default=windows_default, help="evaluation windows (default 40; 0 = all)")
    g.add_argument("--eval-batch-size", type=int, default=1)
    g.add_argument(
        "--protocol", default=None, metavar="NAME",
        help="a paper's perplexity protocol; replaces the evaluation's dataset, seqlen and windows (and the "
        "calibration's, where the command calibrates): " + ", ".join(PROTOCOLS),
    )  # fmt: skip


def eval_spec(args: argparse.Namespace) -> EvalSpec:
    if args.protocol:
        return replace(protocol(args.protocol).eval, batch_size=args.eval_batch_size)
    return EvalSpec(
        dataset=args.eval_dataset or args.dataset,
        seqlen=args.seqlen,
        windows=args.windows or None,
        batch_size=args.eval_batch_size,
    )


def add_output_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """Device, output directory, --overwrite, --eval and the data/eval groups of a model-writing command."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", action=Writes, kind="dir", required=True, help=f"output {what} directory")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--eval", action="store_true", help=f"also measure the {what}'s perplexity")
    g = parser.add_argument_group(
        "store (chosen from the model's size: streamed when the whole fp32 model would not fit the memory "
        "available, or when streaming saves ≥ 1 GiB; see prune/store.py)"
    )
    add_store_arguments(g)
    g.add_argument(
        "--dtype",
        default=None,
        help=f"streamed output dtype, {' | '.join(STREAM_DTYPES)} (default: the source's; implies --stream)",
    )
    g.add_argument(
        "--shard-size",
        type=float,
        default=2048,
        metavar="MIB",
        help="streamed output shard size (MiB; implies --stream)",
    )
    g.add_argument("--max-memory", type=float, default=None, metavar="MIB",
                   help="the memory budget: the store is chosen against it, and a streamed run whose estimated peak exceeds it is refused before any work")  # fmt: skip
    g.add_argument("--offload-dir", action=Writes, kind="dir", type=str, default=None, metavar="DIR",
                   help="keep the calibration activations in files here when they would exceed "
                   "--max-memory (always, without it; implies --stream)")  # fmt: skip
    add_data_arguments(parser)
    add_eval_arguments(parser)
    for name in OUTPUT_EVALUATIONS.names():
        OUTPUT_EVALUATIONS.get(name)().add_arguments(parser)


def add_store_arguments(group: Any) -> None:
    """``--stream`` / ``--resident``: force the store that `prune.store.choose_store` would choose."""
    force = group.add_mutually_exclusive_group()
    force.add_argument("--stream", action="store_true",
                       help="force the streamed store: one block in memory at a time, read from the shards")  # fmt: skip
    force.add_argument(
        "--resident", action="store_true", help="force the resident store: the whole model loaded in fp32"
    )


def asked_stream(args: argparse.Namespace) -> bool | None:
    """``--stream`` → True, ``--resident`` → False, neither → None (chosen from the model's size)."""
    return True if args.stream else False if args.resident else None


def job(args: argparse.Namespace, model: str) -> Job:
    """The `Job` of a model-writing command (see `add_output_arguments`)."""
    streamed_only = {"--dtype": args.dtype, "--offload-dir": args.offload_dir,
                     "--shard-size": args.shard_size if args.shard_size != 2048 else None}  # fmt: skip
    given = [flag for flag, value in streamed_only.items() if value is not None]
    if args.resident and given:
        raise SlimpackError(f"{given[0]} applies to the streamed store; drop it or drop --resident")
    store = "stream" if args.stream or given else asked_store(asked_stream(args))
    stream = StreamSpec(args.dtype, args.shard_size, args.max_memory, args.offload_dir)
    asked = (OUTPUT_EVALUATIONS.get(name)().evaluation(args) for name in OUTPUT_EVALUATIONS.names())
    return Job(model=model, out=args.out, data=data_spec(args, args.protocol), device=args.ranks.device(args.device),
               overwrite=args.overwrite, evaluate=eval_spec(args) if args.eval else None, progress=not args.quiet,
               stream=stream, evaluations=tuple(e for e in asked if e is not None), store=store, ranks=args.ranks)  # fmt: skip


def add_prune_arguments(
    parser: argparse.ArgumentParser,
    *,
    method_flag: str = "--method",
    option_flags: tuple[str, ...] = ("-O", "--option"),
    allocation_default: str | None = None,
    sparsity: bool = True,
    plan: bool = True,
    structured: bool = True,
    what: str = "",
) -> None:
    """The pruning spec's arguments (`PruneSpec`); ``prune_spec`` reads them back. Flags a command does not
    offer get their spec default."""
    g = parser.add_argument_group(f"pruning{what}")
    methods = "magnitude | wanda (default) | sparsegpt | pruner-zero | pgz"
    g.add_argument(method_flag, dest="prune_method", default=None,
                   help=methods + ("; --structured: slimgpt (default) | activation-l2" if structured else ""))  # fmt: skip
    g.add_argument(*option_flags, dest="prune_option", action="append", default=[],
                   help="method option KEY=VALUE, e.g. percdamp=0.01")  # fmt: skip
    if sparsity:
        g.add_argument("--sparsity", type=float, default=0.5, help="target sparsity in [0, 1)")
    g.add_argument("--pattern", default="unstructured", help="'unstructured' or N:M (N zeros per M), e.g. 2:4")
    g.add_argument("--scope", default=None, help="row (per-output) | layer; default: the method's paper")
    shown = allocation_default or ("uniform; --structured: log-increase" if structured else "uniform")
    g.add_argument("--allocation", default=allocation_default,
                   help=f"layerwise sparsity: uniform | owl | dlp | pi | log-increase | rl-search (default {shown})")  # fmt: skip
    g.add_argument("-A", "--alloc-option", action="append", default=[], help="allocation option KEY=VALUE")
    if plan:
        g.add_argument(
            "--plan", action=Reads, type=Path, default=None, help="a sparsity plan JSON (from `slimpack plan`)"
        )
        g.add_argument("--true-sequential", action="store_true", help="calibrate qkv → o → up/gate → down in turn")
    if structured:
        s = parser.add_argument_group("structured pruning (whole attention heads and FFN channels)")
        s.add_argument("--structured", action="store_true", help="remove heads/channels: the model gets smaller")
        s.add_argument("--reconstruct", action="store_true", help="SparsitySolver's ridge compensation (Eq. 8)")
        s.add_argument("--ridge-lambda", type=float, default=None, help="λ of the ridge regression (default 0.9)")
        s.add_argument("--keep-heads", type=int, default=None, help="query heads each layer keeps (GQA: × KV heads)")
    parser.set_defaults(
        **({} if sparsity else {"sparsity": PruneSpec.sparsity}),
        **({} if plan else {"plan": None, "true_sequential": False}),
        **({} if structured else {"structured": False, "reconstruct": False, "ridge_lambda": None, "keep_heads": None}),
    )


def prune_spec(args: argparse.Namespace) -> PruneSpec:
    """The one parser of the pruning spec's arguments (`add_prune_arguments`)."""
    structured = None
    if args.structured:
        lam = StructuredSpec.ridge_lambda if args.ridge_lambda is None else args.ridge_lambda
        structured = StructuredSpec(args.reconstruct, lam, args.keep_heads)
    else:
        given = (("--reconstruct", args.reconstruct), ("--ridge-lambda", args.ridge_lambda is not None),
                 ("--keep-heads", args.keep_heads is not None))  # fmt: skip
        unused = [flag for flag, value in given if value]
        if unused:
            raise SlimpackError(f"{unused[0]} applies to structured pruning only; add --structured")
    return PruneSpec(
        method=args.prune_method,
        sparsity=args.sparsity,
        pattern=args.pattern,
        scope=args.scope,
        allocation=args.allocation,
        allocation_options=parse_options(args.alloc_option),
        options=parse_options(args.prune_option),
        plan=args.plan,
        true_sequential=args.true_sequential,
        structured=structured,
    )


def write_json(path: Path | None, data: Any) -> None:
    if path is not None:
        write_json_atomic(path, data)
        log.info("wrote %s", path)


def manifest_line(m: Any, out: Path) -> str:
    """The one-line summary of a written model directory (its `prune.manifest.Manifest`)."""
    if m.structure is not None:
        before, after = m.structure.parameters.before.total, m.structure.parameters.after.total
        line = f"{m.method.name} structured ({m.allocation_name}): {before:,} → {after:,} parameters "
        line += f"({100 * m.sparsity.overall:.1f} % of the blocks)"
    else:
        line = f"{m.method.name} {m.pattern}: sparsity {100 * m.sparsity.overall:.2f} %"
    if m.quantization is not None:
        q = m.quantization
        line += f", {q.bits}-bit g{q.group_size}, pruned zeros kept {q.pruned_zeros.kept}/{q.pruned_zeros.pruned}"
    line += (
        f", {m.timing.seconds:.1f} s, peak RSS {m.timing.peak_rss_mib:.0f} MiB, {(m.size_bytes or 0) / 2**20:.1f} MiB"
    )
    if m.perplexity is not None:
        line += f", perplexity {m.perplexity:.3f}"
    for summary in m.evaluation.summaries() if m.evaluation is not None else []:  # further evaluations say their own
        line += f", {summary}"
    return f"{line} → {out}"


class PruneCommand:
    distributed = True
    help = "prune a model layer by layer and write an HF model directory + slimpack.json"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", action=Reads, kind="model", required=True,
                            help="HF model directory, hub id, or alias (smollm2-135m)")  # fmt: skip
        add_prune_arguments(parser)
        add_output_arguments(parser, "pruned model")

    def run(self, args: argparse.Namespace) -> int:
        manifest = prune(PruneConfig(job(args, args.model), prune_spec(args)))
        if manifest is not None:  # None: a rank that does not write (under torchrun)
            print(manifest_line(manifest, args.out))
        return 0


class PlanCommand:
    distributed = False
    help = "compute a layerwise sparsity plan (JSON + PNG) without pruning"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", action=Reads, kind="model", required=True,
                            help="HF model directory, hub id, or alias (smollm2-135m)")  # fmt: skip
        parser.add_argument("--sparsity", type=float, default=0.5, help="target sparsity in [0, 1)")
        parser.add_argument("--pattern", default="unstructured", help="'unstructured' or N:M for a mixed N:M plan")
        parser.add_argument(
            "--allocation", default="uniform", help="uniform | owl | dlp | pi | log-increase | rl-search"
        )
        parser.add_argument("-A", "--alloc-option", action="append", default=[], help="allocation option KEY=VALUE")
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--out", action=Writes, beside=((".png", "file"),), required=True,
                            help="plan JSON to write (a PNG is written beside it)")  # fmt: skip
        parser.add_argument("--overwrite", action="store_true")
        add_store_arguments(parser)
        add_data_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        spec = PruneSpec(sparsity=args.sparsity, pattern=args.pattern, allocation=args.allocation,
                         allocation_options=parse_options(args.alloc_option))  # fmt: skip
        result = plan(PlanConfig(args.model, args.out, spec, data_spec(args), args.device, args.overwrite,
                                 not args.quiet, asked_stream(args)))  # fmt: skip
        ratios = ", ".join(f"{r:.3f}" for r in result.block_ratios)
        print(f"{result.allocation} plan, sparsity {result.sparsity:.3f}: per block [{ratios}] → {args.out}")
        return 0


class InspectCommand:
    distributed = False
    help = "measured sparsity per module of a slimpack output, checked against its manifest"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("directory", action=Reads, type=Path)
        parser.add_argument("--json", action=Writes, default=None, help="also write the report to this JSON file")

    def run(self, args: argparse.Namespace) -> int:

        report = inspect_dir(args.directory, progress=not args.quiet)
        write_json(args.json, report.to_dict())
        print(sparsity_table(report.sparsity))
        files = report.files
        print(f"\nmethod: {report.method}  pattern: {report.pattern}")
        if files.note is not None:
            print(f"files: not verified — {files.note}")
            return 0
        for what, names in (("changed", files.changed), ("missing", files.missing), ("unlisted", files.unlisted)):
            if names:
                print(f"files {what} since the manifest: {', '.join(names)}")
        print(f"files verified against the manifest: {files.verified}")
        return 0 if files.verified else 1


class ReportCommand:
    distributed = False
    help = "one markdown table from slimpack eval JSON files and prune / quantize output directories"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("results", action=Reads, nargs="+", type=Path,
                            help="eval .json files and/or pruned model directories")  # fmt: skip
        parser.add_argument("--png", action=Writes, default=None, help="also draw perplexity per method and setting")
        parser.add_argument("--title", default="", help="title of the --png figure")
        parser.add_argument("--json", action=Writes, default=None, help="also write the runs' key figures as JSON")
        parser.add_argument("--pivot", action="store_true", help="perplexity per (method, allocation) × setting")
        parser.add_argument("--series", default="method", choices=["method", "allocation"], help="bars of --png")

    def run(self, args: argparse.Namespace) -> int:

        results: list[Any] = []
        for path in args.results:
            if path.is_dir():
                results.append(Manifest.read(path))
            elif path.is_file():
                results.append(EvalRecord.read(path))
            else:
                raise SlimpackError(
                    f"result {str(path)!r} does not exist; pass eval JSON files or slimpack output directories"
                )
        # a later stage's runs have their own columns (a table registered by that stage's package)
        later = sorted({r.stage for r in results} & set(RESULT_TABLES.names()))
        if later:
            print(RESULT_TABLES.get(later[0])(results))
        else:
            print(pivot_table(results) if args.pivot else results_table(results))
        write_json(args.json, [summarize(r) for r in results])
        if args.png is not None:
            perplexity_bars(results, args.png, args.title, args.series)
            log.info("wrote %s", args.png)
        return 0


def quiet_libraries() -> None:
    """Silence the progress bars transformers/huggingface_hub print on load."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slimpack", description="Sparse (and 4-bit) artifacts from dense HF causal LMs."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings and errors only")
    parser.add_argument("--rank-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help="under torchrun: how long a rank waits for the others before it stops, naming itself "
                        "(default %(default)s; longer than the longest OBS sweep of one linear)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS.names():
        command = COMMANDS.get(name)()
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(handler=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.rank_timeout <= 0:
        parser.error(f"--rank-timeout {args.rank_timeout} must be > 0 seconds")
    if Ranks.launched() and not args.handler.distributed:
        print(f"slimpack: error: `slimpack {args.command}` runs in one process; start it without torchrun (the "
              f"commands that run on several ranks: {', '.join(distributed_commands())})", file=sys.stderr)  # fmt: skip
        return 2
    try:
        args.ranks = Ranks.join(vars(args).get("device", "cpu"), args.rank_timeout)
    except RuntimeError as err:
        print(f"slimpack: error: could not join the other ranks ({str(err).strip().splitlines()[0]})", file=sys.stderr)
        return 1
    if not args.ranks.writes:  # only rank 0 speaks: the others' results are rank 0's
        args.quiet = True
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 — for the life of the process
    signal.signal(signal.SIGTERM, partial(_terminated, args.ranks))  # torchrun stops the other ranks with SIGTERM
    try:
        return _run(parser, args, argv)
    finally:
        args.ranks.leave()


def _terminated(ranks: Ranks, signum: int, frame: Any) -> None:
    """SIGTERM: one line, then the ``finally`` blocks (a temporary output is removed) and exit 143."""
    who = f"rank {ranks.rank} of {ranks.world}: " if ranks.world > 1 else ""
    why = " (torchrun stops every rank when one fails)" if ranks.world > 1 else ""
    print(f"slimpack: error: {who}stopped by SIGTERM{why}; nothing was written", file=sys.stderr)
    raise SystemExit(128 + signum)


def distributed_commands() -> list[str]:
    return [name for name in COMMANDS.names() if COMMANDS.get(name)().distributed]


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)  # library warnings go through logging: shown with -v only
    if not args.verbose:  # the ONNX exporter's passes log every rewrite at INFO, and warn of optional packages
        for name in ("onnx_ir", "onnxscript", "torch.onnx", "py.warnings"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if args.quiet:
        quiet_libraries()
    try:
        args.ranks.same_arguments(argv)  # before any work: every rank was given the same command line
        inputs, outputs = declared_paths(parser, args)
        if args.ranks.writes:
            check_writes(outputs, inputs)  # the one rule of which paths may be written, before any work
        return args.handler.run(args)
    except SlimpackError as err:
        print(f"slimpack: error: {err}", file=sys.stderr)
        return 2
    except RanksLost as err:
        print(f"slimpack: error: {err}; nothing was written", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        where = f" writing {err.filename!r}" if err.filename else ""
        print(f"slimpack: error: {err.strerror}{where}; nothing was written (outputs are renamed into place only "
              "when complete) — free space or choose a writable --out", file=sys.stderr)  # fmt: skip
        return 2
