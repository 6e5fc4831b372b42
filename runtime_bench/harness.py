"""Timing discipline shared by every benchmark: interleaved rounds, warm-up, medians and quartiles.

Each round runs every engine once, in alternating order (A B, B A, …), so that drift of a shared, noisy
machine falls on all engines alike; ``warmup`` rounds are discarded. An engine's round is one prefill of the
prompt (``int64 [1, P]``) and ``tokens`` greedy decode steps with the KV cache, each step timed on its own;
engines that run out of process (DeepSparse) time themselves (`runtime_bench.engines.base.SelfTimed`). With a batch prompt
(``int64 [B, P]``) a round also decodes B sequences at once (throughput at batch B; engines whose
``max_batch`` is smaller are skipped, with the reason recorded).

Reported per engine: the median and quartiles over rounds of the prefill time (ms), of the round's median
decode step (ms/token) and of the throughput (tokens/s: ``1000 / step ms`` at batch 1, ``B · 1000 / step ms``
at batch B), and the raw per-round values, so that ratios between engines are taken round by round
(`speedup`): the engines of one round ran under the same machine load.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prune.errors import SlimpackError
from runtime_bench.engines import BENCH_ENGINE_OPTIONS, open_engine
from runtime_bench.engines.base import SelfTimed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchSpec:
    """What one timed round does: a P-token prompt, then ``tokens`` decode steps (batch 1 and ``batch``)."""

    prompt: int = 128
    tokens: int = 32
    rounds: int = 5
    warmup: int = 1
    batch: int = 4  # 0 or 1: no batch throughput
    seed: int = 0

    def check(self) -> None:
        for name, value in (("prompt", self.prompt), ("tokens", self.tokens), ("rounds", self.rounds)):
            if value < 1:
                raise SlimpackError(f"bench {name} {value} must be ≥ 1")
        if self.warmup < 0 or self.batch < 0:
            raise SlimpackError(f"bench warmup {self.warmup} and batch {self.batch} must be ≥ 0")


@dataclass
class GenerationTiming:
    prefill_s: float
    steps_s: list[float]


def time_generation(engine: Any, prompt: np.ndarray, tokens: int) -> GenerationTiming:
    """Time one prefill of ``prompt: int64 [B, P]`` and ``tokens`` decode steps of all B rows at once
    (engines that run out of process time themselves)."""
    if isinstance(engine, SelfTimed):
        return GenerationTiming(*engine.time_generation(prompt, tokens))
    start = time.perf_counter()
    logits, past = engine.prefill(prompt)
    prefill = time.perf_counter() - start
    steps = []
    for _ in range(tokens):
        token = np.asarray(logits).argmax(-1).astype(np.int64).reshape(-1, 1)
        start = time.perf_counter()
        logits, past = engine.step(token, past)
        steps.append(time.perf_counter() - start)
    return GenerationTiming(prefill, steps)


@dataclass(frozen=True)
class Quartiles:
    median: float
    q1: float
    q3: float
    n: int


@dataclass(frozen=True)
class BatchTiming:
    """Throughput at batch ``batch`` — or why this engine skipped it."""

    batch: int
    tokens_per_s: Quartiles | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class Speedup:
    decode: Quartiles
    prefill: Quartiles


@dataclass(frozen=True)
class EngineTiming:
    """One engine's figures as `compare` writes them (the JSON layout of every benchmark; `add_speedups` adds the
    speedup over its base), read back typed (`of`). The raw rounds stay in the file."""

    prefill_ms: Quartiles
    decode_ms_per_token: Quartiles
    tokens_per_s: Quartiles
    batch: BatchTiming | None = None
    speedup: Speedup | None = None

    @classmethod
    def of(cls, entry: dict[str, Any]) -> EngineTiming:
        batch, speed = entry.get("batch"), entry.get("speedup")
        return cls(
            Quartiles(**entry["prefill_ms"]),
            Quartiles(**entry["decode_ms_per_token"]),
            Quartiles(**entry["tokens_per_s"]),
            None if batch is None else BatchTiming(
                batch["batch"],
                Quartiles(**batch["tokens_per_s"]) if "tokens_per_s" in batch else None,
                batch.get("skipped"),
            ),
            None if speed is None else Speedup(Quartiles(**speed["decode"]), Quartiles(**speed["prefill"])),
        )  # fmt: skip


def timings(results: dict[str, Any]) -> dict[str, EngineTiming]:
    """`compare`'s results (label → entry, as written) typed."""
    return {lab: EngineTiming.of(entry) for lab, entry in results.items()}


def quartiles(values: list[float]) -> dict[str, float]:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "n": len(values)}


