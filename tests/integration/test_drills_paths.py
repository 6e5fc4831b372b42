"""Drills of issue #26, classes 1, 2 and 6 (and the path parts of 5 and 7): a run takes over only its own
directory, no path slimpack writes may touch an input (every write option of every command, enumerated from the
parser), and a model replaced with the old size and mtime is not reported up to date."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prune.cli import Reads, Writes, build_parser
from runtime_bench.cli import main
from tests.conftest import save_tiny
from tests.integration.test_reliability import FAST, digest, one_line

RECIPE = "model: {model}\nout: {out}\ndata: {{nsamples: 2, seqlen: 16}}\neval: {{seqlen: 16, windows: 1}}\n"
RECIPE += "stages:\n  prune: {{method: magnitude, sparsity: 0.5}}\n"


@pytest.fixture
def model(tmp_path: Path, tokenizer) -> Path:  # noqa: ANN001
    model = save_tiny(tmp_path / "models" / "m", tokenizer)
    (model.parent / "notes.txt").write_text("someone else's file\n")
    return model


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, sub-commands by their full name (``bench sweep``, ``check autogptq``)."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs and prefix:
            found[prefix] = parser
        for sub in subs:
            for name, child in sub.choices.items():
                walk(child, f"{prefix} {name}".strip())

    walk(build_parser(), "")
    return found


def base_argv(command: str, model: Path, tmp: Path, recipe_name: str = "r.yaml") -> list[str]:
    """A command line of ``command`` that is valid up to its paths (work would start after the path check)."""
    recipe = tmp / recipe_name
    recipe.write_text(RECIPE.format(model=model, out=tmp / "run"))
    return {
        "prune": ["prune", "--model", str(model), "--out", str(tmp / "o"), *FAST],
        "plan": ["plan", "--model", str(model), "--out", str(tmp / "plan.json"), *FAST],
        "eval": ["eval", str(model), "--seqlen", "16", "--windows", "1"],
        "inspect": ["inspect", str(model)],
        "report": ["report", str(model)],
        "quantize": ["quantize", str(model), "--out", str(tmp / "q"), *FAST],
        "export": ["export", str(model), "--format", "onnx", "--out", str(tmp / "a")],
        "verify": ["verify", str(model), "--reference", str(model)],
        "bench sweep": ["bench", "sweep", "--model", str(model), "--out", str(tmp / "sweep")],
        "bench ART": ["bench", str(model), "--json", str(tmp / "bench.json")],
        "bench memory": ["bench", "memory", str(model), "--json", str(tmp / "memory.json")],
        "run": ["run", str(recipe)],
        "check gptqmodel": ["check", "gptqmodel", str(model), "--tokens", "8"],
        "check autogptq": ["check", "autogptq", str(model), "--tokens", "8"],
    }[command]


def write_options() -> list[tuple[str, str]]:
    """(command, option) for every option of every command that names a path to write."""
    return [
        (name, max(a.option_strings, key=len))
        for name, parser in parsers().items()
        for a in parser._actions
        if isinstance(a, Writes)
    ]


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    argv = list(argv)
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    return argv


def test_every_path_argument_is_declared_as_read_or_written() -> None:
    """A path option that is neither `Reads` nor `Writes` would escape the one write rule."""
    path_like = {"model", "reference", "dataset", "eval_dataset", "task_data", "plan", "out", "json", "png",
                 "offload_dir", "graph_cache", "copy_to", "artifact", "directory", "results", "recipe"}  # fmt: skip
    for name, parser in parsers().items():
        for action in parser._actions:
            if action.type is Path or action.dest in path_like:
                assert isinstance(action, (Reads, Writes)), f"{name} {action.option_strings or action.dest}"
    assert {c for c, _ in write_options()} == {"prune", "plan", "eval", "inspect", "report", "quantize", "export",
                                               "verify", "bench sweep", "bench ART", "bench memory", "run", "check gptqmodel",
                                               "check autogptq"}  # fmt: skip


@pytest.mark.parametrize(("command", "option"), write_options(), ids=lambda v: v.replace(" ", "-"))
def test_every_write_option_of_every_command_refuses_an_input(
    command: str, option: str, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Each write option of each command, pointed inside the model, at the model, at its parent and at the
    resolved target of one of its files: exit 2, one line naming the option, nothing changed or left."""
    blobs = tmp_path / "hub" / "blobs"  # a hub cache: the snapshot's files are links into blobs/
    blobs.mkdir(parents=True)
    snapshot = tmp_path / "hub" / "snapshot"
    snapshot.mkdir()
    for f in model.iterdir():
        shutil.copy(f, blobs / f.name)
        (snapshot / f.name).symlink_to(blobs / f.name)
    base = base_argv(command, model, tmp_path)
    hub = base_argv(command, snapshot, tmp_path, "hub.yaml")
    before = digest(tmp_path)
    targets = {"lies inside": model / "x", "is": model, "holds": model.parent}
    for relation, target in targets.items():
        assert main(["-q", *with_option(base, option, str(target))]) == 2
        line = one_line(capsys)
        assert f"({option}) {relation} the input" in line and line.endswith(f"{option} outside it"), line
    assert main(["-q", *with_option(hub, option, str(blobs))]) == 2
    line = one_line(capsys)
    assert f"({option}) holds a linked file or folder ('{blobs}" in line and "of the input" in line, line
    assert digest(tmp_path) == before


