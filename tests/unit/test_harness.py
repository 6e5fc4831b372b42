"""The timing harness on fake engines with known delays: interleaving, warm-up, medians and quartiles."""

from __future__ import annotations

import time

import numpy as np

from runtime_bench.engines.base import EngineBase
from runtime_bench.harness import compare, quartiles, speedup, time_generation


class FakeEngine(EngineBase):
    """Sleeps ``prefill_s`` per prefill and ``step_s`` per decode step; logs the calls in ``log``."""

    def __init__(self, name: str, prefill_s: float, step_s: float, log: list[str]) -> None:
        self.name, self.prefill_s, self.step_s, self.log = name, prefill_s, step_s, log

    def prefill(self, input_ids: np.ndarray) -> tuple[np.ndarray, int]:
        self.log.append(self.name)
        time.sleep(self.prefill_s)
        return np.zeros((1, 8)), 0

    def step(self, token: np.ndarray, past: int) -> tuple[np.ndarray, int]:
        time.sleep(self.step_s)
        return np.zeros((1, 8)), past + 1


def test_rounds_alternate_order_and_discard_warmup() -> None:
    log: list[str] = []
    engines = {n: FakeEngine(n, 0.0, 0.0, log) for n in ("a", "b")}
    result = compare(engines, np.zeros((1, 4), np.int64), tokens=2, rounds=4, warmup=2)
    assert log == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert result["a"]["prefill_ms"]["n"] == 4 and result["b"]["decode_ms_per_token"]["n"] == 4


def test_medians_recover_known_delays() -> None:
    log: list[str] = []
    engines = {"slow": FakeEngine("slow", 0.030, 0.010, log), "fast": FakeEngine("fast", 0.010, 0.002, log)}
    result = compare(engines, np.zeros((1, 4), np.int64), tokens=5, rounds=3, warmup=1)
    # sleep overshoots by scheduler latency, never undershoots: bounds are [delay, delay + 15 ms]
    for name, (prefill, step) in {"slow": (30, 10), "fast": (10, 2)}.items():
        assert prefill <= result[name]["prefill_ms"]["median"] < prefill + 15
        assert step <= result[name]["decode_ms_per_token"]["median"] < step + 15
    assert result["slow"]["decode_ms_per_token"]["median"] > result["fast"]["decode_ms_per_token"]["median"]


def test_time_generation_counts_every_step() -> None:
    timing = time_generation(FakeEngine("x", 0.0, 0.001, []), np.zeros((1, 4), np.int64), tokens=7)
    assert len(timing.steps_s) == 7 and min(timing.steps_s) >= 0.001


def test_quartiles() -> None:
    q = quartiles([1.0, 2.0, 3.0, 4.0, 100.0])
    assert q == {"median": 3.0, "q1": 2.0, "q3": 4.0, "n": 5}


def test_batch_throughput_and_skip() -> None:
    class Rows(FakeEngine):
        """Any batch; a step takes ``step_s`` whatever the batch, so B rows give B× the tokens/s."""

        def prefill(self, input_ids: np.ndarray) -> tuple[np.ndarray, int]:
            super().prefill(input_ids)
            return np.zeros((input_ids.shape[0], 8)), 0

        def step(self, token: np.ndarray, past: int) -> tuple[np.ndarray, int]:
            time.sleep(self.step_s)
            return np.zeros((token.shape[0], 8)), past + 1

    log: list[str] = []
    fast = Rows("fast", 0.0, 0.004, log)
    static = Rows("static", 0.0, 0.004, log)
    static.max_batch = 1
    result = compare(
        {"fast": fast, "static": static},
        np.zeros((1, 4), np.int64),
        tokens=4,
        rounds=3,
        warmup=0,
        batch_prompt=np.zeros((4, 4), np.int64),
    )
    b1 = result["fast"]["tokens_per_s"]["median"]
    b4 = result["fast"]["batch"]["tokens_per_s"]["median"]
    assert 1000 / (4 + 15) < b1 <= 1000 / 4 and 3.0 < b4 / b1 < 5.0
    assert "tokens_per_s" not in result["static"]["batch"] and "batch ≤ 1" in result["static"]["batch"]["skipped"]
    assert len(result["static"]["raw"]["decode_ms"]) == 3 and "batch_decode_ms" not in result["static"]["raw"]


def test_speedup_is_taken_round_by_round() -> None:
    results = {"a": {"raw": {"decode_ms": [10.0, 20.0, 30.0]}}, "b": {"raw": {"decode_ms": [5.0, 10.0, 10.0]}}}
    s = speedup(results, "a", "b")
    assert s["median"] == 2.0 and s["q3"] == 2.5 and s["n"] == 3
