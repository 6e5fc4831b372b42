"""Prefill and decode latency of several engines, measured interleaved in one run.

The timing discipline (interleaved rounds, warm-up, medians and quartiles) is `runtime_bench.harness`.

``python -m runtime_bench.latency NAME=PATH … [--prompt 512] [--tokens 32] [--rounds 5] [--threads 2]``
where PATH is an artifact of ``slimpack export``, a model directory (torch eager), or a directory / file
holding a KV-cache ``model.onnx`` in optimum's layout (e.g. optimum-onnx's own export).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from prune.errors import SlimpackError
from prune.paths import Output, check_writes
from runtime_bench.harness import BenchSpec, cpu_info, measure, vocab_size

log = logging.getLogger(__name__)


def prompt_vocab(paths: list[Path]) -> int:
    """The smallest vocabulary among the engines' ``config.json`` files (prompt ids must fit every model)."""
    dirs = [path.parent if path.suffix == ".onnx" else path for path in paths]
    sizes = [vocab_size(d) for d in dirs if (d / "config.json").is_file()]
    if not sizes:
        raise SlimpackError("no config.json beside any engine path; cannot tell the vocabulary size")
    return min(sizes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engines", nargs="+", help="NAME=PATH")
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bad = [item for item in args.engines if "=" not in item]
    if bad:
        parser.error(f"bad engine {bad[0]!r}; use NAME=PATH, e.g. onnx=runs/export/onnx")
    specs = dict(item.split("=", 1) for item in args.engines)
    spec = BenchSpec(args.prompt, args.tokens, args.rounds, args.warmup, batch=0, seed=args.seed)
    try:
        spec.check()
        if args.json is not None:  # the one write rule: never onto an engine's files
            check_writes([Output("--json", args.json, "file")], [Path(p) for p in specs.values()])
        vocab = prompt_vocab([Path(p) for p in specs.values()])
        results = measure({name: Path(path) for name, path in specs.items()}, args.threads, spec, vocab, "latency")
    except SlimpackError as err:
        print(f"latency: error: {err}", file=sys.stderr)
        return 2
    report = {
        "engines": specs,
        "prompt": args.prompt,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "threads": args.threads,
        "cpu": cpu_info(),
        "results": results,
    }
    if args.json:
        from prune.io import write_json_atomic

        write_json_atomic(args.json, report)
    print("| engine | prefill ms (q1–q3) | decode ms/token (q1–q3) |\n|---|---|---|")
    for name, r in results.items():
        p, d = r["prefill_ms"], r["decode_ms_per_token"]
        print(
            f"| {name} | {p['median']:.0f} ({p['q1']:.0f}–{p['q3']:.0f}) | {d['median']:.1f} ({d['q1']:.1f}–{d['q3']:.1f}) |"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
