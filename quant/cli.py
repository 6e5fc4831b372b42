"""``slimpack quantize`` and ``slimpack check gptqmodel|autogptq``, registered into the core's command registry
(`prune.cli.COMMANDS`)."""

from __future__ import annotations

import argparse

from prune.cli import Reads, add_output_arguments, add_prune_arguments, job, manifest_line, prune_spec
from prune.errors import SlimpackError
from prune.spec import parse_options
from quant.api import QuantizeConfig, quantize
from quant.external.autogptq_check import AUTOGPTQ_CHECK
from quant.external.gptqmodel_check import GPTQMODEL_CHECK, RuntimeCheck
from quant.spec import QuantizeSpec

RUNTIME_CHECKS: dict[str, RuntimeCheck] = {"gptqmodel": GPTQMODEL_CHECK, "autogptq": AUTOGPTQ_CHECK}


class QuantizeCommand:
    distributed = True
    help = "quantize a (pruned) model with GPTQ or RTN into a standard GPTQ checkpoint (optionally pruning jointly)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", action=Reads, kind="model",
                            help="model directory (e.g. the output of slimpack prune), hub id or alias")  # fmt: skip
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
        add_prune_arguments(parser, method_flag="--joint-with", option_flags=("-J", "--joint-option"),
                            structured=False, what=" in the same walk (joint mode: --joint-with METHOD)")  # fmt: skip
        add_output_arguments(parser, "quantized checkpoint")

    def run(self, args: argparse.Namespace) -> int:
        quant = QuantizeSpec(bits=args.bits, group_size=args.group_size, sym=not args.asym, act_order=args.act_order,
                             static_groups=args.static_groups, method=args.method,
                             checkpoint_format=args.checkpoint_format, options=parse_options(args.option))  # fmt: skip
        joint = prune_spec(args) if args.prune_method is not None else None
        given = {"--plan": args.plan, "--true-sequential": args.true_sequential, "--scope": args.scope,
                 "--allocation": args.allocation, "-A": args.alloc_option, "-J": args.prune_option,
                 "--pattern": args.pattern != "unstructured"}  # fmt: skip
        unused = [flag for flag, value in given.items() if value]
        if joint is None and unused:
            raise SlimpackError(f"{unused[0]} applies to joint pruning only; add --joint-with METHOD")
        manifest = quantize(QuantizeConfig(job(args, args.model), quant, joint))
        if manifest is not None:  # None: a rank that does not write (under torchrun)
            print(manifest_line(manifest, args.out))
        return 0


class CheckCommand:
    distributed = False
    help = (
        "load a GPTQ checkpoint in another runtime and compare its logits and weights with ours: gptqmodel | autogptq"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="runtime", required=True, metavar="RUNTIME")
        for name, check in RUNTIME_CHECKS.items():
            p = sub.add_parser(name, help=check.help, description=check.help)
            check.add_arguments(p)
            p.set_defaults(check=check)

    def run(self, args: argparse.Namespace) -> int:
        return args.check.run(args)
