"""``slimpack``: a thin CLI — parse arguments, build a config dataclass, call the package API.

Each subcommand is a registered `Command`; errors a user can fix are printed as one line on stderr
(exit 2) and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from prune.errors import SlimpackError
from prune.registry import Registry

log = logging.getLogger("slimpack")


class Command(Protocol):
    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


COMMANDS: Registry[type[Command]] = Registry("command")


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``["blocksize=128", "percdamp=0.01"]`` → ``{"blocksize": 128, "percdamp": 0.01}``."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SlimpackError(f"bad method option {item!r}; use KEY=VALUE, e.g. -O percdamp=0.01")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("calibration data")
    g.add_argument("--dataset", default="offline", help="offline | wikitext2 | c4 | ptb | PATH to a text file")
    g.add_argument("--nsamples", type=int, default=32, help="calibration windows (default 32)")
    g.add_argument("--seqlen", type=int, default=512, help="tokens per calibration/eval window (default 512)")
    g.add_argument("--seed", type=int, default=0, help="seed of the calibration window offsets")


def add_eval_arguments(parser: argparse.ArgumentParser, windows_default: int | None = 40) -> None:
    g = parser.add_argument_group("evaluation")
    g.add_argument("--eval-dataset", default=None, help="text to evaluate on (default: --dataset)")
    g.add_argument("--windows", type=int, default=windows_default, help="evaluation windows (default 40; 0 = all)")
    g.add_argument("--eval-batch-size", type=int, default=1)


def add_allocation_arguments(parser: argparse.ArgumentParser, default: str | None = "uniform") -> None:
    shown = default or "uniform; --structured: log-increase"
    parser.add_argument(
        "--allocation",
        default=default,
        help=f"layerwise sparsity: uniform | owl | dlp | pi | log-increase | rl-search (default {shown})",
    )
    parser.add_argument(
        "-A", "--alloc-option", action="append", default=[], help="allocation option KEY=VALUE, e.g. -A alpha=0.1"
    )


def add_output_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """Device, output directory, --overwrite, --eval and the data/eval groups of a model-writing command."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True, help=f"output {what} directory")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--eval", action="store_true", help=f"also measure the {what}'s perplexity")
    add_data_arguments(parser)
    add_eval_arguments(parser)


def eval_spec(args: argparse.Namespace):  # noqa: ANN201
    from prune.api import EvalSpec

    return EvalSpec(
        dataset=args.eval_dataset or args.dataset,
        seqlen=args.seqlen,
        windows=args.windows or None,
        batch_size=args.eval_batch_size,
    )


def write_json(path: Path | None, data: Any) -> None:
    if path is not None:
        from prune.io import write_json_atomic

        write_json_atomic(path, data)
        log.info("wrote %s", path)