def compare(
    engines: dict[str, Any],
    prompt: np.ndarray,
    tokens: int,
    rounds: int,
    warmup: int = 1,
    batch_prompt: np.ndarray | None = None,
) -> dict[str, Any]:
    """Interleaved rounds over ``engines`` (times in ms, throughput in tokens/s; see the module docstring)."""
    names = list(engines)
    raw: dict[str, dict[str, list[float]]] = {
        n: {"prefill_ms": [], "decode_ms": [], "batch_decode_ms": []} for n in names
    }
    batch = 0 if batch_prompt is None else int(batch_prompt.shape[0])
    skips = {n: engines[n].batch_limit(batch) if batch else None for n in names}
    for r in range(warmup + rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            timing = time_generation(engines[name], prompt, tokens)
            batch_timing = None
            if batch and skips[name] is None:
                assert batch_prompt is not None
                batch_timing = time_generation(engines[name], batch_prompt, tokens)
            if r >= warmup:
                raw[name]["prefill_ms"].append(1e3 * timing.prefill_s)
                raw[name]["decode_ms"].append(1e3 * float(np.median(timing.steps_s)))
                if batch_timing is not None:
                    raw[name]["batch_decode_ms"].append(1e3 * float(np.median(batch_timing.steps_s)))
        log.info("round %d/%d done", r + 1, warmup + rounds)
    results: dict[str, Any] = {}
    for name in names:
        values = raw[name]
        entry: dict[str, Any] = {
            "prefill_ms": quartiles(values["prefill_ms"]),
            "decode_ms_per_token": quartiles(values["decode_ms"]),
            "tokens_per_s": quartiles([1e3 / v for v in values["decode_ms"]]),
        }
        if batch:
            entry["batch"] = {"batch": batch}
            if skips[name] is None:
                entry["batch"]["tokens_per_s"] = quartiles([batch * 1e3 / v for v in values["batch_decode_ms"]])
            else:
                entry["batch"]["skipped"] = skips[name]
        entry["raw"] = {k: v for k, v in values.items() if v}
        results[name] = entry
    return results


def speedup(results: dict[str, Any], base: str, other: str, key: str = "decode_ms") -> dict[str, float]:
    """``base`` time / ``other`` time, round by round (the same round ran both under the same load)."""
    a, b = results[base]["raw"][key], results[other]["raw"][key]
    return quartiles([x / y for x, y in zip(a, b)])


@dataclass(frozen=True)
class CpuInfo:
    """The CPU a measurement ran on: its model, the logical CPUs this process may use, the SIMD flags that matter
    for these runtimes (JSON ``{model, cpus, flags}``)."""

    model: str
    cpus: int
    flags: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "cpus": self.cpus, "flags": list(self.flags)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CpuInfo:
        return cls(str(data.get("model", "?")), int(data.get("cpus", 0)), list(data.get("flags", [])))

    def describe(self) -> str:
        """``"AMD EPYC (avx2, avx512f; 2 CPUs)"``."""
        return f"{self.model} ({', '.join(self.flags) or 'no AVX2'}; {self.cpus} CPUs)"


def cpu_info() -> CpuInfo:
    """The CPU this process runs on (`CpuInfo`), from ``/proc/cpuinfo``."""
    import os

    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    return CpuInfo(model, len(os.sched_getaffinity(0)), [f for f in wanted if f in flags])


def vocab_size(model: Path) -> int:
    return int(json.loads((model / "config.json").read_text())["vocab_size"])


def measure(paths: dict[str, Path], threads: int, bench: BenchSpec, vocab: int, engine_name: str) -> dict[str, Any]:
    """Load every artifact of ``paths`` (label → artifact) with ``threads`` and time them interleaved."""
    import torch

    torch.set_num_threads(threads)
    rng = np.random.RandomState(bench.seed)
    prompt = rng.randint(0, vocab, (1, bench.prompt)).astype(np.int64)
    batch_prompt = rng.randint(0, vocab, (bench.batch, bench.prompt)).astype(np.int64) if bench.batch > 1 else None
    engines: dict[str, Any] = {}
    try:
        for lab, path in paths.items():
            log.info("loading %s %s (%d threads)", engine_name, lab, threads)
            engines[lab] = open_engine(path, threads, BENCH_ENGINE_OPTIONS)
        return compare(engines, prompt, bench.tokens, bench.rounds, bench.warmup, batch_prompt)
    finally:
        for engine in engines.values():
            engine.close()


def add_speedups(results: dict[str, Any], bases: dict[str, str]) -> None:
    """Decode and prefill speedups of each entry over its base (``bases``: entry → base entry), round by
    round (in place); entries without a base get none."""
    for lab, base in bases.items():
        results[lab]["speedup"] = {
            "decode": speedup(results, base, lab, "decode_ms"),
            "prefill": speedup(results, base, lab, "prefill_ms"),
        }
