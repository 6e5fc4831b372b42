"""Resumable steps: same configuration and outputs present → skipped; otherwise the step runs again."""

from __future__ import annotations

from pathlib import Path

from runtime_bench.pipeline.steps import StepCache


def test_step_is_skipped_only_when_key_and_outputs_match(tmp_path: Path) -> None:
    calls: list[int] = []
    out = tmp_path / "thing.txt"

    def make(value: int):  # noqa: ANN202
        def run() -> dict:
            calls.append(value)
            out.write_text(str(value))
            return {"outputs": [str(out)], "value": value}

        return run

    cache = StepCache(tmp_path)
    assert not cache.run("s", {"a": 1}, make(1)).cached
    again = cache.run("s", {"a": 1}, make(2))
    assert again.cached and again.result["value"] == 1 and calls == [1]
    assert not cache.run("s", {"a": 2}, make(3)).cached and calls == [1, 3]  # configuration changed
    out.unlink()
    assert not cache.run("s", {"a": 2}, make(4)).cached and calls == [1, 3, 4]  # output gone
    (tmp_path / "state" / "s.json").unlink()  # a step killed before its record was written
    assert not cache.run("s", {"a": 2}, make(5)).cached and calls == [1, 3, 4, 5]
