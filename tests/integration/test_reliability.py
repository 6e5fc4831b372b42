"""Drills of issue #16 (a careless or hostile user): outputs never destroy inputs, an output that appears while a
run works is never replaced without --overwrite, a run directory serves one run at a time."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from prune.errors import SlimpackError
from prune.io import atomic_output_dir, locked_dir
from runtime_bench.cli import main
from tests.conftest import save_tiny

FAST = ["--nsamples", "2", "--seqlen", "16"]


def digest(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory``, by relative path."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def model(tmp_path: Path, tokenizer) -> Path:  # noqa: ANN001
    parent = tmp_path / "models"
    model = save_tiny(parent / "m", tokenizer)
    (parent / "notes.txt").write_text("someone else's file\n")
    return model


def one_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("target", "relation"),
    [(lambda m: m, "is"), (lambda m: m.parent, "holds"), (lambda m: m / "sub", "lies inside")],
    ids=["the-model", "its-parent", "inside-it"],
)
def test_an_output_that_is_holds_or_lies_inside_the_input_is_refused(
    model: Path,
    target,
    relation: str,
    capsys: pytest.CaptureFixture,  # noqa: ANN001
) -> None:
    before = digest(model.parent)
    out = target(model)
    for args in (
        ["prune", "--model", str(model), "--method", "magnitude", "--sparsity", "0.5"],
        ["quantize", str(model), "--method", "rtn", "--group-size", "32"],
        ["export", str(model), "--format", "onnx"],
    ):
        assert main(["-q", *args, *(FAST if args[0] != "export" else []), "--out", str(out), "--overwrite"]) == 2
        line = one_line(capsys)
        assert f"{relation} the input" in line and line.endswith("choose an --out outside it"), line
    assert digest(model.parent) == before  # the model and its neighbour untouched, no temporary left


def test_a_run_directory_that_holds_the_model_is_refused(model: Path, capsys: pytest.CaptureFixture) -> None:
    recipe = model.parent.parent / "r.yaml"
    recipe.write_text(f"model: {model}\nout: {model.parent}\nstages:\n  prune: {{method: magnitude, sparsity: 0.5}}\n")
    before = digest(model.parent)
    assert main(["-q", "run", str(recipe)]) == 2
    assert "holds the input" in one_line(capsys) and digest(model.parent) == before


def test_an_output_that_appears_meanwhile_is_left_as_it_is(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(SlimpackError, match="appeared while this run worked"):
        with atomic_output_dir(out) as tmp:
            (tmp / "ours.txt").write_text("ours")
            out.mkdir()  # another process finished first
            (out / "theirs.txt").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_overwrite_replaces_and_leaves_nothing_beside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / "record.json").write_text("{}")  # slimpack's own output (issue #26: never someone else's files)
    with atomic_output_dir(out, overwrite=True, record="record.json") as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_run_directory_serves_one_run_at_a_time(tmp_path: Path) -> None:
    with locked_dir(tmp_path / "run"):
        with pytest.raises(SlimpackError, match=r"in use by another slimpack process \(pid \d+\)"):
            with locked_dir(tmp_path / "run"):
                pass
    with locked_dir(tmp_path / "run"):  # released when the first run ends
        pass
    (tmp_path / "file").write_text("")
    with pytest.raises(SlimpackError, match="is a file, not a directory"):
        with locked_dir(tmp_path / "file"):
            pass


def damage(model: Path, how: str) -> str:
    """Damage the tiny model's safetensors as ``how`` says; returns what the error must name."""
    from safetensors.torch import load_file, save_file

    file = next(model.glob("*.safetensors"))
    tensors = load_file(str(file))
    name = "model.layers.1.mlp.down_proj.weight"
    if how == "missing":
        del tensors[name]
    elif how == "extra":
        tensors["model.layers.9.mlp.up_proj.weight"] = tensors[name].clone()
        name = "model.layers.9.mlp.up_proj.weight"
    elif how == "shape":
        tensors[name] = tensors[name][:, :-1].contiguous()
    if how in ("missing", "extra", "shape"):
        save_file(tensors, str(file), metadata={"format": "pt"})
        return name
    data = file.read_bytes()
    if how == "truncated":
        file.write_bytes(data[: len(data) // 2])
        return "is truncated"
    file.write_bytes(b"\x80\x04\x95" + data[3:200])  # a pickle's opening bytes under a .safetensors name
    return "is not a safetensors file"


@pytest.mark.parametrize("how", ["missing", "extra", "shape", "truncated", "pickle"])
def test_a_damaged_checkpoint_is_named_in_one_line_by_every_command(
    model: Path, how: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    named = damage(model, how)
    before = digest(model.parent)
    commands = {
        "prune": ["prune", "--model", str(model), "--method", "magnitude", "--sparsity", "0.5", *FAST],
        "eval": ["eval", str(model), "--seqlen", "16", "--windows", "1"],
        "export": ["export", str(model), "--format", "onnx"],
        "quantize": ["quantize", str(model), "--method", "rtn", "--group-size", "32", *FAST],
    }
    for name, args in commands.items():
        out = ["--out", str(tmp_path / name)] if name != "eval" else []
        assert main(["-q", *args, *out]) == 2, name
        line = one_line(capsys)
        assert named in line, (name, line)
        assert not (tmp_path / name).exists()
    assert digest(model.parent) == before and not list(tmp_path.glob(".*tmp-*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seqlen", "1"], "eval seqlen 1 leaves no token to predict"),
        (["--prompt", "0"], "--prompt 0 must be ≥ 1"),
        (["--tokens", "0"], "--tokens 0 must be ≥ 1"),
        (["--prompt", "40", "--seqlen", "32"], "--prompt 40 is longer than one window"),
        (["--tolerance", "-1"], "--tolerance -1.0 must be ≥ 0"),
        (["--seqlen", "100000"], "--seqlen 100000 exceeds the model's max_position_embeddings"),
    ],
)
def test_verify_settings_that_cannot_give_a_verdict_are_one_line(
    model: Path, args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    artifact = tmp_path / "onnx"
    assert main(["-q", "export", str(model), "--format", "onnx", "--out", str(artifact)]) == 0
    capsys.readouterr()
    assert main(["-q", "verify", str(artifact), "--reference", str(model), "--windows", "1", *args]) == 2
    assert message in one_line(capsys)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("  verify: {tokens: -5}", "stages.verify: --tokens -5 must be ≥ 1"),
        ("  verify: {tolerance: -1.0}", "stages.verify: --tolerance -1.0 must be ≥ 0"),
    ],
)
def test_a_recipe_verify_section_is_checked_before_any_work(
    model: Path, body: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {model}\nout: {tmp_path / 'run'}\nstages:\n  prune: {{method: magnitude, sparsity: 0.5}}\n"
                      f"  export: {{onnx: {{format: onnx, source: prune}}}}\n{body}\n")  # fmt: skip
    assert main(["-q", "run", str(recipe)]) == 2
    assert message in one_line(capsys) and not (tmp_path / "run").exists()