@COMMANDS.register("prune")
class PruneCommand:
    help = "prune a model layer by layer and write an HF model directory + slimpack.json"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", required=True, help="HF model directory, hub id, or alias (smollm2-135m)")
        parser.add_argument(
            "--method",
            default=None,
            help="magnitude | wanda (default) | sparsegpt | pruner-zero | pgz; --structured: slimgpt (default) | "
            "activation-l2",
        )
        parser.add_argument("--sparsity", type=float, default=0.5, help="target sparsity in [0, 1)")
        parser.add_argument("--pattern", default="unstructured", help="'unstructured' or N:M (N zeros per M), e.g. 2:4")
        parser.add_argument("--scope", default=None, help="row (per-output) | layer; default: the method's paper")
        add_allocation_arguments(parser, None)
        parser.add_argument("--plan", type=Path, default=None, help="a sparsity plan JSON (from `slimpack plan`)")
        parser.add_argument("-O", "--option", action="append", default=[], help="method option KEY=VALUE")
        parser.add_argument("--true-sequential", action="store_true", help="calibrate qkv → o → up/gate → down in turn")
        g = parser.add_argument_group("structured pruning (whole attention heads and FFN channels)")
        g.add_argument("--structured", action="store_true", help="remove heads/channels: the model gets smaller")
        g.add_argument("--reconstruct", action="store_true", help="SparsitySolver's ridge compensation (Eq. 8)")
        g.add_argument("--ridge-lambda", type=float, default=0.9, help="λ of the ridge regression (default 0.9)")
        g.add_argument(
            "--keep-heads", type=int, default=None, help="query heads every layer keeps (multiple of KV heads)"
        )
        add_output_arguments(parser, "pruned model")

    def run(self, args: argparse.Namespace) -> int:
        from prune.api import PruneConfig, prune
        from prune.data import DataSpec

        if args.structured:
            return self.run_structured(args)
        given = (("--reconstruct", args.reconstruct), ("--keep-heads", args.keep_heads is not None))
        unused = [flag for flag, value in given if value]
        if unused:
            raise SlimpackError(f"{unused[0]} applies to structured pruning only; add --structured")
        config = PruneConfig(
            model=args.model,
            out=args.out,
            method=args.method or "wanda",
            sparsity=args.sparsity,
            pattern=args.pattern,
            scope=args.scope,
            allocation=args.allocation or "uniform",
            allocation_options=parse_options(args.alloc_option),
            plan_file=args.plan,
            data=DataSpec(args.dataset, args.nsamples, args.seqlen, args.seed),
            method_options=parse_options(args.option),
            true_sequential=args.true_sequential,
            device=args.device,
            overwrite=args.overwrite,
            evaluate=eval_spec(args) if args.eval else None,
            progress=not args.quiet,
        )
        manifest = prune(config)
        line = f"{manifest['method']['name']} {manifest['pattern']}: sparsity {100 * manifest['sparsity']['overall']:.2f} %"
        line += f", {manifest['timing']['prune_seconds']:.1f} s, peak RSS {manifest['timing']['peak_rss_mib_after_prune']:.0f} MiB"
        if "evaluation" in manifest:
            line += f", perplexity {manifest['evaluation']['perplexity']:.3f}"
        print(f"{line} → {args.out}")
        return 0

    def run_structured(self, args: argparse.Namespace) -> int:
        from prune.data import DataSpec
        from prune.structured.api import StructuredConfig, prune_structured

        if args.pattern != "unstructured" or args.scope or args.true_sequential:
            raise SlimpackError("--pattern, --scope and --true-sequential are for unstructured pruning; drop them")
        config = StructuredConfig(
            model=args.model,
            out=args.out,
            method=args.method or "slimgpt",
            sparsity=args.sparsity,
            allocation=args.allocation or "log-increase",
            allocation_options=parse_options(args.alloc_option),
            plan_file=args.plan,
            method_options=parse_options(args.option),
            reconstruct=args.reconstruct,
            ridge_lambda=args.ridge_lambda,
            keep_heads=args.keep_heads,
            data=DataSpec(args.dataset, args.nsamples, args.seqlen, args.seed),
            device=args.device,
            overwrite=args.overwrite,
            evaluate=eval_spec(args) if args.eval else None,
            progress=not args.quiet,
        )
        m = prune_structured(config)
        params = m["parameters"]
        line = f"{m['method']['name']} structured ({m['allocation']['name']}): {params['before']['total']:,} → "
        line += f"{params['after']['total']:,} parameters ({100 * m['sparsity']['overall']:.1f} % of the blocks)"
        line += f", {m['timing']['prune_seconds']:.1f} s"
        if "evaluation" in m:
            line += f", perplexity {m['evaluation']['perplexity']:.3f}"
        print(f"{line} → {args.out}")
        return 0


