"""Prefill and decode latency of chosen artifacts, measured interleaved in one run: ``slimpack bench ART …``
(`TimingConfig`, `time_paths`, `timing_table`) and the older ``python -m runtime_bench.latency NAME=PATH …``.

The timing discipline (interleaved rounds, warm-up, medians and quartiles) is `runtime_bench.harness`.

``python -m runtime_bench.latency NAME=PATH … [--prompt 512] [--tokens 32] [--rounds 5] [--threads 2]``
where PATH is an artifact of ``slimpack export``, a model directory (torch eager), or a directory / file
holding a KV-cache ``model.onnx`` in optimum's layout (e.g. optimum-onnx's own export).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from export.artifact import Artifact
from prune.errors import SlimpackError
from prune.paths import Output, check_writes
from runtime_bench.harness import BenchSpec, EngineTiming, cpu_info, measure, vocab_size

log = logging.getLogger(__name__)

def prompt_vocab(paths: list[Path]) -> int:
    """The smallest vocabulary among the engines' ``config.json`` files (prompt ids must fit every model)."""
    dirs = [path.parent if path.suffix == ".onnx" else path for path in paths]
    sizes = [vocab_size(d) for d in dirs if (d / "config.json").is_file()]
    if not sizes:
        raise SlimpackError("no config.json beside any engine path; cannot tell the vocabulary size")
    return min(sizes)


def path_labels(paths: list[Path]) -> dict[str, Path]:
    """Each path labelled by its directory name, with as many parents prepended as tell apart two that share one
    (``a/onnx``, ``b/onnx``); one line for a path given twice."""
    full = [Path(os.path.abspath(p)) for p in paths]
    for i, path in enumerate(full):
        twin = next((paths[j] for j in range(i) if os.path.realpath(full[j]) == os.path.realpath(path)), None)
        if twin is not None:
            raise SlimpackError(f"{str(paths[i])!r} and {str(twin)!r} are the same artifact; name each ART once")
    depth = [1] * len(paths)
    while True:
        labels = [str(Path(*p.parts[-d:])) for p, d in zip(full, depth)]
        clashing = [i for i, lab in enumerate(labels) if labels.count(lab) > 1]
        if not clashing:
            return dict(zip(labels, paths))
        for i in clashing:
            depth[i] += 1


@dataclass(frozen=True)
class TimingConfig:
    """``slimpack bench ART …``: ``paths`` (label → artifact, model directory or optimum-layout ONNX model) timed
    interleaved, one run per thread count; with ``engines``, every path must run in one of them."""

    paths: dict[str, Path]
    threads: tuple[int, ...] = (2,)
    bench: BenchSpec = field(default_factory=BenchSpec)
    engines: tuple[str, ...] = ()

    def check(self) -> dict[str, str]:
        """Before any work: the spec, the thread counts and each path's engine (label → engine: known, one of
        ``engines`` when given, and able to time here); one line otherwise."""
        from runtime_bench.engines import engine_of, load_engines, unavailable
        from runtime_bench.engines.base import ENGINES

        self.bench.check()
        if not self.paths or not self.threads:
            raise SlimpackError("pass at least one artifact and one thread count (--threads)")
        for t in self.threads:
            if t < 1:
                raise SlimpackError(f"threads {t} must be ≥ 1; pass e.g. --threads 1,2")
        load_engines()
        for name in self.engines:
            if name not in ENGINES:
                raise SlimpackError(f"unknown --engine {name!r}; choose from: {', '.join(ENGINES.names())}")
        found = {lab: engine_of(Path(path)) for lab, path in self.paths.items()}
        for lab, engine in found.items():
            path, how = str(self.paths[lab]), "its export.json" if Artifact.exists(self.paths[lab]) else "its files"
            if self.engines and engine not in self.engines:
                raise SlimpackError(
                    f"{path!r} runs in {engine} ({how}), not in --engine {','.join(self.engines)}; drop it or add "
                    f"{engine} to --engine"
                )
            reason = unavailable(engine, timing=True)
            if reason is not None:
                raise SlimpackError(f"{path!r} runs in {engine}, which cannot be timed here: {reason}")
        return found


def directory_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def time_paths(config: TimingConfig) -> dict[str, Any]:
    """Every path of ``config`` timed interleaved per thread count (`runtime_bench.harness.measure`): the CPU, the
    spec, and per label its path, engine, bytes on disk and, per thread count, the harness's figures (prefill ms,
    decode ms per token, tokens/s, batch throughput: median, quartiles, raw rounds)."""
    engines = config.check()
    vocab = prompt_vocab([Path(p) for p in config.paths.values()])
    paths = {lab: Path(p) for lab, p in config.paths.items()}
    runs = {t: measure(paths, t, config.bench, vocab, "bench") for t in config.threads}
    return {
        "cpu": cpu_info().to_dict(),
        "spec": asdict(config.bench),
        "threads": list(config.threads),
        "artifacts": {
            lab: {"path": str(path), "engine": engines[lab], "bytes": directory_bytes(path),
                  "threads": {str(t): runs[t][lab] for t in config.threads}}
            for lab, path in paths.items()
        },
    }  # fmt: skip


def artifact_timing(entry: dict[str, Any], threads: int) -> EngineTiming:
    """One artifact's figures at ``threads`` in `time_paths`'s report (its ``artifacts[label]``), typed."""
    return EngineTiming.of(entry["threads"][str(threads)])


def _spread(q: dict[str, float]) -> str:
    """``median (q1–q3)``, the median to three significant digits and the quartiles to as many decimals."""
    d = max(0, 2 - math.floor(math.log10(q["median"]))) if q["median"] > 0 else 1
    return f"{q['median']:.{d}f} ({q['q1']:.{d}f}–{q['q3']:.{d}f})"


def timing_table(report: dict[str, Any]) -> str:
    """`time_paths`'s report as a markdown table: one row per artifact and thread count."""
    batch = report["spec"]["batch"]
    head = ["artifact", "engine", "threads", "prefill ms (q1–q3)", "decode ms/token (q1–q3)"]
    head += [f"batch {batch} tokens/s (q1–q3)"] if batch > 1 else []
    rows = []
    for t in report["threads"]:
        for lab, a in report["artifacts"].items():
            r = a["threads"][str(t)]
            row = [lab, a["engine"], str(t), _spread(r["prefill_ms"]), _spread(r["decode_ms_per_token"])]
            if batch > 1:
                b = r["batch"]
                row.append(_spread(b["tokens_per_s"]) if "tokens_per_s" in b else b["skipped"])
            rows.append(row)
    lines = [head, ["---"] * len(head), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


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
        if args.json is not None:  # the one write rule: never onto an engine's files
            check_writes([Output("--json", args.json, "file")], [Path(p) for p in specs.values()])
        timed = time_paths(TimingConfig({name: Path(path) for name, path in specs.items()}, (args.threads,), spec))
    except SlimpackError as err:
        print(f"latency: error: {err}", file=sys.stderr)
        return 2
    report = {
        "engines": specs,
        "prompt": args.prompt,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "threads": args.threads,
        "cpu": timed["cpu"],
        "results": {name: a["threads"][str(args.threads)] for name, a in timed["artifacts"].items()},
    }
    if args.json:
        from prune.io import write_json_atomic

        write_json_atomic(args.json, report)
    print(timing_table(timed))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
