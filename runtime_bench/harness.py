"""Timing discipline shared by every benchmark: interleaved rounds, warm-up, medians and quartiles.

Each round runs every engine once, in alternating order (A B, B A, …), so that drift of a shared, noisy
machine falls on all engines alike; ``warmup`` rounds are discarded. An engine's round is one prefill of the
prompt and ``tokens`` greedy decode steps with the KV cache, each step timed on its own; engines that run out
of process (DeepSparse) time themselves (``time_generation``). Reported per engine, in milliseconds: the
median and quartiles over rounds of the prefill time and of the round's median step time.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class GenerationTiming:
    prefill_s: float
    steps_s: list[float]


def time_generation(engine: Any, prompt: np.ndarray, tokens: int) -> GenerationTiming:
    """Time one prefill and ``tokens`` decode steps (engines that run out of process time themselves)."""
    if hasattr(engine, "time_generation"):
        return GenerationTiming(*engine.time_generation(prompt, tokens))
    start = time.perf_counter()
    logits, past = engine.prefill(prompt)
    prefill = time.perf_counter() - start
    steps = []
    for _ in range(tokens):
        token = np.array([[int(logits[0].argmax())]], np.int64)
        start = time.perf_counter()
        logits, past = engine.step(token, past)
        steps.append(time.perf_counter() - start)
    return GenerationTiming(prefill, steps)


def quartiles(values: list[float]) -> dict[str, float]:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "n": len(values)}


def compare(engines: dict[str, Any], prompt: np.ndarray, tokens: int, rounds: int, warmup: int = 1) -> dict[str, Any]:
    """Interleaved rounds over ``engines``; times in milliseconds."""
    names = list(engines)
    prefill: dict[str, list[float]] = {n: [] for n in names}
    decode: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            timing = time_generation(engines[name], prompt, tokens)
            if r >= warmup:
                prefill[name].append(1e3 * timing.prefill_s)
                decode[name].append(1e3 * float(np.median(timing.steps_s)))
        log.info("round %d/%d done", r + 1, warmup + rounds)
    return {n: {"prefill_ms": quartiles(prefill[n]), "decode_ms_per_token": quartiles(decode[n])} for n in names}


def cpu_info() -> dict[str, Any]:
    """CPU model and the SIMD flags that matter for these runtimes."""
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
    return {"model": model, "flags": [f for f in wanted if f in flags]}
