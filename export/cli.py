"""``slimpack export``, registered into the core's command registry (`prune.cli.COMMANDS`)."""

from __future__ import annotations

import argparse

from export.api import ExportConfig, export_model
from export.graph_cache import default_root
from prune.cli import Reads, Writes, add_store_arguments, asked_stream
from prune.errors import SlimpackError
from prune.spec import parse_options


class ExportCommand:
    distributed = True
    help = (
        "export a model directory to a runnable artifact: sparse | onnx | onnx-int4 | deepsparse | semi24 | gptq | hf"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "model", action=Reads, kind="model", help="model directory (output of slimpack prune / quantize)"
        )
        parser.add_argument(
            "--format", required=True,
            help="sparse (slimpack's bitmask checkpoint, sparse engine) | onnx | onnx-int4 | deepsparse | semi24 | gptq "
            "| hf (the plain dense checkpoint back)",
        )  # fmt: skip
        parser.add_argument(
            "--values", choices=("fp32", "bf16", "fp16", "int8", "gptq"), default=None,
            help="--format sparse: how the nonzeros are stored (default: the checkpoint's own dtype; gptq: a GPTQ "
            "checkpoint's 4-bit codes)",
        )  # fmt: skip
        parser.add_argument("--out", action=Writes, kind="dir", required=True, help="artifact directory")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
        parser.add_argument(
            "--graph-cache",
            action=Writes,
            kind="dir",
            default=None,
            help="reuse graphs traced for models of the same shape from here (default: $SLIMPACK_CACHE/onnx-graphs)",
        )
        parser.add_argument(
            "--no-graph-cache", action="store_true", help="trace the graph afresh and cache nothing (onnx formats)"
        )
        add_store_arguments(
            parser.add_argument_group(
                "store (chosen from the model's size, see prune/store.py; streamed: onnx, onnx-int4 and deepsparse "
                "trace a weightless skeleton and write each weight from the shards into model.onnx.data)"
            )
        )
        parser.add_argument(
            "-O", "--option", action="append", default=[], help="format option KEY=VALUE, e.g. -O dtype=bfloat16"
        )

    def run(self, args: argparse.Namespace) -> int:
        if not args.ranks.writes:  # under torchrun rank 0 exports (a conversion: nothing to split); the rest wait
            return 0
        cache = None if args.no_graph_cache else (args.graph_cache or default_root())
        options = parse_options(args.option)
        if args.values is not None:
            if args.format != "sparse":
                raise SlimpackError(f"--values {args.values} applies to --format sparse, not {args.format}; drop it")
            options["values"] = args.values
        config = ExportConfig(args.model, args.format, args.out, args.overwrite, options, cache, asked_stream(args),
                              progress=not args.quiet)  # fmt: skip
        record = export_model(config)
        zeros = record.zeros
        assert zeros is not None  # an export counts them
        print(
            f"{args.format} ({record.engine}): {record.bytes / 2**20:.1f} MiB in {record.export_seconds:.1f} s; "
            f"zeros kept {zeros.exported_zeros}/{zeros.source_zeros} over {zeros.modules} weights → {args.out}"
        )
        return 0
