"""The top floor of the ``slimpack`` command line: this package's commands (``eval``, ``verify``, ``bench``,
``run``) and the zero-shot option of the model-writing ones, and `main` (the console script), which hands over to
the core's `prune.cli.main` (every package's commands: pyproject.toml's entry points ``slimpack.commands``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.artifact import Artifact
from prune import cli as core
from prune.api import evaluate
from prune.cli import (
    Reads,
    Writes,
    add_data_arguments,
    add_eval_arguments,
    add_prune_arguments,
    add_store_arguments,
    asked_stream,
    eval_spec,
    write_json,
)
from prune.errors import SlimpackError
from prune.spec import StreamSpec
from runtime_bench.engines import engine_of, parse_engine_options
from runtime_bench.harness import BenchSpec, vocab_size
from runtime_bench.kernels import build_dir, isas
from runtime_bench.latency import TimingConfig, labelled_paths, time_paths
from runtime_bench.memory import peak_rss
from runtime_bench.pipeline.recipe import DEFAULT_RECIPE, load_recipe
from runtime_bench.pipeline.run import run_pipeline
from runtime_bench.pipeline.sweep import SweepConfig, sweep
from runtime_bench.report import table5
from runtime_bench.verify import Tolerance, VerifyConfig, verify
from runtime_bench.zeroshot import (
    PAPER_TASKS,
    TaskData,
    ZeroShotConfig,
    ZeroShotEvaluation,
    resolve_task_names,
    zeroshot,
)


class KernelsCommand:
    distributed = False
    help = "build slimpack's sparse CPU kernels (a no-op when up to date) and say which ISA paths this CPU runs"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def run(self, args: argparse.Namespace) -> int:
        print(f"slimpack sparse kernels built in {build_dir()} (ISA paths: {', '.join(isas())})")
        return 0


class VerifyCommand:
    distributed = True
    help = "check an exported artifact in its own runtime against the reference model (exit 1 beyond tolerance)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("artifact", action=Reads, type=Path, help="directory written by slimpack export")
        parser.add_argument("--reference", action=Reads, kind="model", required=True,
                            help="the in-framework model directory it came from")  # fmt: skip
        parser.add_argument(
            "--tolerance", type=float, default=0.01, help="max relative perplexity difference (default 0.01)"
        )
        parser.add_argument(
            "--token-match", type=float, default=1.0, help="min fraction of equal greedy tokens (default 1.0)"
        )
        parser.add_argument("--prompt", type=int, default=32, help="prompt tokens for the greedy check (default 32)")
        parser.add_argument("--tokens", type=int, default=32, help="greedy tokens to compare (default 32)")
        parser.add_argument("--dataset", action=Reads, default="offline", help="offline | wikitext2 | c4 | ptb | PATH")
        parser.add_argument("--seqlen", type=int, default=512)
        parser.add_argument("--json", action=Writes, default=None, help="also write the report to this JSON file")
        add_store_arguments(parser.add_argument_group(
            "the reference's store (chosen from its size, see prune/store.py; streamed, each greedy token reads "
            "every block, so keep --tokens small)"
        ))  # fmt: skip
        add_engine_arguments(parser.add_argument_group("the artifact's engine"))
        add_eval_arguments(parser, windows_default=8)

    def run(self, args: argparse.Namespace) -> int:
        if not args.ranks.writes:  # under torchrun rank 0 verifies (the artifact's runtime is one process)
            return 0
        report = verify(
            VerifyConfig(
                artifact=args.artifact,
                reference=args.reference,
                eval=eval_spec(args),
                tolerance=Tolerance(args.tolerance, args.token_match),
                prompt=args.prompt,
                tokens=args.tokens,
                threads=args.threads,
                progress=not args.quiet,
                stream=asked_stream(args),
                engine_options=parse_engine_options(args.engine_option),
            )
        )
        write_json(args.json, report.to_dict())
        print(report.table())
        return 0 if report.passed else 1


def add_threads_argument(group: Any, counts: tuple[int, ...] | None = None) -> None:
    """``--threads``, declared here only: one engine's thread count (default: the runtime's), or with ``counts``
    the thread counts a benchmark times, each its own interleaved run."""
    if counts is None:
        group.add_argument("--threads", type=int, default=None, help="engine threads (default: the runtime's)")
    else:
        group.add_argument("--threads", type=number_list(int, "threads"), default=counts, metavar="N[,N...]",
                           help="thread counts, each its own interleaved run (default "
                           f"{','.join(map(str, counts))})")  # fmt: skip


def add_engine_arguments(group: Any) -> None:
    """How an artifact's engine runs it (``verify``, ``eval --tasks``): its threads and constructor options."""
    add_threads_argument(group)
    group.add_argument("--engine-option", action="append", default=[], metavar="ENGINE.KEY=VALUE",
                       help="engine constructor option, e.g. deepsparse.kv_cache=decode-only (one compiled graph: "
                       "a model whose weights fit memory once)")  # fmt: skip