@COMMANDS.register("quantize")
class QuantizeCommand:
    help = "quantize a (pruned) model with GPTQ or RTN into a standard GPTQ checkpoint (optionally pruning jointly)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", help="model directory (e.g. the output of slimpack prune), hub id or alias")
        parser.add_argument("--method", default="gptq", help="gptq | rtn (default gptq)")
        parser.add_argument("--bits", type=int, default=4, help="2–8 (GPTQ checkpoints: 2, 3, 4 or 8; default 4)")
        parser.add_argument("--group-size", type=int, default=128, help="columns per grid: -1 (per row), 32, 64, 128")
        parser.add_argument("--act-order", action="store_true", help="GPTQ desc_act: columns by decreasing H_jj")
        parser.add_argument("--static-groups", action="store_true", help="fit group grids before the sweep")
        parser.add_argument("--asym", action="store_true", help="asymmetric grid with integer zero points")
        parser.add_argument(
            "--checkpoint-format",
            default="gptq",
            help="gptq (v1, every runtime) | gptq_v2 (GPTQModel; asym) | dequantized (plain fp32 model; any bits)",
        )
        parser.add_argument("-O", "--option", action="append", default=[], help="blocksize=128, percdamp=0.01")
        parser.add_argument("--joint-with", default=None, help="prune in the same walk: sparsegpt | pgz | wanda | …")
        parser.add_argument("-J", "--joint-option", action="append", default=[], help="pruner option KEY=VALUE")
        parser.add_argument("--sparsity", type=float, default=0.5, help="joint mode: target sparsity")
        parser.add_argument("--pattern", default="unstructured", help="joint mode: unstructured or N:M")
        parser.add_argument("--scope", default=None, help="joint mode: row | layer")
        add_allocation_arguments(parser)
        parser.add_argument("--plan", type=Path, default=None, help="joint mode: a sparsity plan JSON")
        add_output_arguments(parser, "quantized checkpoint")

    def run(self, args: argparse.Namespace) -> int:
        from prune.data import DataSpec
        from quant.api import QuantizeConfig, quantize
        from quant.grid import QuantSpec

        spec = QuantSpec(args.bits, args.group_size, not args.asym, args.act_order, args.static_groups)
        config = QuantizeConfig(
            model=args.model,
            out=args.out,
            method=args.method,
            spec=spec,
            options=parse_options(args.option),
            joint_with=args.joint_with,
            joint_options=parse_options(args.joint_option),
            sparsity=args.sparsity,
            pattern=args.pattern,
            scope=args.scope,
            allocation=args.allocation,
            allocation_options=parse_options(args.alloc_option),
            plan_file=args.plan,
            data=DataSpec(args.dataset, args.nsamples, args.seqlen, args.seed),
            device=args.device,
            overwrite=args.overwrite,
            evaluate=eval_spec(args) if args.eval else None,
            progress=not args.quiet,
            checkpoint_format=args.checkpoint_format,
        )
        m = quantize(config)
        line = (
            f"{m['method']['name']} {args.bits}-bit g{args.group_size}: sparsity {100 * m['sparsity']['overall']:.2f} %"
        )
        line += f", pruned zeros kept {m['pruned_zeros']['kept']}/{m['pruned_zeros']['pruned']}"
        line += f", {m['timing']['quantize_seconds']:.1f} s, {m['size_bytes'] / 2**20:.1f} MiB"
        if "evaluation" in m:
            line += f", perplexity {m['evaluation']['perplexity']:.3f}"
        print(f"{line} → {args.out}")
        return 0


@COMMANDS.register("plan")
class PlanCommand:
    help = "compute a layerwise sparsity plan (JSON + PNG) without pruning"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", required=True, help="HF model directory, hub id, or alias (smollm2-135m)")
        parser.add_argument("--sparsity", type=float, default=0.5, help="target sparsity in [0, 1)")
        parser.add_argument("--pattern", default="unstructured", help="'unstructured' or N:M for a mixed N:M plan")
        add_allocation_arguments(parser)
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--out", type=Path, required=True, help="plan JSON to write (a PNG is written beside it)")
        parser.add_argument("--overwrite", action="store_true")
        add_data_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        from prune.api import PlanConfig, plan
        from prune.data import DataSpec

        result = plan(
            PlanConfig(
                model=args.model,
                out=args.out,
                sparsity=args.sparsity,
                pattern=args.pattern,
                allocation=args.allocation,
                allocation_options=parse_options(args.alloc_option),
                data=DataSpec(args.dataset, args.nsamples, args.seqlen, args.seed),
                device=args.device,
                overwrite=args.overwrite,
                progress=not args.quiet,
            )
        )
        ratios = ", ".join(f"{r:.3f}" for r in result["block_ratios"])
        print(f"{result['allocation']} plan, target {result['target']:.3f}: per block [{ratios}] → {args.out}")
        return 0


@COMMANDS.register("eval")
class EvalCommand:
    help = "perplexity of a model (non-overlapping windows; see prune/eval.py)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", help="HF model directory, hub id, or alias (smollm2-135m)")
        parser.add_argument("--dataset", default="offline", help="offline | wikitext2 | c4 | ptb | PATH")
        parser.add_argument("--seqlen", type=int, default=512)
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--json", type=Path, default=None, help="also write the result to this JSON file")
        add_eval_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        from prune.api import evaluate

        result = evaluate(args.model, eval_spec(args), args.device, progress=not args.quiet)
        write_json(args.json, result)
        print(
            f"{args.model}: perplexity {result['perplexity']:.3f} on {result['dataset']} "
            f"({result['windows']}×{result['seqlen']} tokens, {result['seconds']:.1f} s)"
        )
        print(json.dumps(result, indent=2))
        return 0