def test_an_input_named_twice_or_a_data_file_is_protected_too(model: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text " * 200)
    plan = tmp_path / "plan.json"
    plan.write_text("{}")
    before = digest(tmp_path)
    cases = [
        (["eval", str(model), "--dataset", str(corpus), "--json", str(corpus)], "(--json) is the input"),
        (["prune", "--model", str(model), "--plan", str(plan), "--out", str(plan), *FAST], "(--out) is the input"),
        (["report", str(model), str(corpus), "--png", str(corpus)], "(--png) is the input"),
        (["inspect", str(model), "--json", str(model / "slimpack.json")], "(--json) lies inside the input"),
        (["export", str(model), "--format", "onnx", "--out", str(tmp_path / "a"), "--graph-cache", str(model)],
         "(--graph-cache) is the input"),
    ]  # fmt: skip
    for argv, expected in cases:
        assert main(["-q", *argv]) == 2
        assert expected in one_line(capsys)
    assert digest(tmp_path) == before


def test_a_file_output_that_is_a_directory_or_unwritable_is_refused(model: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    target = tmp_path / "results"
    target.mkdir()
    assert main(["-q", "eval", str(model), "--seqlen", "16", "--windows", "1", "--json", str(target)]) == 2
    assert "is a directory; pass a file path" in one_line(capsys)
    (tmp_path / "afile").write_text("x")
    assert main(["-q", "plan", "--model", str(model), "--out", str(tmp_path / "afile" / "p.json"), *FAST]) == 2
    assert "is a file; pass another path" in one_line(capsys)
    locked = tmp_path / "immutable"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(RECIPE.format(model=model, out=locked / "run"))
        before = digest(tmp_path)
        for argv in (
            ["eval", str(model), "--seqlen", "16", "--windows", "1", "--json", str(locked / "e.json")],
            ["plan", "--model", str(model), "--out", str(locked / "p.json"), *FAST],
            ["run", str(recipe)],
            ["run", str(recipe), "--out", str(locked)],
            ["prune", "--model", str(model), "--out", str(locked / "o"), *FAST],
        ):
            assert main(["-q", *argv]) == 2, argv
            line = one_line(capsys)
            assert "is not writable" in line and "Operation not permitted" in line, line
        assert digest(tmp_path) == before
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)


# --- class 1: a run takes over only its own directory --------------------------------------------------


def foreign_directories(root: Path) -> dict[str, Path]:
    """Directories that hold someone else's files, each as a run directory would find it."""
    cases = {}
    for name, files in {
        "source-tree": {"prune/api.py": "code", "export/cli.py": "code", "README.md": "doc"},
        "user-files": {"report.md": "mine", "summary.json": "{}", "notes.txt": "x"},
        "state-only": {"state/x.json": "{}"},  # no run.json: not a run's
        "foreign-run-json": {"run.json": "[1, 2]", "state/a.json": "{}"},  # a run.json that is not slimpack's
        "run-json-only": {"run.json": '{"recipe": {}}'},  # no state/
        "plots": {"sparsity.png": "png", "speed.png": "png"},
    }.items():
        directory = root / name
        for rel, text in files.items():
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            (directory / rel).write_text(text)
        cases[name] = directory
    return cases


def test_a_run_refuses_a_directory_that_is_not_its_own(model: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    recipe = tmp_path / "r.yaml"
    for name, directory in foreign_directories(tmp_path / "dirs").items():
        before = digest(directory)
        for argv in (["run", str(recipe), "--out", str(directory)], ["run", str(recipe)]):
            recipe.write_text(RECIPE.format(model=model, out=directory))
            assert main(["-q", *argv]) == 2, name
            line = one_line(capsys)
            assert "is not a slimpack run directory" in line and line.endswith("choose another --out"), line
        assert digest(directory) == before and not (directory / ".lock").exists(), name


def test_dot_in_a_source_tree_is_refused(model: Path, tmp_path: Path) -> None:
    tree = foreign_directories(tmp_path / "dirs")["source-tree"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(model=model, out="."))
    before = digest(tree)
    slimpack = Path(sys.executable).parent / "slimpack"  # the console script: the tree's prune/ is not imported
    done = subprocess.run([str(slimpack), "-q", "run", str(recipe)], cwd=tree, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "is not a slimpack run directory" in done.stderr
    assert digest(tree) == before


def test_a_run_writes_into_a_new_or_empty_directory_and_resumes_in_its_own(model: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    empty = tmp_path / "empty"
    empty.mkdir()
    recipe.write_text(RECIPE.format(model=model, out=empty))
    assert main(["-q", "run", str(recipe)]) == 0
    assert (empty / "run.json").is_file() and (empty / "state").is_dir() and (empty / "prune" / "slimpack.json").is_file()
    assert main(["-q", "run", str(recipe)]) == 0  # its own: resumed, every step cached


def test_overwrite_never_deletes_files_slimpack_did_not_write(model: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("years of work")
    before = digest(theirs)
    for argv in (
        ["prune", "--model", str(model), "--method", "magnitude", "--out", str(theirs), "--overwrite", *FAST],
        ["quantize", str(model), "--method", "rtn", "--group-size", "32", "--out", str(theirs), "--overwrite", *FAST],
        ["export", str(model), "--format", "onnx", "--out", str(theirs), "--overwrite"],
    ):
        assert main(["-q", *argv]) == 2
        line = one_line(capsys)
        assert "holds files slimpack did not write" in line and "choose another --out" in line, line
    assert digest(theirs) == before
    ours = tmp_path / "ours"  # slimpack's own output is replaced
    argv = ["prune", "--model", str(model), "--method", "magnitude", "--out", str(ours), *FAST]
    assert main(["-q", *argv]) == 0 and main(["-q", *argv, "--overwrite"]) == 0


# --- class 6: content, not size and mtime ---------------------------------------------------------------


def test_weights_replaced_with_the_old_size_and_mtime_rerun_every_step(
    model: Path, tmp_path: Path, tokenizer  # noqa: ANN001
) -> None:
    out = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(model=model, out=out))
    assert main(["-q", "run", str(recipe)]) == 0
    first = json.loads((out / "summary.json").read_text())["models"]["dense"]["perplexity"]
    weights = model / "model.safetensors"
    stat = weights.stat()
    other = save_tiny(tmp_path / "other", tokenizer, seed=7)  # same shapes, other values: the same size
    shutil.copyfile(other / "model.safetensors", weights)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` / `rsync -a` leave it
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    assert main(["-q", "run", str(recipe)]) == 0
    steps = {s["step"]: s["status"] for s in json.loads((out / "run.json").read_text())["steps"]}
    assert steps["dense"] == "ran" and json.loads((out / "summary.json").read_text())["models"]["dense"]["perplexity"] != first


def test_a_large_file_is_fingerprinted_by_its_header_and_sampled_blocks(tmp_path: Path) -> None:
    from prune.io import SAMPLE_BLOCKS, WHOLE_HASH_BYTES, fingerprint

    big = tmp_path / "big.bin"
    size = WHOLE_HASH_BYTES + 5 * 2**20
    big.write_bytes(bytes(size))
    first = fingerprint(big)
    with big.open("r+b") as fh:  # a change in a sampled block, in the header, in the tail
        for offset in ((size - 2**20) * (SAMPLE_BLOCKS // 2) // (SAMPLE_BLOCKS + 1) + 7, 100, size - 10):
            fh.seek(offset)
            fh.write(b"\x01")
            fh.flush()
            assert fingerprint(big) != first
            fh.seek(offset)
            fh.write(b"\x00")
            fh.flush()
    assert fingerprint(big) == first


# --- class 7: -q, the umask ----------------------------------------------------------------------------


def test_quiet_silences_a_streamed_prune(model: Path, tmp_path: Path) -> None:
    """``-q``: the estimate and spill lines of a streamed prune stay off the console; the summary line stays."""
    slimpack = Path(sys.executable).parent / "slimpack"
    argv = [str(slimpack), "prune", "--model", str(model), "--method", "wanda", "--stream", "--max-memory", "100000",
            "--offload-dir", str(tmp_path / "spill"), *FAST]  # fmt: skip
    loud = subprocess.run([*argv, "--out", str(tmp_path / "a")], capture_output=True, text=True, cwd=tmp_path)
    assert loud.returncode == 0 and "estimated peak memory" in loud.stderr, loud.stderr
    quiet = subprocess.run([argv[0], "-q", *argv[1:], "--out", str(tmp_path / "b")], capture_output=True, text=True,
                           cwd=tmp_path)  # fmt: skip
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert quiet.stdout.count("\n") == 1 and "sparsity" in quiet.stdout


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o027, 0o077])
def test_outputs_follow_the_umask(mask: int, model: Path, tmp_path: Path) -> None:
    old = os.umask(mask)
    try:
        out, plan = tmp_path / "o", tmp_path / "plan.json"
        assert main(["-q", "prune", "--model", str(model), "--method", "magnitude", "--out", str(out), *FAST]) == 0
        assert main(["-q", "plan", "--model", str(model), "--out", str(plan), *FAST]) == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask
    for file in [*out.iterdir(), plan, plan.with_suffix(".png")]:
        assert file.stat().st_mode & 0o777 == 0o666 & ~mask, file


def test_the_disk_check_estimates_the_output_not_the_input(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A pruned fp32 model takes what its source takes, a 4-bit checkpoint far less, a bf16 stream half: the
    pre-check estimates each from the source's headers and says sizes as a person reads them."""
    from collections import namedtuple

    from prune.lazy import output_bytes

    need = output_bytes(model, 4)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("prune.io.shutil.disk_usage", lambda path: usage(10**12, 10**12, int(need * 0.6)))
    prune = ["prune", "--model", str(model), "--method", "magnitude", *FAST]
    assert main(["-q", *prune, "--out", str(tmp_path / "a")]) == 2
    line = one_line(capsys)
    assert f"{need / 1024:.2f} KiB the output will take" in line and "GiB" not in line, line
    assert main(["-q", *prune, "--out", str(tmp_path / "b"), "--stream", "--dtype", "bfloat16"]) == 0
    quantize = ["quantize", str(model), "--method", "rtn", "--group-size", "32", *FAST]
    assert main(["-q", *quantize, "--out", str(tmp_path / "q")]) == 0
    assert main(["-q", *quantize, "--checkpoint-format", "dequantized", "--out", str(tmp_path / "d")]) == 2
    assert "the output will take" in one_line(capsys)
    assert main(["-q", "export", str(model), "--format", "onnx", "--out", str(tmp_path / "e")]) == 2
    assert "the output will take" in one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "models", "q"]


def test_a_calibration_text_replaced_with_the_old_size_and_mtime_reruns_the_run(model: Path, tmp_path: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    out = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(model=model, out=out).replace("data: {", f"data: {{dataset: {text}, "))
    assert main(["-q", "run", str(recipe)]) == 0
    stat = text.stat()
    text.write_text("a slow red cat naps under the busy dog. " * 60 + "x" * 300)  # the same size
    os.utime(text, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert text.stat().st_size == stat.st_size
    assert main(["-q", "run", str(recipe)]) == 0
    steps = {s["step"]: s["status"] for s in json.loads((out / "run.json").read_text())["steps"]}
    assert set(steps.values()) == {"ran"}, steps


def test_an_existing_file_output_is_replaced_as_before(model: Path, tmp_path: Path) -> None:
    """``--json`` onto an existing file that is no input: written as before (the probe looks in its directory)."""
    target = tmp_path / "result.json"
    target.write_text("{}")
    assert main(["-q", "eval", str(model), "--seqlen", "16", "--windows", "1", "--json", str(target)]) == 0
    assert json.loads(target.read_text())["windows"] == 1


def test_a_run_of_an_older_slimpack_killed_before_its_run_json_resumes(model: Path, tmp_path: Path) -> None:
    """An older slimpack wrote ``run.json`` only at its end: a run of it killed midway left ``state/`` (step records)
    and the stages' folders. That directory is still the run's own, and it resumes there."""
    out = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(model=model, out=out))
    assert main(["-q", "run", str(recipe)]) == 0
    for name in ("run.json", "summary.json", "report.md"):
        (out / name).unlink()
    assert main(["-q", "run", str(recipe)]) == 0
    steps = {s["step"]: s["status"] for s in json.loads((out / "run.json").read_text())["steps"]}
    assert set(steps.values()) == {"cached"}, steps


def test_a_sweep_refuses_a_directory_that_is_not_its_own(model: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    tree = foreign_directories(tmp_path / "dirs")
    for name in ("source-tree", "user-files", "state-only"):
        before = digest(tree[name])
        argv = ["bench", "sweep", "--model", str(model), "--out", str(tree[name]), "--sparsities", "0.5", "--engines",
                "torch", "--threads", "1", *FAST]  # fmt: skip
        assert main(["-q", *argv]) == 2, name
        assert "is not one slimpack wrote" in one_line(capsys)
        assert digest(tree[name]) == before


def test_a_plan_named_after_its_model_and_an_api_offload_dir(model: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """``plan --out models/m.json`` beside ``models/m`` is a file of its own (the agent folder ``models/m`` is only
    written, and then checked, by allocators that write one); the API refuses an offload directory in the model."""
    from prune.api import PruneConfig, prune
    from prune.errors import SlimpackError
    from prune.spec import Job, PruneSpec, StreamSpec

    assert main(["-q", "plan", "--model", str(model), "--out", str(model.with_suffix(".json")), *FAST]) == 0
    capsys.readouterr()
    before = digest(model)
    job = Job(str(model), tmp_path / "o", stream=StreamSpec(offload_dir=str(model / "spill")), store="stream")
    with pytest.raises(SlimpackError, match=r"\(--offload-dir\) lies inside the input"):
        prune(PruneConfig(job, PruneSpec(method="magnitude")))
    assert digest(model) == before and not (tmp_path / "o").exists()