def number_list(kind: type, what: str) -> Any:
    """An argparse type: ``"0.1,0.2"`` → ``(0.1, 0.2)``; a bad item is a one-line error naming it."""

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(item) for item in text.split(",") if item.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad {what} {text!r}; use comma-separated numbers, e.g. 0.1,0.5"
            ) from None

    return parse


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("timing")
    g.add_argument("--prompt", type=int, default=128, help="prompt tokens before decoding (default 128)")
    g.add_argument("--tokens", type=int, default=32, help="decode steps timed per round (default 32)")
    g.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    g.add_argument("--warmup", type=int, default=1, help="discarded rounds first (default 1)")
    g.add_argument("--batch", type=int, default=4, help="also decode this many sequences at once (0: no)")


ART = "ART"  # `bench`'s sub-command for `bench ART [ART …]`: every first word but `sweep` and `memory` starts it
TIMING_USAGE = "%(prog)s ART [ART ...] [--engine NAME[,NAME...]] [--threads N[,N...]] [--json FILE] [timing options]"


class EveryWord(dict):
    """`BenchForms`'s choices as argparse checks the first word (before the action runs): every word names a form."""

    def __contains__(self, word: object) -> bool:
        return True


class BenchForms(argparse._SubParsersAction):
    """`bench`'s three forms: ``bench sweep …``, ``bench memory ART …``, and ``bench ART [ART …] …`` for any other
    first word (an artifact in a directory named ``sweep`` or ``memory`` is ``./sweep``, ``./memory``)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser = super().add_parser(name, **kwargs)
        self.choices = EveryWord(self._name_parser_map)
        return parser

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        if values[0] not in self._name_parser_map or values[0] == ART:
            values = [ART, *values]
        super().__call__(parser, namespace, values, option_string)


class BenchCommand:
    distributed = False
    help = (
        "benchmarks: `bench ART …` (chosen artifacts timed interleaved), `bench sweep` (speedup vs sparsity, DLP "
        "Table 5 layout) and `bench memory ART` (one artifact's peak RSS, in a fresh process)"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.register("action", "parsers", BenchForms)
        sub = parser.add_subparsers(dest="bench", required=True, metavar="{ART,sweep,memory}")
        parser.usage = (f"{TIMING_USAGE}\n       %(prog)s sweep [--model MODEL] [--sparsities S,...] [--engines E,...] …"
                        "\n       %(prog)s memory ART [--threads N] [--prompt P] [--tokens N] [--json FILE]")  # fmt: skip
        parser.epilog = ("`slimpack bench ART --help`, `slimpack bench sweep --help` and `slimpack bench memory --help` "
                         "list each form's options; an artifact in a directory named sweep or memory is ./sweep, "
                         "./memory.")  # fmt: skip
        t = sub.add_parser(
            ART, prog=parser.prog, usage=TIMING_USAGE,
            help="time these artifacts interleaved (the harness's protocol): prefill ms and decode ms/token per "
            "artifact and thread count",
            description="Time the ARTs interleaved (warm-up, then rounds in alternating order; medians and "
            "quartiles), one run per thread count; print the table and, with --json, write it.",
        )  # fmt: skip
        t.add_argument(
            "artifacts", action=Reads, kind="labelled", nargs="+", metavar="ART",
            help="an artifact of `slimpack export` (run in the engine its export.json names), a model directory "
            "(torch eager) or an ONNX model in optimum's layout (onnxruntime); PATH is labelled by its directory "
            "name (parents prepended where two share one), NAME=PATH by NAME",
        )  # fmt: skip
        t.add_argument(
            "--engine", type=lambda text: tuple(e.strip() for e in text.split(",") if e.strip()), default=(),
            metavar="NAME[,NAME...]",
            help="the engines you mean to time (e.g. onnxruntime,deepsparse): an ART that runs in another one is "
            "refused before any work (default: each ART in its own engine)",
        )  # fmt: skip
        add_threads_argument(t, counts=(2,))
        t.add_argument("--json", action=Writes, default=None, metavar="FILE",
                       help="also write the figures (cpu, spec, per artifact and thread count) to this JSON file")  # fmt: skip
        add_bench_arguments(t)
        p = sub.add_parser("sweep", help="prune at many sparsities, export for each engine, time against dense")
        p.add_argument("--model", action=Reads, kind="model", default="smollm2-135m",
                       help="model directory or alias (default smollm2-135m)")  # fmt: skip
        p.add_argument(
            "--sparsities", type=number_list(float, "sparsities"), default=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
        )
        p.add_argument(
            "--engines",
            type=lambda t: tuple(e.strip() for e in t.split(",") if e.strip()),
            default=("deepsparse", "onnxruntime"),
            help="comma-separated: deepsparse, onnxruntime, onnxruntime-int4, sparse, sparse-gptq, torch",
        )
        add_threads_argument(p, counts=(1, 2))
        add_prune_arguments(p, allocation_default="dlp", sparsity=False, plan=False, structured=False)
        p.set_defaults(prune_method="wanda")
        p.add_argument("--out", action=Writes, kind="dir", default=Path("runs/sweep"),
                       help="sweep directory (cache + reports)")  # fmt: skip
        add_data_arguments(p)
        add_eval_arguments(p)
        p.add_argument("--no-eval", action="store_true", help="skip the perplexity of each model")
        p.add_argument(
            "--stream", action="store_true", help="evaluate, prune and export each model streamed (onnxruntime engines)"
        )
        add_bench_arguments(p)
        m = sub.add_parser(
            "memory", help="peak RSS of one artifact loaded and run once, in a fresh process",
            description="Load ART in a fresh process and generate once (a --prompt-token prompt of random ids, then "
            "--tokens greedy tokens); print its peak RSS, the RSS before loading, and the load and generation times. "
            "The engine runs with the benchmarks' options unless --engine-option replaces them.",
        )  # fmt: skip
        m.add_argument("artifact", action=Reads, metavar="ART",
                       help="an artifact of `slimpack export`, a model directory or an ONNX model in optimum's layout")  # fmt: skip
        add_engine_arguments(m)
        m.add_argument("--prompt", type=int, default=16, help="prompt tokens (default 16)")
        m.add_argument("--tokens", type=int, default=32, help="greedy tokens generated (default 32)")
        m.add_argument("--json", action=Writes, default=None, metavar="FILE", help="also write the figures as JSON")

    def run(self, args: argparse.Namespace) -> int:
        if args.bench == "memory":
            return self.memory(args)
        if args.bench == ART:
            spec = BenchSpec(args.prompt, args.tokens, args.rounds, args.warmup, args.batch)
            report = time_paths(TimingConfig(labelled_paths(args.artifacts), args.threads, spec, args.engine))
            write_json(args.json, report.to_dict())
            print(f"{report.cpu.describe()}: prompt {spec.prompt}, "
                  f"{spec.tokens} decode steps, {spec.rounds} rounds after {spec.warmup} warm-up\n")  # fmt: skip
            print(report.table())
            return 0
        return self.sweep(args)

    def memory(self, args: argparse.Namespace) -> int:
        parse_engine_options(args.engine_option)  # a bad item is named here, before the probe starts
        for flag, value in (("--prompt", args.prompt), ("--tokens", args.tokens)):
            if value < 1:
                raise SlimpackError(f"{flag} {value} must be ≥ 1")
        path = Path(args.artifact)
        engine_of(path)  # one line for a path no engine runs
        home = path if path.is_dir() else path.parent
        if not (home / "config.json").is_file():  # the prompt's ids are drawn below its vocabulary size
            raise SlimpackError(f"{str(path)!r} has no config.json beside it; pass an artifact of `slimpack export`, "
                                "a model directory or an ONNX model in optimum's layout")  # fmt: skip
        probe = peak_rss(path, args.threads, args.prompt, args.tokens, vocab_size(home), args.engine_option)
        write_json(args.json, probe.to_dict())
        print(probe.table(str(path)))
        return 0

    def sweep(self, args: argparse.Namespace) -> int:

        report = sweep(
            SweepConfig(
                model=args.model,
                out=args.out,
                sparsities=args.sparsities,
                engines=args.engines,
                threads=args.threads,
                prune=core.prune_spec(args),
                data=core.data_spec(args, args.protocol),
                evaluate=None if args.no_eval else eval_spec(args),
                bench=BenchSpec(args.prompt, args.tokens, args.rounds, args.warmup, args.batch),
                progress=not args.quiet,
                stream=StreamSpec() if args.stream else None,
            )
        )
        for name, reason in report.skipped.items():
            print(f"{name}: skipped — {reason}")
        for m in report.measurements:
            print(f"\n{m.engine}, {m.threads} threads\n{table5(m.results)}")
        print(f"\n{args.out / 'sweep.md'}  {args.out / 'sweep.json'}  {args.out / 'sweep.png'}")
        return 0


class RunCommand:
    distributed = True
    help = "the main job: a recipe's stages (prune → quantize → export → verify → bench) in one resumable run"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "recipe", action=Reads, nargs="?", type=Path, default=None,
            help="recipe YAML (default: SmolLM2 + offline text)",
        )  # fmt: skip
        parser.add_argument("--out", action=Writes, kind="dir", default=None,
                            help="run directory (default: the recipe's out)")  # fmt: skip
        parser.add_argument("--check", action="store_true", help="only validate the recipe and print it")

    def run(self, args: argparse.Namespace) -> int:
        from dataclasses import asdict

        recipe = load_recipe(args.recipe)
        source = str(args.recipe) if args.recipe else f"default ({DEFAULT_RECIPE.name})"
        if args.check:
            print(json.dumps(asdict(recipe), indent=2, default=str))
            return 0
        out = args.out or Path(recipe.out)
        summary = run_pipeline(recipe, out, progress=not args.quiet, source=source, ranks=args.ranks)
        if summary is None:  # a rank that does not write (under torchrun)
            return 0
        print((out / "report.md").read_text())
        print(f"run directory: {out}   wall time {summary.wall_seconds / 60:.1f} min")
        return 0 if summary.passed else 1


TASK_DEFAULTS = {"task_data": "hub", "num_fewshot": 0, "limit": None, "batch_size": 1, "add_bos_token": None}


def add_task_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    """``--tasks`` and how they run: task data, few-shot examples, limit, batch size."""
    g = parser.add_argument_group(title)
    g.add_argument(
        "--tasks", default=None,
        help="comma-separated lm-eval task names, or 'paper' for the papers' seven: " + ",".join(PAPER_TASKS),
    )  # fmt: skip
    g.add_argument("--task-data", action=Reads, default=TASK_DEFAULTS["task_data"],
                   help="hub (lm-eval's own data loading) | local (slimpack's 30-item files per task, written by "
                        "the project: not the papers' data) | DIR of <task>.jsonl (default hub)")  # fmt: skip
    g.add_argument(
        "--num-fewshot",
        type=int,
        default=TASK_DEFAULTS["num_fewshot"],
        help="in-context examples (default 0, the papers')",
    )
    g.add_argument(
        "--limit", type=int, default=TASK_DEFAULTS["limit"], help="first N examples of each task (default all)"
    )
    g.add_argument(
        "--batch-size", type=int, default=TASK_DEFAULTS["batch_size"], help="sequences per forward (default 1)"
    )
    g.add_argument("--add-bos-token", action=argparse.BooleanOptionalAction, default=TASK_DEFAULTS["add_bos_token"],
                   help="prepend the tokenizer's BOS to every request, or not (default: as the tokenizer does by "
                        "default, as lm-eval's HF model does)")  # fmt: skip


def task_names(args: argparse.Namespace) -> tuple[str, ...]:
    """``--tasks``: ``paper`` or comma-separated names."""
    return resolve_task_names([t.strip() for t in args.tasks.split(",")])


def refuse_task_options(args: argparse.Namespace) -> None:
    """Task options without ``--tasks``: one line, not silently ignored."""
    given = [f"--{k.replace('_', '-')}" for k, v in TASK_DEFAULTS.items() if getattr(args, k) != v]
    if given:
        raise SlimpackError(f"{given[0]} applies to zero-shot tasks; add --tasks (e.g. --tasks paper)")


def quiet_lm_eval(args: argparse.Namespace) -> None:
    """lm-eval's own notes (e.g. "Overwriting default num_fewshot of rte") only with ``-v``."""
    if not args.verbose:
        logging.getLogger("lm_eval").setLevel(logging.ERROR)