def test_a_sequence_longer_than_the_model_can_place_is_refused(model: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    args = ["--model", str(model), "--method", "wanda", "--sparsity", "0.5", "--nsamples", "2"]
    assert main(["-q", "prune", *args, "--seqlen", "100000", "--out", str(tmp_path / "o")]) == 2
    assert "--seqlen 100000 exceeds the model's max_position_embeddings" in one_line(capsys)
    assert main(["-q", "eval", str(model), "--seqlen", "100000"]) == 2
    assert "exceeds the model's max_position_embeddings" in one_line(capsys) and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\x00\xff\xfe\x00", "is not UTF-8 text"), (None, "is a directory")],
)
def test_a_recipe_or_plan_that_is_not_text_is_one_line(
    model: Path, content: bytes | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "thing"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    assert main(["-q", "run", str(path)]) == 2
    assert f"recipe {str(path)!r} {message}" in one_line(capsys)
    args = [
        "--model",
        str(model),
        "--plan",
        str(path),
        "--nsamples",
        "2",
        "--seqlen",
        "16",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(["-q", "prune", *args]) == 2
    assert f"plan file {str(path)!r} {message}" in one_line(capsys)


def test_a_killed_writers_temporaries_are_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    import os
    import subprocess

    done = subprocess.run(["true"])  # a pid that no longer runs
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "onnx"
    orphan, live = tmp_path / f".onnx.tmp-{dead.pid}-abc", tmp_path / f".onnx.tmp-{os.getpid()}-def"
    for d in (orphan, live):
        d.mkdir()
        (d / "model.onnx").write_text("half")
    with atomic_output_dir(out) as tmp:
        (tmp / "model.onnx").write_text("whole")
    assert (
        done.returncode == 0 and not orphan.exists() and live.exists() and (out / "model.onnx").read_text() == "whole"
    )


RECIPE = "model: {model}\nout: {out}\ndata: {{nsamples: 2, seqlen: 16}}\neval: {{seqlen: 16, windows: 2}}\nstages:\n  prune: {{method: magnitude, sparsity: 0.5}}\n"


def steps_of(run: Path) -> dict[str, str]:
    import json

    return {s["step"]: s["status"] for s in json.loads((run / "summary.json").read_text())["steps"]}


def test_model_files_replaced_at_the_same_path_are_not_cached(model: Path, tmp_path: Path, tokenizer) -> None:  # noqa: ANN001
    import json

    recipe, run = tmp_path / "r.yaml", tmp_path / "run"
    recipe.write_text(RECIPE.format(model=model, out=run))
    assert main(["-q", "run", str(recipe)]) == 0
    first = json.loads((run / "summary.json").read_text())["models"]["dense"]["perplexity"]
    assert main(["-q", "run", str(recipe)]) == 0 and set(steps_of(run).values()) == {"cached"}
    save_tiny(model, tokenizer, seed=7)  # other weights, same path
    assert main(["-q", "run", str(recipe)]) == 0
    assert set(steps_of(run).values()) == {"ran"}
    assert json.loads((run / "summary.json").read_text())["models"]["dense"]["perplexity"] != first


def test_a_rerun_that_fails_leaves_no_report_of_the_last_run(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    recipe, run = tmp_path / "r.yaml", tmp_path / "run"
    recipe.write_text(RECIPE.format(model=model, out=run))
    assert main(["-q", "run", str(recipe)]) == 0 and (run / "summary.json").is_file() and (run / "report.md").is_file()

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise SlimpackError("the prune stage broke")

    monkeypatch.setattr("runtime_bench.pipeline.run.run_models", broken)
    assert main(["-q", "run", str(recipe)]) == 2
    assert "the prune stage broke" in one_line(capsys)
    assert not (run / "summary.json").exists() and not (run / "report.md").exists()


def test_inspect_reads_every_kind_of_output_slimpack_writes(model: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """Plain, structured, GPTQ v1 / v2 and dequantized: each inspected, its files verified, its sparsity
    measured through its own checkpoint kind (a GPTQ linear decoded; pruned zeros stay zeros)."""
    import json

    pruned = tmp_path / "pruned"
    assert main(["-q", "prune", "--model", str(model), "--method", "magnitude", "--sparsity", "0.5", *FAST,
                 "--out", str(pruned)]) == 0  # fmt: skip
    outputs = {
        "plain": (pruned, None),
        "structured": (["prune", "--model", str(model), "--structured", "--sparsity", "0.3", *FAST], None),
        "gptq": (["quantize", str(pruned), "--group-size", "32", *FAST], 0.5),
        "gptq_v2": (["quantize", str(pruned), "--group-size", "32", "--checkpoint-format", "gptq_v2", *FAST], 0.5),
        "dequantized": (["quantize", str(pruned), "--group-size", "32", "--checkpoint-format", "dequantized", *FAST],
                        0.5),
        "joint": (["quantize", str(model), "--group-size", "32", "--joint-with", "sparsegpt", "--pattern", "2:4",
                   *FAST], 0.5),
    }  # fmt: skip
    for name, (made, at_least) in outputs.items():
        out = made if isinstance(made, Path) else tmp_path / name
        if not isinstance(made, Path):
            assert main(["-q", *made, "--out", str(out)]) == 0, name
        capsys.readouterr()
        assert main(["-q", "inspect", str(out), "--json", str(tmp_path / f"{name}.json")]) == 0, name
        report = json.loads((tmp_path / f"{name}.json").read_text())
        assert report["files"]["verified"], name
        assert report["sparsity"]["overall"] >= (at_least if at_least is not None else 0.0), name
        assert "files verified against the manifest: True" in capsys.readouterr().out


def test_inspect_names_tampering_and_says_when_there_is_nothing_to_verify(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "p"
    assert main(["-q", "prune", "--model", str(model), "--method", "magnitude", "--sparsity", "0.5", *FAST,
                 "--out", str(out)]) == 0  # fmt: skip
    (out / "extra.txt").write_text("not written by slimpack")
    capsys.readouterr()
    assert main(["-q", "inspect", str(out)]) == 1
    shown = capsys.readouterr().out
    assert "files unlisted since the manifest: extra.txt" in shown and "verified against the manifest: False" in shown
    (out / "slimpack.json").unlink()
    assert main(["-q", "inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "files: not verified — no slimpack.json in the directory: nothing to verify the files against" in shown


def tamper_zeros(artifact: Path) -> None:
    """Set 200 pruned zeros of one exported weight to 0.05 (inline or external data alike)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(artifact / "model.onnx"))
    for tensor in proto.graph.initializer:
        if tensor.name.endswith("q_proj.weight_t") or "q_proj" in tensor.name and tensor.dims and len(tensor.dims) == 2:
            array = numpy_helper.to_array(tensor).copy()
            flat = array.reshape(-1)
            flat[np.flatnonzero(flat == 0)[:200]] = 0.05
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
            break
    else:
        raise AssertionError("no q_proj weight in the graph")
    onnx.save(proto, str(artifact / "model.onnx"))


def test_verify_catches_tampering_before_any_number(model: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    import json

    from prune.io import hash_files

    pruned, artifact = tmp_path / "pruned", tmp_path / "onnx"
    assert main(["-q", "prune", "--model", str(model), "--method", "magnitude", "--sparsity", "0.5", *FAST,
                 "--out", str(pruned)]) == 0  # fmt: skip
    assert main(["-q", "export", str(pruned), "--format", "onnx", "--out", str(artifact)]) == 0
    manifest = json.loads((artifact / "export.json").read_text())
    assert set(manifest["sha256"]) == {p.name for p in artifact.iterdir() if p.name != "export.json"}
    verify = ["-q", "verify", str(artifact), "--reference", str(pruned), "--seqlen", "16", "--windows", "2",
              "--prompt", "4", "--tokens", "4"]  # fmt: skip
    assert main([*verify, "--json", str(tmp_path / "ok.json")]) == 0
    assert json.loads((tmp_path / "ok.json").read_text())["integrity"]["ok"]
    tamper_zeros(artifact)
    capsys.readouterr()
    assert main([*verify, "--json", str(tmp_path / "changed.json")]) == 1
    report = json.loads((tmp_path / "changed.json").read_text())
    assert report["integrity"]["files"]["changed"] == ["model.onnx"] and "perplexity" not in report
    assert "changed: model.onnx" in capsys.readouterr().out
    manifest["sha256"] = hash_files(artifact, exclude=("export.json",))  # a hostile edit of the record too
    (artifact / "export.json").write_text(json.dumps(manifest))
    assert main([*verify, "--json", str(tmp_path / "zeros.json")]) == 1
    zeros = json.loads((tmp_path / "zeros.json").read_text())["integrity"]["zeros"]
    assert zeros["artifact"] == zeros["source"] - 200 and not zeros["ok"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "data: {dataset: /nonexistent.txt}\nstages:\n  prune: {method: magnitude, sparsity: 0.5}",
            "data: unknown dataset '/nonexistent.txt'",
        ),
        (
            "eval: {seqlen: 0}\nstages:\n  prune: {method: magnitude, sparsity: 0.5}",
            "eval: eval seqlen 0 leaves no token to predict",
        ),
        (
            "eval: {dataset: bogus}\nstages:\n  prune: {method: magnitude, sparsity: 0.5}",
            "eval: unknown dataset 'bogus'",
        ),
        (
            "stages:\n  quantize: {group_size: 48}",
            "stages.quantize: group size 48 does not divide the 64 input features",
        ),
        ("stages:\n  prune: {method: sparsegpt, pattern: '3:7'}", "stages.prune: pattern 3:7 does not fit"),
        ("stages:\n  quantize: {method: bogus}", "stages.quantize: unknown quantization method 'bogus'"),
    ],
    ids=["data-dataset", "eval-seqlen", "eval-dataset", "group-size-fit", "pattern-fit", "quant-method"],
)
def test_everything_a_recipe_names_is_checked_before_the_first_step(
    model: Path, body: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {model}\nout: {tmp_path / 'run'}\n{body}\n")
    assert main(["-q", "run", str(recipe)]) == 2
    assert message in one_line(capsys) and not (tmp_path / "run").exists()


def test_a_full_disk_is_one_line_before_and_during_the_work(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import errno
    import shutil
    from collections import namedtuple

    args = ["-q", "prune", "--model", str(model), "--method", "magnitude", "--sparsity", "0.5", *FAST]
    usage = namedtuple("usage", "total used free")
    with monkeypatch.context() as m:  # up front: less free space than the input takes
        m.setattr("prune.io.shutil.disk_usage", lambda path: usage(10**12, 10**12 - 1000, 1000))
        assert main([*args, "--out", str(tmp_path / "a")]) == 2
        line = one_line(capsys)  # sizes as a person reads them (issue #26: not "0.00 GiB")
        assert "1000 B free, less than the" in line and "KiB the output will take" in line, line
        assert not (tmp_path / "a").exists()

    def full(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "b" / "model.safetensors"))

    monkeypatch.setattr("prune.store.save_model", full)  # the disk fills while writing
    assert main([*args, "--out", str(tmp_path / "b")]) == 2
    line = one_line(capsys)
    assert line.startswith("slimpack: error: No space left on device writing") and "nothing was written" in line
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.tmp-*"))
    assert shutil.disk_usage(tmp_path).free > 0


KILL_RECIPE = """model: {model}
out: {out}
data: {{nsamples: 2, seqlen: 16}}
eval: {{seqlen: 16, windows: 2}}
stages:
  prune: {{method: wanda, sparsity: 0.5}}
  export: {{onnx: {{format: onnx, source: prune}}}}
  verify: {{windows: 2, prompt: 4, tokens: 4}}
"""


def test_kill_9_at_random_moments_then_resume_gives_the_same_results(model: Path, tmp_path: Path) -> None:
    """`slimpack run` killed with SIGKILL at three moments, resumed after each: the same figures and artifact
    files as an uninterrupted run, no report while unfinished, no temporary left."""
    import json
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    def start(out: Path) -> subprocess.Popen:
        recipe = tmp_path / f"{out.name}.yaml"
        recipe.write_text(KILL_RECIPE.format(model=model, out=out))
        cmd = [sys.executable, "-m", "runtime_bench.cli", "-q", "run", str(recipe)]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=Path(__file__).parents[2])

    def figures(out: Path) -> tuple:
        summary = json.loads((out / "summary.json").read_text())
        export = json.loads((out / "export" / "onnx" / "export.json").read_text())
        return summary["models"]["dense"], summary["models"]["prune"]["perplexity"], summary["verify"], export["sha256"]

    began = time.perf_counter()
    reference = start(tmp_path / "reference")
    assert reference.wait() == 0, reference.stderr.read().decode()[-2000:]
    duration = time.perf_counter() - began
    out = tmp_path / "killed"
    rng = random.Random(16)
    for moment in sorted(rng.uniform(0.3, 0.9) * duration for _ in range(3)):
        proc = start(out)
        time.sleep(moment)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            reports = [n for n in ("summary.json", "report.md") if (out / n).exists()]
            if reports:  # only when the kill came after the run had finished (poll and kill race with its exit)
                assert json.loads((out / "run.json").read_text())["finished"], reports
    resumed = start(out)
    assert resumed.wait() == 0, resumed.stderr.read().decode()[-2000:]
    assert figures(out) == figures(tmp_path / "reference")
    assert not [p for p in out.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


def test_two_writers_of_one_output_exactly_one_succeeds(model: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "runtime_bench.cli", "-q", "prune", "--model", str(model), "--method", "wanda",
           "--sparsity", "0.5", *FAST, "--out", str(out)]  # fmt: skip
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted(p.wait() for p in procs)
    errors = [p.stderr.read().strip().splitlines() for p in procs]
    assert codes == [0, 2], errors
    failed = next(e for e, p in zip(errors, procs) if p.returncode == 2)
    said = [line for line in failed if line.startswith("slimpack: error:")]  # after the run's INFO log lines
    assert len(said) == 1 and ("appeared while this run worked" in said[0] or "already exists" in said[0])
    assert (out / "slimpack.json").is_file() and not list(tmp_path.glob(".out.*"))
