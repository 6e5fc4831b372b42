"""``slimpack bench sweep`` on a tiny model: reports, caching (a rerun only measures), resuming a killed step,
a missing engine recorded as a skip, bad input refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime_bench.cli import main
from runtime_bench.latency import TimingReport
from runtime_bench.memory import MemoryProbe
from runtime_bench.pipeline.summary import SweepReport
from tests.integration.test_deepsparse import needs_deepsparse

TIMING = ["--prompt", "8", "--tokens", "4", "--rounds", "2", "--warmup", "1", "--batch", "2"]
DATA = ["--nsamples", "4", "--seqlen", "64", "--windows", "2"]


def sweep_args(model: Path, out: Path, engines: str = "onnxruntime,deepsparse") -> list[str]:
    return ["-q", "bench", "sweep", "--model", str(model), "--sparsities", "0.5", "--engines", engines,
            "--threads", "1", *DATA, *TIMING, "--out", str(out)]  # fmt: skip


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLIMPACK_DEEPSPARSE_PYTHON", str(out.parent / "no-such-python"))
        assert main(sweep_args(tiny_dir, out)) == 0
    return out


def test_sweep_reports(sweep_dir: Path) -> None:
    report = json.loads((sweep_dir / "sweep.json").read_text())
    assert SweepReport.read(sweep_dir / "sweep.json").to_dict() == report  # read typed, nothing lost
    (m,) = report["measurements"]
    assert m["engine"] == "onnxruntime" and m["threads"] == 1 and set(m["results"]) == {"dense", "s0.50"}
    s50 = m["results"]["s0.50"]
    assert s50["decode_ms_per_token"]["n"] == 2 and s50["batch"]["tokens_per_s"]["median"] > 0
    assert s50["speedup"]["decode"]["median"] > 0 and m["results"]["dense"]["speedup"]["decode"]["median"] == 1.0
    assert 0.45 < report["quality"]["s0.50"]["sparsity"] < 0.55 and report["quality"]["dense"]["perplexity"] > 1
    assert report["artifacts"]["onnxruntime"]["s0.50"]["memory"]["peak_rss_mib"] > 0
    assert "setup-deepsparse.sh" in report["skipped"]["deepsparse"]
    md = (sweep_dir / "sweep.md").read_text()
    assert "| Sparsity | Dense | 50% |" in md and "| Speedup |" in md and "**deepsparse: skipped**" in md
    assert "| Latency (ms) | 353.42 |" in md  # the paper's row beside ours
    assert (sweep_dir / "sweep.png").stat().st_size > 0


def test_rerun_only_measures(sweep_dir: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached step ran again")

    monkeypatch.setattr("runtime_bench.pipeline.stages.prune", forbidden)
    monkeypatch.setattr("runtime_bench.pipeline.stages.evaluate", forbidden)
    monkeypatch.setattr("runtime_bench.pipeline.stages.export_model", forbidden)
    monkeypatch.setattr("runtime_bench.pipeline.stages.peak_rss", forbidden)
    before = (sweep_dir / "sweep.json").stat().st_mtime_ns
    assert main(sweep_args(tiny_dir, sweep_dir, "onnxruntime")) == 0
    assert (sweep_dir / "sweep.json").stat().st_mtime_ns > before  # measured again


def test_killed_step_resumes(sweep_dir: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export whose record is missing (killed before it finished) runs again; the pruning does not."""
    monkeypatch.setattr("runtime_bench.pipeline.stages.prune", lambda *a, **k: (_ for _ in ()).throw(AssertionError("pruned again")))
    (sweep_dir / "state" / "onnxruntime-s0.50.json").unlink()
    artifact = sweep_dir / "artifacts" / "onnxruntime" / "s0.50" / "export.json"
    before = artifact.stat().st_mtime_ns
    assert main(sweep_args(tiny_dir, sweep_dir, "onnxruntime")) == 0
    assert artifact.stat().st_mtime_ns > before


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--engines", "onnxrt"], "unknown bench engine 'onnxrt'; choose one of: deepsparse, onnxruntime"),
        (["--sparsities", "0.5,1.2"], "sparsity 1.2 is outside (0, 1)"),
        (["--threads", "0"], "threads 0 must be ≥ 1"),
        (["--method", "wandaa"], "unknown method 'wandaa'"),
        (["--model", "/nonexistent/model"], "does not exist"),
    ],
)
def test_bad_sweep_input(
    args: list[str], expected: str, tmp_path: Path, tiny_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    assert main([*sweep_args(tiny_dir, out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not out.exists()


@needs_deepsparse
def test_sweep_times_deepsparse(tmp_path: Path, tiny_dir: Path) -> None:
    """With ``.venv-deepsparse``: the DeepSparse artifacts are timed; batch > 1 is recorded as not possible."""
    out = tmp_path / "sweep"
    assert main(sweep_args(tiny_dir, out, "deepsparse")) == 0
    report = json.loads((out / "sweep.json").read_text())
    (m,) = report["measurements"]
    assert m["engine"] == "deepsparse" and not report["skipped"]
    assert m["results"]["s0.50"]["decode_ms_per_token"]["median"] > 0
    assert "static batch of 1" in m["results"]["s0.50"]["batch"]["skipped"]
    assert report["artifacts"]["deepsparse"]["dense"]["memory"]["worker_peak_rss_mib"] > 0


def test_named_arts_are_timed_with_the_same_harness(tmp_path: Path, tiny_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """``slimpack bench NAME=PATH …`` (the retired ``python -m runtime_bench.latency``'s form): the same path twice
    under two names, each timed; its report reads back typed; a label given twice is one line, exit 2."""
    out = tmp_path / "latency.json"
    args = ["--prompt", "8", "--tokens", "4", "--rounds", "2", "--batch", "0", "--threads", "1"]
    assert main(["-q", "bench", f"a={tiny_dir}", f"b={tiny_dir}", *args, "--json", str(out)]) == 0
    report = TimingReport.read(out)
    assert set(report.artifacts) == {"a", "b"} and report.artifacts["a"].timing(1).decode_ms_per_token.median > 0
    assert report.to_dict() == json.loads(out.read_text())
    capsys.readouterr()
    assert main(["-q", "bench", f"a={tiny_dir}", f"a={tiny_dir}", *args]) == 2
    assert "labelled 'a'" in capsys.readouterr().err


def test_a_retired_latency_report_still_reads() -> None:
    old = {"engines": {"a": "x"}, "prompt": 8, "tokens": 4, "rounds": 2, "threads": 1, "cpu": {"model": "m"},
           "results": {"a": {q: {"median": 2.0, "q1": 1.0, "q3": 3.0, "n": 2} for q in
                             ("prefill_ms", "decode_ms_per_token", "tokens_per_s")}}}  # fmt: skip
    report = TimingReport.from_dict(old)
    assert report.threads == [1] and report.artifacts["a"].timing(1).prefill_ms.median == 2.0
    assert report.table().splitlines()[2].startswith("| a | ? | 1 | 2.00 (1.00–3.00)")


def test_bench_memory_probes_one_artifact_in_a_fresh_process(tmp_path: Path, tiny_dir: Path, capsys) -> None:  # noqa: ANN001
    """``slimpack bench memory ART`` (the memory probe a run and a sweep start, as a command): its figures as a
    table and as JSON; a path no engine runs and a bad count are one line each, exit 2, and nothing is written."""
    out = tmp_path / "memory.json"
    assert main(["-q", "bench", "memory", str(tiny_dir), "--prompt", "4", "--tokens", "2", "--threads", "1",
                 "--json", str(out)]) == 0  # fmt: skip
    probe = MemoryProbe.from_dict(json.loads(out.read_text()))
    assert probe.peak_rss_mib >= probe.baseline_rss_mib > 0 and (probe.prompt, probe.tokens) == (4, 2)
    assert "| peak RSS MiB |" in capsys.readouterr().out
    for args, expected in [([str(tmp_path / "nowhere")], "does not exist"), ([str(tiny_dir), "--tokens", "0"], "--tokens 0")]:
        assert main(["-q", "bench", "memory", *args, "--json", str(tmp_path / "bad.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
        assert not (tmp_path / "bad.json").exists()
