"""Peak resident memory of one engine running one artifact, measured in a fresh process.

Peak RSS only grows within a process, and the benchmark loads many engines into one, so each artifact is
measured alone: ``slimpack bench memory PATH --threads T --prompt P --tokens N`` (`peak_rss`) starts a fresh
interpreter on this module (``python -m runtime_bench.memory``, the probe's own process, not a user command), which
loads it, runs one greedy generation of N tokens after a P-token prompt, and prints one JSON line:

- ``peak_rss_mib``: the peak RSS of that process plus the peak of its child (the DeepSparse worker), MiB;
- ``baseline_rss_mib``: the RSS after importing the runtimes and before loading the artifact, so that
  ``peak − baseline`` is what the model costs;
- ``load_seconds``: load time of the engine (DeepSparse compiles its graphs lazily, in the generation);
- ``generate_seconds``: the generation's wall time.

``--engine-option ENGINE.KEY=VALUE`` replaces the bench's options of that engine, e.g.
``deepsparse.kv_cache=decode-only`` (one compiled graph: how a 50 % LLaMA-2-7B runs on 24 GB, scale.md).

The probe dies with the process that started it (`prune.io.die_with_parent`): a run killed with ``kill -9`` leaves no probe
holding gigabytes behind it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prune.errors import SlimpackError
from prune.io import die_with_parent, from_known
from runtime_bench.engines import BENCH_ENGINE_OPTIONS, open_engine, parse_engine_options


def status_mib(field: str) -> float:
    """A memory field of ``/proc/self/status`` (``VmRSS``: now, ``VmHWM``: peak of this process image), MiB.

    ``getrusage``'s ``ru_maxrss`` is not used for this process: Linux carries it across ``execve``, so a probe
    started from a big process would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")  # pragma: no cover - not Linux


@dataclass(frozen=True)
class MemoryProbe:
    """The figures of the module docstring (JSON: the field names)."""

    peak_rss_mib: float
    baseline_rss_mib: float
    worker_peak_rss_mib: float
    load_seconds: float
    generate_seconds: float
    prompt: int
    tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryProbe:
        return from_known(cls, data)

    def table(self, label: str) -> str:
        """One row per figure, for `slimpack bench memory`."""
        rows = [("peak RSS MiB", f"{self.peak_rss_mib:.0f}"),
                ("RSS after imports, before loading MiB", f"{self.baseline_rss_mib:.0f}"),
                ("worker's peak RSS MiB (DeepSparse)", f"{self.worker_peak_rss_mib:.0f}"),
                ("load s", f"{self.load_seconds:.2f}"),
                (f"generation s ({self.prompt}-token prompt, {self.tokens} tokens)", f"{self.generate_seconds:.2f}")]  # fmt: skip
        return "\n".join([f"| {label} | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def probe(
    path: Path, threads: int | None, prompt: int, tokens: int, vocab: int,
    options: dict[str, dict[str, Any]] | None = None,
) -> MemoryProbe:  # fmt: skip
    """Load ``path``, generate once, return the figures of the module docstring (call in a fresh process).
    ``options``: engine options by engine (default `BENCH_ENGINE_OPTIONS`)."""
    import onnxruntime  # noqa: F401  (imported by the baseline too, whichever engine runs)
    import torch  # noqa: F401

    baseline = status_mib("VmRSS")
    start = time.perf_counter()
    engine = open_engine(path, threads, BENCH_ENGINE_OPTIONS if options is None else options)
    load_seconds = time.perf_counter() - start
    ids = np.random.RandomState(0).randint(0, vocab, (1, prompt)).astype(np.int64)
    start = time.perf_counter()
    engine.generate(ids, tokens)
    generate_seconds = time.perf_counter() - start
    engine.close()
    own = status_mib("VmHWM")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the worker forked from this probe
    return MemoryProbe(
        peak_rss_mib=round(own + children, 1),
        baseline_rss_mib=round(baseline, 1),
        worker_peak_rss_mib=round(children, 1),
        load_seconds=round(load_seconds, 2),
        generate_seconds=round(generate_seconds, 3),  # a lazy engine compiles its graphs in it
        prompt=prompt,
        tokens=tokens,
    )


def peak_rss(
    path: Path, threads: int | None, prompt: int, tokens: int, vocab: int, engine_options: Sequence[str] = ()
) -> MemoryProbe:
    """Run `probe` for ``path`` in a fresh interpreter; a failure is a one-line `SlimpackError`. ``engine_options``:
    ``ENGINE.KEY=VALUE`` items (`runtime_bench.engines.parse_engine_options`)."""
    cmd = [sys.executable, "-m", "runtime_bench.memory", str(path), "--prompt", str(prompt), "--tokens", str(tokens)]
    cmd += ["--vocab", str(vocab)] + (["--threads", str(threads)] if threads else [])
    cmd += [f"--engine-option={item}" for item in engine_options]
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=die_with_parent())
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise SlimpackError(f"memory probe of {str(path)!r} failed: {lines[-1] if lines else proc.returncode}")
    return MemoryProbe.from_dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=1000, help="prompt ids are drawn below this")
    parser.add_argument(
        "--engine-option", action="append", default=[], metavar="ENGINE.KEY=VALUE",
        help="e.g. deepsparse.kv_cache=decode-only (replaces the bench's options for that engine)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        options = parse_engine_options(args.engine_option)
    except SlimpackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(probe(args.path, args.threads, args.prompt, args.tokens, args.vocab, options).to_dict()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