@COMMANDS.register("export")
class ExportCommand:
    help = "export a model directory to a runnable artifact: onnx | onnx-int4 | deepsparse | semi24 | gptq"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", help="model directory (output of slimpack prune / quantize)")
        parser.add_argument("--format", required=True, help="onnx | onnx-int4 | deepsparse | semi24 | gptq")
        parser.add_argument("--out", type=Path, required=True, help="artifact directory")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
        parser.add_argument(
            "-O", "--option", action="append", default=[], help="format option KEY=VALUE, e.g. -O dtype=bfloat16"
        )

    def run(self, args: argparse.Namespace) -> int:
        from export.api import ExportConfig, export_model

        manifest = export_model(
            ExportConfig(args.model, args.format, args.out, args.overwrite, parse_options(args.option))
        )
        zeros = manifest["zeros"]
        print(
            f"{args.format} ({manifest['engine']}): {manifest['bytes'] / 2**20:.1f} MiB in {manifest['export_seconds']:.1f} s; "
            f"zeros kept {zeros['exported_zeros']}/{zeros['source_zeros']} over {zeros['modules']} weights → {args.out}"
        )
        return 0


@COMMANDS.register("verify")
class VerifyCommand:
    help = "check an exported artifact in its own runtime against the reference model (exit 1 beyond tolerance)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("artifact", type=Path, help="directory written by slimpack export")
        parser.add_argument("--reference", required=True, help="the in-framework model directory it came from")
        parser.add_argument(
            "--tolerance", type=float, default=0.01, help="max relative perplexity difference (default 0.01)"
        )
        parser.add_argument(
            "--token-match", type=float, default=1.0, help="min fraction of equal greedy tokens (default 1.0)"
        )
        parser.add_argument("--prompt", type=int, default=32, help="prompt tokens for the greedy check (default 32)")
        parser.add_argument("--tokens", type=int, default=32, help="greedy tokens to compare (default 32)")
        parser.add_argument("--threads", type=int, default=None, help="engine threads (default: the runtime's)")
        parser.add_argument("--dataset", default="offline", help="offline | wikitext2 | c4 | ptb | PATH")
        parser.add_argument("--seqlen", type=int, default=512)
        parser.add_argument("--json", type=Path, default=None, help="also write the report to this JSON file")
        add_eval_arguments(parser, windows_default=8)

    def run(self, args: argparse.Namespace) -> int:
        from export.verify import Tolerance, VerifyConfig, verify, verify_table

        if not 0 <= args.tolerance or not 0 <= args.token_match <= 1:
            raise SlimpackError("--tolerance must be ≥ 0 and --token-match in [0, 1]")
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
            )
        )
        write_json(args.json, report)
        print(verify_table(report))
        return 0 if report["passed"] else 1


@COMMANDS.register("inspect")
class InspectCommand:
    help = "measured sparsity per module of a slimpack output, checked against its manifest"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument("--json", type=Path, default=None, help="also write the report to this JSON file")

    def run(self, args: argparse.Namespace) -> int:
        from prune.inspect import inspect_dir
        from prune.report import sparsity_table

        report = inspect_dir(args.directory)
        write_json(args.json, report)
        print(sparsity_table(report["sparsity"]))
        print(f"\nmethod: {report['method']}  pattern: {report['pattern']}  files verified: {report['files_ok']}")
        return 0 if report["files_ok"] else 1


@COMMANDS.register("report")
class ReportCommand:
    help = "one markdown table from slimpack eval JSON files and prune / quantize output directories"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("results", nargs="+", type=Path, help="eval .json files and/or pruned model directories")
        parser.add_argument("--png", type=Path, default=None, help="also draw perplexity per method and setting")
        parser.add_argument("--title", default="", help="title of the --png figure")
        parser.add_argument("--json", type=Path, default=None, help="also write the runs' key figures as JSON")
        parser.add_argument("--pivot", action="store_true", help="perplexity per (method, allocation) × setting")
        parser.add_argument("--series", default="method", choices=["method", "allocation"], help="bars of --png")

    def run(self, args: argparse.Namespace) -> int:
        from prune.manifest import read_manifest
        from prune.report import pivot_table, results_table, summarize

        results = []
        for path in args.results:
            if path.is_dir():
                results.append(read_manifest(path))
            elif path.is_file():
                results.append(json.loads(path.read_text()))
            else:
                raise SlimpackError(
                    f"result {str(path)!r} does not exist; pass eval JSON files or slimpack output directories"
                )
        if any(r.get("stage") == "quantize" for r in results):  # quantized runs: their own columns
            from prune.io import directory_bytes
            from quant.report import quant_table

            print(quant_table(results, [directory_bytes(p) if p.is_dir() else None for p in args.results]))
        else:
            print(pivot_table(results) if args.pivot else results_table(results))
        write_json(args.json, [summarize(r) for r in results])
        if args.png is not None:
            from prune.plots import perplexity_bars

            perplexity_bars(results, args.png, args.title, args.series)
            log.info("wrote %s", args.png)
        return 0


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