class ZeroShotOption:
    """``slimpack prune | quantize … --tasks …``: zero-shot tasks of the written model, in its manifest."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_task_arguments(parser, "zero-shot tasks of the output (lm-evaluation-harness; recorded in slimpack.json)")

    def evaluation(self, args: argparse.Namespace) -> Any:

        if args.tasks is None:
            refuse_task_options(args)
            return None
        quiet_lm_eval(args)
        return ZeroShotEvaluation.prepare(
            task_names(args), TaskData(args.task_data), args.num_fewshot, args.limit, args.batch_size,
            args.add_bos_token,
        )  # fmt: skip


class EvalCommand:
    """Defined here, not in the core: its zero-shot form runs any engine's artifact (`runtime_bench.zeroshot`)."""

    distributed = True
    help = (
        "perplexity of a model; with --tasks, zero-shot accuracy (lm-evaluation-harness) of a model or of an exported "
        "artifact through its own runtime"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "model", action=Reads, kind="model", help="HF model directory, hub id, or alias (smollm2-135m)"
        )
        parser.add_argument("--dataset", action=Reads, default="offline", help="offline | wikitext2 | c4 | ptb | PATH")
        parser.add_argument("--seqlen", type=int, default=512)
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--json", action=Writes, default=None, help="also write the result to this JSON file")
        add_store_arguments(parser)
        add_eval_arguments(parser)
        add_task_arguments(parser, "zero-shot tasks (lm-evaluation-harness; MODEL may then be an exported artifact)")
        g = parser.add_argument_group("the artifact's engine")
        add_engine_arguments(g)
        g.add_argument("--trust-unverified", action="store_true",
                       help="run an artifact whose export.json records no valid sha256 (its files unverified)")  # fmt: skip

    def run(self, args: argparse.Namespace) -> int:

        if args.tasks is None:
            refuse_task_options(args)
            if Artifact.exists(args.model) and not Artifact.open(args.model).model_directory:
                raise SlimpackError(
                    f"{args.model!r} is an exported artifact: measure its perplexity with `slimpack verify "
                    f"{args.model} --reference MODEL`, or its zero-shot accuracy with --tasks"
                )
            return self.perplexity(args)

        quiet_lm_eval(args)
        report = zeroshot(
            ZeroShotConfig(
                model=args.model, tasks=task_names(args), data=TaskData(args.task_data), num_fewshot=args.num_fewshot,
                limit=args.limit, batch_size=args.batch_size, threads=args.threads,
                engine_options=parse_engine_options(args.engine_option), stream=asked_stream(args), progress=not args.quiet,
                device=args.ranks.device(args.device), trust_unverified=args.trust_unverified,
                add_bos_token=args.add_bos_token, ranks=args.ranks,
            )
        )  # fmt: skip
        write_json(args.json if args.ranks.writes else None, report.to_dict())
        print(f"{args.model} ({report.runtime}): zero-shot, lm-eval {report.lm_eval}, task data "
              f"{report.task_data}, {report.seconds:.1f} s")  # fmt: skip
        print(report.table())
        return 0

    @staticmethod
    def perplexity(args: argparse.Namespace) -> int:

        result = evaluate(args.model, eval_spec(args), args.ranks.device(args.device), progress=not args.quiet,
                          stream=asked_stream(args), ranks=args.ranks)  # fmt: skip
        write_json(args.json if args.ranks.writes else None, result.to_dict())
        print(
            f"{args.model}: perplexity {result.perplexity:.3f} on {result.dataset} "
            f"({result.windows}×{result.seqlen} tokens, {result.seconds:.1f} s)"
        )
        print(json.dumps(result.to_dict(), indent=2))
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``slimpack`` console script: every package's commands, run by the core's `prune.cli.main`."""
    return core.main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
