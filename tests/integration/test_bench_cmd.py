"""``slimpack bench ART [ART …]`` on tiny artifacts: chosen artifacts timed interleaved per thread count (labels by
directory, the table, the JSON), beside ``bench sweep``; bad input refused in one line before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from prune.cli import build_parser
from runtime_bench.cli import main
from runtime_bench.latency import path_labels

TIMING = ["--prompt", "8", "--tokens", "4", "--rounds", "2", "--warmup", "1", "--batch", "2"]


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> dict[str, Path]:
    """A model directory, its onnx artifact and a copy of it in another directory of the same name, its deepsparse
    artifact."""
    root = tmp_path_factory.mktemp("bench")
    found = {"model": tiny_dir, "onnx": root / "a" / "onnx", "onnx2": root / "b" / "onnx", "ds": root / "a" / "ds"}
    assert main(["-q", "export", str(tiny_dir), "--format", "onnx", "--out", str(found["onnx"])]) == 0
    assert main(["-q", "export", str(tiny_dir), "--format", "deepsparse", "--out", str(found["ds"])]) == 0
    shutil.copytree(found["onnx"], found["onnx2"])
    return found


def test_times_artifacts_interleaved_per_thread_count(
    arts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", str(arts["model"]), str(arts["onnx"]), str(arts["onnx2"]), "--threads", "1,2", "--json", str(out)]
    assert main(["-q", *argv, *TIMING]) == 0
    report = json.loads(out.read_text())
    assert report["spec"] == {"prompt": 8, "tokens": 4, "rounds": 2, "warmup": 1, "batch": 2, "seed": 0}
    assert report["threads"] == [1, 2] and report["cpu"]["model"] and isinstance(report["cpu"]["flags"], list)
    artifacts = report["artifacts"]
    assert list(artifacts) == ["model", "a/onnx", "b/onnx"]  # directory names; the parent where two share one
    assert [a["engine"] for a in artifacts.values()] == ["torch", "onnxruntime", "onnxruntime"]
    assert artifacts["a/onnx"]["path"] == str(arts["onnx"]) and artifacts["a/onnx"]["bytes"] > 100_000
    for a in artifacts.values():
        assert set(a["threads"]) == {"1", "2"}
        for r in a["threads"].values():
            for key in ("prefill_ms", "decode_ms_per_token"):
                q = r[key]
                assert q["n"] == 2 and 0 < q["q1"] <= q["median"] <= q["q3"], (key, q)
            assert len(r["raw"]["decode_ms"]) == 2 and r["batch"]["tokens_per_s"]["median"] > 0
    table = capsys.readouterr().out
    assert "| artifact | engine | threads | prefill ms (q1–q3) | decode ms/token (q1–q3) | batch 2 tokens/s" in table
    assert "| b/onnx | onnxruntime | 2 |" in table and "| model | torch | 1 |" in table


def test_engine_names_what_may_be_timed(arts: dict[str, Path], tmp_path: Path) -> None:
    """``--engine`` accepts the ARTs that run in one of its engines; without --batch no batch figures."""
    out = tmp_path / "b.json"
    argv = ["-q", "bench", str(arts["onnx"]), "--engine", "onnxruntime,torch", "--json", str(out), *TIMING]
    assert main([*argv, "--batch", "0"]) == 0
    (a,) = json.loads(out.read_text())["artifacts"].values()
    assert a["engine"] == "onnxruntime" and set(a["threads"]) == {"2"} and "batch" not in a["threads"]["2"]


def test_bench_sweep_and_bench_art_parse_beside_each_other(tmp_path: Path) -> None:
    parser = build_parser()
    sweep = parser.parse_args(["bench", "sweep", "--model", "m", "--threads", "1"])
    assert sweep.bench == "sweep" and sweep.threads == (1,) and str(sweep.model) == "m"
    timed = parser.parse_args(["bench", "./sweep", "x", "--threads", "1,2", "--engine", "torch"])
    assert timed.bench == "ART" and timed.artifacts == ["./sweep", "x"]
    assert timed.threads == (1, 2) and timed.engine == ("torch",) and timed.json is None and timed.batch == 4
    assert parser.parse_args(["bench", "ART"]).artifacts == ["ART"]  # a directory named ART is an artifact


def test_labels_take_as_many_parents_as_tell_paths_apart() -> None:
    paths = [Path("r/a/x/onnx"), Path("r/b/x/onnx"), Path("r/ds"), Path("r/c/onnx2")]
    assert list(path_labels(paths)) == ["a/x/onnx", "b/x/onnx", "ds", "onnx2"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["{missing}"], "does not exist; pass an artifact of `slimpack export`"),
        (["{empty}"], "is neither an artifact, a model directory nor an ONNX model"),
        (["{onnx}", "--threads", "0"], "threads 0 must be ≥ 1; pass e.g. --threads 1,2"),
        (["{onnx}", "--rounds", "0"], "bench rounds 0 must be ≥ 1"),
        (["{onnx}", "--engine", "onnxrt"], "unknown --engine 'onnxrt'; choose from: deepsparse, onnxruntime"),
        (["{model}", "{onnx}", "--engine", "torch"],
         "runs in onnxruntime (its export.json), not in --engine torch; drop it or add onnxruntime to --engine"),
        (["{ds}", "{model}"], "runs in deepsparse, which cannot be timed here"),
        (["{onnx}", "{onnx}/."], "are the same artifact; name each ART once"),
        (["{broken}"], "is not an export manifest"),
        (["{onnx}", "--json", "{onnx}/t.json"], "(--json) lies inside the input"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_before_any_work(
    args: list[str], expected: str, arts: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("timed before the input was checked")

    monkeypatch.setattr("runtime_bench.latency.measure", forbidden)
    monkeypatch.setenv("SLIMPACK_DEEPSPARSE_PYTHON", str(tmp_path / "no-such-python"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "export.json").write_text("[1")
    paths = {**{k: str(v) for k, v in arts.items()}, "missing": str(tmp_path / "missing"),
             "empty": str(tmp_path / "empty"), "broken": str(tmp_path / "broken")}  # fmt: skip
    out = tmp_path / "r.json"
    argv = [a.format(**paths) for a in args]
    assert main(["-q", "bench", *argv, *([] if "--json" in argv else ["--json", str(out)])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("slimpack: error: ") and expected in err[0], err
    assert not out.exists() and not (arts["onnx"] / "t.json").exists()