def bench_spec(args: argparse.Namespace):  # noqa: ANN201
    from runtime_bench.stages import BenchSpec

    return BenchSpec(args.prompt, args.tokens, args.rounds, args.warmup, args.batch)


@COMMANDS.register("bench")
class BenchCommand:
    help = "benchmarks: `bench sweep` (speedup vs sparsity, DLP Table 5 layout)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="bench", required=True)
        p = sub.add_parser("sweep", help="prune at many sparsities, export for each engine, time against dense")
        p.add_argument("--model", default="smollm2-135m", help="model directory or alias (default smollm2-135m)")
        p.add_argument(
            "--sparsities", type=number_list(float, "sparsities"), default=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
        )
        p.add_argument(
            "--engines",
            type=lambda t: tuple(e.strip() for e in t.split(",") if e.strip()),
            default=("deepsparse", "onnxruntime"),
            help="comma-separated: deepsparse, onnxruntime, onnxruntime-int4, torch",
        )
        p.add_argument("--threads", type=number_list(int, "threads"), default=(1, 2), help="e.g. 1,2")
        p.add_argument("--method", default="wanda")
        p.add_argument("--pattern", default="unstructured")
        p.add_argument("-O", "--option", action="append", default=[], help="method option KEY=VALUE")
        add_allocation_arguments(parser=p, default="dlp")
        p.add_argument("--out", type=Path, default=Path("runs/sweep"), help="sweep directory (cache + reports)")
        add_data_arguments(p)
        add_eval_arguments(p)
        p.add_argument("--no-eval", action="store_true", help="skip the perplexity of each model")
        add_bench_arguments(p)

    def run(self, args: argparse.Namespace) -> int:
        from prune.data import DataSpec
        from runtime_bench.report import table5
        from runtime_bench.sweep import SweepConfig, sweep

        report = sweep(
            SweepConfig(
                model=args.model,
                out=args.out,
                sparsities=args.sparsities,
                engines=args.engines,
                threads=args.threads,
                method=args.method,
                allocation=args.allocation,
                pattern=args.pattern,
                method_options=parse_options(args.option),
                allocation_options=parse_options(args.alloc_option),
                data=DataSpec(args.dataset, args.nsamples, args.seqlen, args.seed),
                evaluate=None if args.no_eval else eval_spec(args),
                bench=bench_spec(args),
                progress=not args.quiet,
            )
        )
        for name, reason in report["skipped"].items():
            print(f"{name}: skipped — {reason}")
        for m in report["measurements"]:
            print(f"\n{m['engine']}, {m['threads']} threads\n{table5(m['results'])}")
        print(f"\n{args.out / 'sweep.md'}  {args.out / 'sweep.json'}  {args.out / 'sweep.png'}")
        return 0


@COMMANDS.register("run")
class RunCommand:
    help = "the main job: a recipe's stages (prune → quantize → export → verify → bench) in one resumable run"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "recipe", nargs="?", type=Path, default=None, help="recipe YAML (default: SmolLM2 + offline text)"
        )
        parser.add_argument("--out", type=Path, default=None, help="run directory (default: the recipe's out)")
        parser.add_argument("--check", action="store_true", help="only validate the recipe and print it")

    def run(self, args: argparse.Namespace) -> int:
        from dataclasses import asdict

        from runtime_bench.pipeline import run_pipeline
        from runtime_bench.recipe import DEFAULT_RECIPE, load_recipe

        recipe = load_recipe(args.recipe)
        source = str(args.recipe) if args.recipe else f"default ({DEFAULT_RECIPE.name})"
        if args.check:
            print(json.dumps(asdict(recipe), indent=2))
            return 0
        out = args.out or Path(recipe.out)
        summary = run_pipeline(recipe, out, progress=not args.quiet, source=source)
        print((out / "report.md").read_text())
        print(f"run directory: {out}   wall time {summary['wall_seconds'] / 60:.1f} min")
        return 0 if summary["passed"] else 1


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
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS.names():
        command = COMMANDS.get(name)()
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(handler=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # the ONNX exporter's passes log every rewrite at INFO
        for name in ("onnx_ir", "onnxscript", "torch.onnx"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if args.quiet:
        quiet_libraries()
    try:
        return args.handler.run(args)
    except SlimpackError as err:
        print(f"slimpack: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
