"""Drills of issue #26, item 7 (three of the smaller ones): the AutoGPTQ check's (``slimpack check autogptq``) ``--copy-to`` leaves nothing
behind when the check fails and refuses a bad ``--tokens`` or a path in the checkpoint before any work; a memory
probe dies with the run that started it, even by ``kill -9``; the peak RSS a manifest records includes the
write of the model's files. AutoGPTQ's environment is stood in for by fake interpreters (``SLIMPACK_AUTOGPTQ_PYTHON``):
one that fails, one that answers with logits of the right shape, one whose logits do not fit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prune.io import die_with_parent
from runtime_bench.cli import main
from tests.conftest import save_tiny
from tests.integration.test_reliability import digest, one_line

FAST = ["--nsamples", "2", "--seqlen", "16"]
ROOT = Path(__file__).resolve().parents[2]

FAKE_OK = """
import json, sys, numpy as np
from safetensors.numpy import load_file, save_file
checkpoint, ids, out = sys.argv[2:5]
shape = (*load_file(ids)["input_ids"].shape, json.load(open(checkpoint + "/config.json"))["vocab_size"])
save_file({"logits": np.zeros(shape, np.float32)}, out, metadata={"kernels": "fake"})
"""
FAKE_MISFIT = """
import sys, numpy as np
from safetensors.numpy import save_file
save_file({"logits": np.zeros((1, 1, 3), np.float32)}, sys.argv[4], metadata={"kernels": "fake"})
"""
FAKE_FAIL = "echo 'fake AutoGPTQ: cannot load this checkpoint' >&2; exit 1\n"


def autogptq_check(argv: list[str]) -> int:
    """``slimpack check autogptq …``."""
    return main(["check", "autogptq", *argv])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:  # noqa: ANN001
    """``models/``: a tiny model ``m``, its GPTQ checkpoint ``q`` (v1), ``q2`` (v2) and a neighbour's file."""
    models = tmp_path_factory.mktemp("small") / "models"
    save_tiny(models / "m", tokenizer)
    args = ["-q", "quantize", str(models / "m"), "--method", "rtn", "--group-size", "32", *FAST]
    assert main([*args, "--out", str(models / "q")]) == 0
    shutil.copytree(models / "q", models / "q2")  # the same, marked as the v2 format AutoGPTQ misreads
    config = json.loads((models / "q2" / "config.json").read_text())
    config["quantization_config"]["checkpoint_format"] = "gptq_v2"
    (models / "q2" / "config.json").write_text(json.dumps(config))
    (models / "notes.txt").write_text("someone else's file\n")
    return models


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fakes")
    scripts = {"ok": f"#!{sys.executable}\n{FAKE_OK}", "misfit": f"#!{sys.executable}\n{FAKE_MISFIT}",
               "fail": f"#!/bin/sh\n{FAKE_FAIL}"}  # fmt: skip
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return {name: folder / name for name in scripts}


def left(copy_to: Path) -> list[str]:
    """What the check left at ``--copy-to`` and beside it (its temporary siblings)."""
    return sorted(p.name for p in copy_to.parent.glob(f"*{copy_to.name}*")) if copy_to.parent.exists() else []


def forbidden(*args: object, **kwargs: object) -> None:
    raise AssertionError("work started before the arguments were checked")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            lambda q, c: [str(q), "--tokens", "0", "--copy-to", str(c)],
            "--tokens 0 is not a token count; pass --tokens N with N ≥ 1",
        ),
        (lambda q, c: [str(q), "--tokens", "-3", "--copy-to", str(c)], "--tokens -3 is not a token count"),
        (
            lambda q, c: [str(q), "--tokens", "4096", "--copy-to", str(c)],
            "--tokens 4096 exceeds the model's max_position_embeddings 2048; pass --tokens ≤ 2048",
        ),
        (lambda q, c: [str(q), "--copy-to", str(q)], "(--copy-to) is the input"),
        (lambda q, c: [str(q), "--copy-to", str(q / "sub")], "(--copy-to) lies inside the input"),
        (lambda q, c: [str(q), "--copy-to", str(q.parent)], "(--copy-to) holds the input"),
        (lambda q, c: [str(q), "--json", str(q / "config.json")], "(--json) lies inside the input"),
        (lambda q, c: [str(q), "--copy-to", str(q.parent / "m")], "already exists; choose a new directory"),
        (lambda q, c: [str(q.parent / "m" / "nothing"), "--copy-to", str(c)], "has no config.json"),
    ],
    ids=[
        "tokens-0",
        "tokens-negative",
        "tokens-beyond-context",
        "copy-to-is-checkpoint",
        "copy-to-inside",
        "copy-to-holds",
        "json-inside",
        "copy-to-exists",
        "no-checkpoint",
    ],
)
def test_bad_arguments_of_the_autogptq_check_are_one_line_before_any_work(
    checkpoints: Path, fakes: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture, args, expected: str,  # noqa: ANN001
) -> None:  # fmt: skip
    monkeypatch.setenv("SLIMPACK_AUTOGPTQ_PYTHON", str(fakes["ok"]))
    monkeypatch.setattr("quant.external.gptqmodel_check.load_model", forbidden)  # nothing past the checks runs
    before, copy_to = digest(checkpoints), tmp_path / "copies" / "c"
    assert autogptq_check(args(checkpoints / "q", copy_to)) == 2
    line = one_line(capsys)
    assert line.startswith("slimpack: error: ") and expected in line, line
    assert digest(checkpoints) == before and left(copy_to) == [] and not (checkpoints / "q" / "sub").exists()


def test_a_missing_autogptq_environment_leaves_nothing(
    checkpoints: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("SLIMPACK_AUTOGPTQ_PYTHON", str(tmp_path / "no-such-python"))
    monkeypatch.setattr("quant.external.gptqmodel_check.load_model", forbidden)
    before, copy_to = digest(checkpoints), tmp_path / "copies" / "c"
    assert autogptq_check([str(checkpoints / "q"), "--copy-to", str(copy_to)]) == 2
    line = one_line(capsys)
    assert "AutoGPTQ environment not found" in line and "bash scripts/setup-autogptq.sh" in line, line
    assert digest(checkpoints) == before and left(copy_to) == []


@pytest.mark.parametrize(
    ("fake", "checkpoint", "expected"),
    [("fail", "q", "fake AutoGPTQ: cannot load this checkpoint"), ("ok", "q2", "would misread 'gptq_v2'")],
    ids=["runtime-fails", "runtime-would-misread"],
)
def test_a_check_that_fails_after_the_copy_is_written_leaves_nothing(
    checkpoints: Path, fakes: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture, fake: str, checkpoint: str, expected: str,
) -> None:  # fmt: skip
    monkeypatch.setenv("SLIMPACK_AUTOGPTQ_PYTHON", str(fakes[fake]))
    before, copy_to = digest(checkpoints), tmp_path / "copies" / "c"
    assert autogptq_check([str(checkpoints / checkpoint), "--tokens", "8", "--copy-to", str(copy_to)]) == 2
    line = one_line(capsys)
    assert expected in line and f"the copy for --copy-to {str(copy_to)!r}" in line and ".tmp-" not in line, line
    assert digest(checkpoints) == before and left(copy_to) == []


def test_a_comparison_that_does_not_fit_is_one_line_and_leaves_nothing(
    checkpoints: Path, fakes: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setenv("SLIMPACK_AUTOGPTQ_PYTHON", str(fakes["misfit"]))  # logits of another shape than ours
    before, copy_to = digest(checkpoints), tmp_path / "copies" / "c"
    assert autogptq_check([str(checkpoints / "q"), "--tokens", "8", "--copy-to", str(copy_to)]) == 2
    line = one_line(capsys)
    assert f"AutoGPTQ's output for the copy for --copy-to {str(copy_to)!r} does not match our model's" in line, line
    assert "(RuntimeError: The size of tensor" in line, line
    assert digest(checkpoints) == before and left(copy_to) == []


def test_a_check_that_succeeds_puts_the_copy_in_place(
    checkpoints: Path, fakes: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setenv("SLIMPACK_AUTOGPTQ_PYTHON", str(fakes["ok"]))
    before, copy_to = digest(checkpoints), tmp_path / "copies" / "c"
    assert autogptq_check([str(checkpoints / "q"), "--tokens", "8", "--copy-to", str(copy_to)]) == 0
    out = capsys.readouterr().out
    assert "| tokens | 8 |" in out and "| kernels | fake |" in out, out
    assert left(copy_to) == ["c"] and digest(checkpoints) == before
    assert {"config.json", "model.safetensors"} <= {p.name for p in copy_to.iterdir()}
    assert not (copy_to / "slimpack.json").exists()


# --- the memory probe dies with its run -----------------------------------------------------------------------

PROBE_PARENT = """
import os, sys
from pathlib import Path
from runtime_bench.memory import peak_rss
os.environ["PYTHONPATH"] = os.pathsep.join([sys.argv[1], os.environ.get("PYTHONPATH", "")])  # the probe hangs
peak_rss(Path("nowhere"), None, 4, 2, 10)
"""


def children(pid: int, running: bytes) -> list[int]:
    """The processes whose parent is ``pid`` and whose command line holds ``running`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid and running in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except OSError:  # gone meanwhile
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "kill-term"])
def test_a_memory_probe_dies_with_its_run(tmp_path: Path, how: signal.Signals) -> None:
    hang = tmp_path / "hang"
    hang.mkdir()
    (hang / "sitecustomize.py").write_text("import time\ntime.sleep(300)\n")  # the probe's interpreter stalls at start
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen([sys.executable, "-c", PROBE_PARENT, str(hang)], env=env, cwd=ROOT)
    probe = None
    try:
        deadline = time.monotonic() + 60
        while probe is None and time.monotonic() < deadline:
            probe = next(iter(children(run.pid, b"runtime_bench.memory")), None)  # exec'd: its prctl is set
            time.sleep(0.1)
        assert probe is not None, "the probe did not start"
        run.send_signal(how)
        run.wait(timeout=10)
        deadline = time.monotonic() + 5
        while alive(probe) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(probe), f"the memory probe {probe} outlived its run"
    finally:
        run.kill()
        run.wait()
        if probe is not None and alive(probe):
            os.kill(probe, signal.SIGKILL)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_probe_whose_parent_died_before_the_prctl_ends_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getpid", lambda: 1)  # the parent it was made for is not the one that forks it
    preexec = die_with_parent()
    monkeypatch.undo()
    start = time.monotonic()
    assert subprocess.run(["sleep", "30"], preexec_fn=preexec).returncode == 1 and time.monotonic() - start < 10


# --- the recorded peak RSS includes the write of the model's files ---------------------------------------------
# (prune and quantize through the stage template that structured pruning shares; export through its own)

PEAK = """
import json, resource, sys
import numpy as np
import export.gptq, prune.store, quant.stage
from runtime_bench.cli import main
from runtime_bench.memory import status_mib

observed = {}

def heavy(stage, write):
    def wrapped(*args, **kwargs):
        result = write(*args, **kwargs)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        buffer = np.ones(int((peak - status_mib("VmRSS") + 256) * 2**20), np.uint8)  # 256 MiB over the peak so far
        observed[stage] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        del buffer
        return result
    return wrapped

prune.store.save_model = heavy("prune", prune.store.save_model)
quant.stage.save_gptq = heavy("quantize", quant.stage.save_gptq)
export.gptq.GptqExporter.export = heavy("export", export.gptq.GptqExporter.export)
model, work = sys.argv[1:3]
fast = ["--nsamples", "2", "--seqlen", "16"]
stages = {"prune": ["prune", "--model", model, "--method", "magnitude", "--sparsity", "0.5", *fast],
          "quantize": ["quantize", model, "--method", "rtn", "--group-size", "32", *fast],
          "export": ["export", f"{work}/quantize", "--format", "gptq"]}
recorded = {}
for stage, args in stages.items():
    assert main(["-q", *args, "--out", f"{work}/{stage}"]) == 0
    manifest = json.load(open(f"{work}/{stage}/" + ("export.json" if stage == "export" else "slimpack.json")))
    recorded[stage] = manifest["peak_rss_mib"] if stage == "export" else manifest["timing"]["peak_rss_mib"]
print(json.dumps({stage: [observed[stage], recorded[stage]] for stage in stages}))
"""


def test_the_recorded_peak_rss_includes_the_write_of_the_model(tmp_path: Path, tokenizer) -> None:  # noqa: ANN001
    model = save_tiny(tmp_path / "m", tokenizer)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # a fresh process (forked: its peak starts at its own), so that the buffers stay small whatever ran before
    run = subprocess.run([sys.executable, "-c", PEAK, str(model), str(tmp_path)], env=env, cwd=ROOT,
                         capture_output=True, text=True, preexec_fn=die_with_parent(), timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    peaks = json.loads(run.stdout.strip().splitlines()[-1])
    for stage, (written, recorded) in peaks.items():  # recorded (MiB) ≥ the peak while its files were written
        assert recorded >= written - 0.1, (stage, peaks)
