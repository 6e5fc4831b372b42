"""Drills of issue #26 for the zero-shot stage: bad local task data is one line and exit 2 before any work (eval,
prune, quantize, run); task files replaced with the old size and mtime are read anew; ``-q`` leaves nothing but
the result on the console."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from runtime_bench.cli import main  # noqa: E402
from runtime_bench.zeroshot import LOCAL_TASKS  # noqa: E402
from tests.integration import test_reliability  # noqa: E402

model = test_reliability.model  # the drills' fixture: a tiny Llama beside a neighbour's file
one_line = test_reliability.one_line

FAST = ["--nsamples", "2", "--seqlen", "16"]
ROOT = Path(__file__).resolve().parents[2]


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: a file's sha256 (a link to a file: its target's), else what it is."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p.relative_to(root))] = "dir" if p.is_dir() else "other"
    return out


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A task-data directory with the shipped files, and a neighbour."""
    directory = tmp_path / "data"
    shutil.copytree(LOCAL_TASKS, directory)
    (directory / "notes.txt").write_text("not a task\n")
    return directory


def docs(task: str) -> list[dict]:
    return [json.loads(line) for line in (LOCAL_TASKS / f"{task}.jsonl").read_text().splitlines()]


def lines(path: Path, records: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def edited(task: str, index: int, edit: Callable[[dict], object]) -> Callable[[Path], None]:
    """Write ``task``'s shipped records with ``edit`` applied to record ``index`` (0-based)."""

    def write(path: Path) -> None:
        records = docs(task)
        edit(records[index])
        lines(path, records)

    return write


def remove(path: Path) -> None:
    path.unlink()


def symlink_to(target: str) -> Callable[[Path], None]:
    return lambda path: (remove(path), path.symlink_to(target))


# case: (task, how its file is written, what the one line must say besides the file and the fix)
CASES: dict[str, tuple[str, Callable[[Path], None], list[str]]] = {
    "empty": ("boolq", lambda p: p.write_bytes(b""), ["is empty"]),
    "only-a-newline": ("boolq", lambda p: p.write_text("\n"), ["line 1 is blank"]),
    "blank-line": ("boolq", lambda p: lines(p, [*docs("boolq")[:2], "", *docs("boolq")[2:]]), ["line 3 is blank"]),
    "whitespace-line": ("rte", lambda p: lines(p, [docs("rte")[0], "   \t"]), ["line 2 is blank"]),
    "malformed-json": ("rte", lambda p: lines(p, [docs("rte")[0], '{"sentence1": "x", ']), ["line 2 is not JSON"]),
    "a-json-array-line": ("rte", lambda p: lines(p, ["[1, 2]"]), ["line 1 is an array, not an object"]),
    "a-string-line": ("rte", lambda p: lines(p, [docs("rte")[0], '"text"']), ["line 2 is a string, not an object"]),
    "pretty-printed-json": ("boolq", lambda p: p.write_text(json.dumps(docs("boolq"), indent=1)), ["line 1 is not JSON"]),
    "missing-field": ("boolq", edited("boolq", 3, lambda d: d.pop("passage")), ["line 4 has no field 'passage'"]),
    "missing-label": ("rte", edited("rte", 0, lambda d: d.pop("label")), ["line 1 has no field 'label'"]),
    "wrong-type": ("rte", edited("rte", 1, lambda d: d.update(sentence1=7)), ["line 2 has sentence1 7, not a string"]),
    "boolq-label-2": ("boolq", edited("boolq", 4, lambda d: d.update(label=2)), ["line 5 has label 2, not one of 0, 1"]),
    "boolq-label-as-string": ("boolq", edited("boolq", 0, lambda d: d.update(label="1")),
                              ['line 1 has label "1", not one of 0, 1']),
    "boolq-label-null": ("boolq", edited("boolq", 0, lambda d: d.update(label=None)), ["has label null"]),
    "rte-label-minus-1": ("rte", edited("rte", 2, lambda d: d.update(label=-1)), ["line 3 has label -1"]),
    "arc-answer-not-a-choice": ("arc_easy", edited("arc_easy", 5, lambda d: d.update(answerKey="E")),
                                ['line 6 has answerKey "E", not one of "A", "B", "C", "D"']),
    "arc-choices-not-a-dict": ("arc_challenge", edited("arc_challenge", 0, lambda d: d.update(choices=["a", "b"])),
                               ['line 1 has choices ["a", "b"], not {"text"']),
    "openbookqa-labels-and-texts-differ": (
        "openbookqa", edited("openbookqa", 0, lambda d: d["choices"]["label"].pop()), ["line 1 has choices"]),
    "hellaswag-label-beyond-endings": ("hellaswag", edited("hellaswag", 7, lambda d: d.update(label="4")),
                                       ['line 8 has label "4", not one of "0", "1", "2", "3"']),
    "hellaswag-endings-not-a-list": ("hellaswag", edited("hellaswag", 0, lambda d: d.update(endings="a b")),
                                     ['line 1 has endings "a b", not a non-empty list of strings']),
    "winogrande-answer-3": ("winogrande", edited("winogrande", 0, lambda d: d.update(answer="3")),
                            ['line 1 has answer "3", not one of "1", "2"']),
    "winogrande-answer-as-number": ("winogrande", edited("winogrande", 1, lambda d: d.update(answer=1)),
                                    ['line 2 has answer 1, not one of "1", "2"']),
    "piqa-label-2": ("piqa", lambda p: lines(p, [{"goal": "g", "sol1": "a", "sol2": "b", "label": 2}]),
                     ["line 1 has label 2, not one of 0, 1"]),
    "copa-not-json": ("copa", lambda p: p.write_text('{"premise": "p"}\n{premise\n'), ["line 2 is not JSON"]),
    "winogrande-no-blank": ("winogrande", edited("winogrande", 0, lambda d: d.update(sentence="no blank here")),
                            ['line 1 has sentence "no blank here", not a string with a "_"']),
    "binary-gzip": ("boolq", lambda p: p.write_bytes(gzip.compress((LOCAL_TASKS / "boolq.jsonl").read_bytes())),
                    ["line 1 is not UTF-8 text (byte 0x8b at offset 1"]),
    "latin-1-text": ("rte", lambda p: p.write_bytes(b'{"sentence1": "caf\xe9"}\n'), ["line 1 is not UTF-8 text"]),
    "nul-bytes": ("rte", lambda p: p.write_bytes(b"\x00" * 64), ["line 1 is not JSON"]),
    "symlink-to-etc-passwd": ("boolq", symlink_to("/etc/passwd"), ["(a link to '/etc/passwd') line 1 is not JSON"]),
    "symlink-to-a-directory": ("rte", symlink_to("/etc"), ["is a directory"]),
    "fifo": ("boolq", lambda p: (remove(p), os.mkfifo(p)), ["is a FIFO", "make it a regular file"]),
    "directory": ("winogrande", lambda p: (remove(p), p.mkdir()), ["is a directory", "make it a regular file"]),
    "gsm8k-answer-without-its-number": ("gsm8k", edited("gsm8k", 2, lambda d: d.update(answer="five")),
                                        ['line 3 has answer "five", not a string ending in "#### <the number>"']),
    "wikitext-empty-page": ("wikitext", edited("wikitext", 0, lambda d: d.update(page=" ")),
                            ['line 1 has page " ", not a non-empty string']),
}  # fmt: skip


def bad(data: Path, case: str) -> tuple[str, Path, list[str]]:
    task, write, needles = CASES[case]
    path = data / f"{task}.jsonl"
    write(path)
    return task, path, needles


def check_refusal(line: str, task: str, path: Path, needles: list[str]) -> None:
    fields = "the fields of the Hugging Face dataset" if task == "copa" else "question" if task == "boolq" else ""
    assert str(path) in line and f"write each line of {task}.jsonl as one JSON object with {fields}" in line, line
    for needle in needles:
        assert needle in line, line
    assert "root:" not in line  # nothing of a system file quoted


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_task_data_is_one_line_before_the_model_opens(
    case: str, model: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, path, needles = bad(data, case)
    monkeypatch.setattr("runtime_bench.zeroshot.open_source", forbidden)  # no model is opened
    before = snapshot(tmp_path)
    report = tmp_path / "report.json"
    argv = ["-q", "eval", str(model), "--tasks", f"rte,{task}" if task != "rte" else task, "--task-data", str(data)]
    assert main([*argv, "--json", str(report)]) == 2
    check_refusal(one_line(capsys), task, path, needles)
    assert snapshot(tmp_path) == before  # inputs and neighbours unchanged, no report, no temporary


def forbidden(*args: object, **kwargs: object) -> None:
    raise AssertionError("work started before the task data was checked")


@pytest.mark.parametrize(
    "case",
    ["malformed-json", "boolq-label-2", "boolq-label-null", "winogrande-answer-3", "symlink-to-etc-passwd", "fifo"],
)
def test_prune_and_quantize_refuse_bad_task_data_before_calibration(
    case: str, model: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, path, needles = bad(data, case)
    monkeypatch.setattr("prune.api.run_stage", forbidden)  # the stage (load, calibrate, prune) never starts
    monkeypatch.setattr("quant.api.run_stage", forbidden)
    before = snapshot(tmp_path)
    tasks = ["--tasks", task, "--task-data", str(data)]
    for argv in (
        ["prune", "--model", str(model), "--method", "wanda", "--sparsity", "0.5", *FAST],
        ["prune", "--model", str(model), "--method", "wanda", "--sparsity", "0.5", *FAST, "--stream"],
        ["quantize", str(model), "--method", "rtn", "--group-size", "32"],
    ):
        assert main(["-q", *argv, *tasks, "--out", str(tmp_path / "out")]) == 2
        check_refusal(one_line(capsys), task, path, needles)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "case",
    ["empty", "malformed-json", "boolq-label-null", "winogrande-answer-3", "symlink-to-etc-passwd",
     "hellaswag-label-beyond-endings", "binary-gzip", "directory"],
)  # fmt: skip
def test_a_recipe_with_bad_task_data_is_refused_before_any_stage(
    case: str, model: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, path, needles = bad(data, case)
    monkeypatch.setattr("runtime_bench.pipeline.run._run_pipeline", forbidden)
    out = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: {model}\nout: {out}\ndata: {{nsamples: 2, seqlen: 16}}\neval: {{seqlen: 16, windows: 1}}\n"
        f"stages:\n  prune: {{method: magnitude, sparsity: 0.5}}\n"
        f"  zeroshot: {{tasks: [{task}], task_data: {data}, limit: 2}}\n"
    )
    before = snapshot(tmp_path)
    for argv in (["run", str(recipe)], ["run", str(recipe), "--check"]):
        assert main(["-q", *argv]) == 2
        line = one_line(capsys)
        assert line.startswith(f"slimpack: error: recipe {recipe}: stages.zeroshot: "), line
        check_refusal(line, task, path, needles)
    assert snapshot(tmp_path) == before and not out.exists()


def test_the_shipped_and_hub_shaped_files_pass(model: Path, data: Path, tmp_path: Path) -> None:
    """Valid variants are not refused: a UTF-8 BOM and no final newline, CRLF line ends, extra fields, a hellaswag
    with 5 endings and label "4", an ARC item with 3 choices labelled 1-3 (as some of the hub's are)."""
    from runtime_bench.zeroshot import PAPER_TASKS, TaskData, Tasks

    Tasks.prepare(PAPER_TASKS, TaskData("local"))
    (data / "boolq.jsonl").write_bytes(b"\xef\xbb\xbf" + (LOCAL_TASKS / "boolq.jsonl").read_bytes().rstrip(b"\n"))
    (data / "rte.jsonl").write_bytes((LOCAL_TASKS / "rte.jsonl").read_bytes().replace(b"\n", b"\r\n"))
    hellaswag = docs("hellaswag")
    hellaswag[0].update(endings=[*hellaswag[0]["endings"], "a fifth ending."], label="4", extra={"any": [1]})
    lines(data / "hellaswag.jsonl", hellaswag)
    arc = docs("arc_easy")
    arc[0].update(choices={"text": ["a", "b", "c"], "label": ["1", "2", "3"]}, answerKey="3")
    lines(data / "arc_easy.jsonl", arc)
    Tasks.prepare(PAPER_TASKS, TaskData(str(data)))
    report = tmp_path / "r.json"
    tasks = "boolq,rte,hellaswag,arc_easy"
    assert main(["-q", "eval", str(model), "--tasks", tasks, "--task-data", str(data), "--limit", "2",
                 "--json", str(report)]) == 0  # fmt: skip
    assert {n: r["n"] for n, r in json.loads(report.read_text())["tasks"].items()} == dict.fromkeys(tasks.split(","), 2)


def test_a_task_file_replaced_with_the_old_size_and_mtime_is_read_anew(model: Path, data: Path, tmp_path: Path) -> None:
    """``cp -p`` / ``rsync -a`` of a file with other labels: same size, same mtime. Every gold label of the first 8
    boolq items flipped flips every per-example result (two choices), so the new run read the new labels."""
    path = data / "boolq.jsonl"
    argv = ["-q", "eval", str(model), "--tasks", "boolq", "--task-data", str(data), "--limit", "8"]
    assert main([*argv, "--json", str(tmp_path / "first.json")]) == 0
    stat = path.stat()
    records = docs("boolq")
    for record in records[:8]:
        record["label"] = 1 - record["label"]
    lines(path, records)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert main([*argv, "--json", str(tmp_path / "second.json")]) == 0
    first, second = (json.loads((tmp_path / f"{n}.json").read_text())["tasks"]["boolq"] for n in ("first", "second"))
    assert second["examples"]["acc"] == [1 - x for x in first["examples"]["acc"]]
    assert second["examples"]["acc"] != first["examples"]["acc"]


def not_a_git_repository(directory: Path) -> bool:
    git = shutil.which("git")
    if git is None:
        return True
    done = subprocess.run([git, "rev-parse"], cwd=directory, capture_output=True)
    return done.returncode != 0


def test_quiet_zero_shot_eval_prints_only_the_table(model: Path, tmp_path: Path) -> None:
    """``slimpack -q eval M --tasks …`` in a fresh process whose directory is not a git repository (lm-eval runs
    ``git describe``): stderr is empty; stdout is the result."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    assert not_a_git_repository(cwd)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "runtime_bench.cli", "-q", "eval", str(model), "--tasks", "boolq,hellaswag",
            "--task-data", "local", "--limit", "2"]  # fmt: skip
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "| boolq | acc (headline) |" in done.stdout and "| hellaswag | acc_norm (headline) |" in done.stdout


def test_quiet_silences_the_zero_shot_stage_of_prune_and_run_and_not_otherwise(
    model: Path, tmp_path: Path, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert not_a_git_repository(cwd)
    tasks = ["--tasks", "boolq,winogrande", "--task-data", "local", "--limit", "2"]
    assert main(["eval", str(model), *tasks]) == 0  # without -q: the progress, and lm-eval's git noise
    err = capfd.readouterr().err
    assert "100%" in err and (shutil.which("git") is None or "not a git repository" in err), err
    prune = ["prune", "--model", str(model), "--method", "magnitude", "--sparsity", "0.5", *FAST, *tasks]
    assert main(["-q", *prune, "--out", str(tmp_path / "pruned")]) == 0
    assert capfd.readouterr().err == ""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: {model}\nout: {tmp_path / 'run'}\ndata: {{nsamples: 2, seqlen: 16}}\n"
        "eval: {seqlen: 16, windows: 1}\nstages:\n  prune: {method: magnitude, sparsity: 0.5}\n"
        "  zeroshot: {tasks: [boolq, hellaswag], task_data: local, limit: 2}\n"
    )
    assert main(["-q", "run", str(recipe)]) == 0
    assert capfd.readouterr().err == ""


def test_the_data_cache_key_is_the_files_content(data: Path, tmp_path: Path) -> None:
    """The json config lm-eval loads is named by the file's sha256: a file replaced with the old size and mtime
    (in place, by a copy from elsewhere, or behind a symlink) gets a new key; a touch keeps it; and the run's
    step settings change with it."""
    from runtime_bench.zeroshot import TaskData, Tasks, ZeroShotEvaluation

    def key(directory: Path = data) -> str:
        return Tasks.prepare(["boolq"], TaskData(str(directory))).specs[0]["dataset_name"]

    def keeping_stat(path: Path, write: Callable[[], None]) -> None:
        stat = path.stat()
        write()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)

    path = data / "boolq.jsonl"
    first = key()
    settings = ZeroShotEvaluation.prepare(["boolq"], TaskData(str(data))).settings()
    os.utime(path)  # touched: the same content, the same key
    assert key() == first
    flipped = [{**r, "label": 1 - r["label"]} for r in docs("boolq")]
    keeping_stat(path, lambda: lines(path, flipped))  # labels flipped in place
    assert key() != first and first.startswith("slimpack-")
    second = key()
    assert ZeroShotEvaluation.prepare(["boolq"], TaskData(str(data))).settings() != settings
    elsewhere = tmp_path / "other.jsonl"
    records = docs("boolq")
    records[0]["question"] = records[0]["question"].upper()  # the text edited, the same size
    lines(elsewhere, records)
    keeping_stat(path, lambda: shutil.copyfile(elsewhere, path))  # `cp -p` from elsewhere
    assert key() not in (first, second)
    third = key()
    linked = tmp_path / "linked"
    linked.mkdir()
    target = tmp_path / "target.jsonl"
    shutil.copyfile(LOCAL_TASKS / "boolq.jsonl", target)
    (linked / "boolq.jsonl").symlink_to(target)
    assert key(linked) == first  # the content, wherever it lies
    keeping_stat(target, lambda: lines(target, flipped))  # the link's target replaced
    assert key(linked) == second and third not in (first, second)


def test_silenced_keeps_the_console_clean_and_gives_back_what_a_failed_run_wrote(
    capfd: pytest.CaptureFixture,
) -> None:
    import logging

    from runtime_bench.zeroshot import silenced

    level = logging.getLogger("lm_eval").level
    with silenced():
        print("a progress bar", file=sys.stderr)
        os.write(2, b"fatal: not a git repository\n")  # what a child process writes
        logging.getLogger("lm_eval.api.task").warning("a note")
        assert logging.getLogger("lm_eval").level == logging.ERROR
    assert capfd.readouterr().err == "" and logging.getLogger("lm_eval").level == level
    with pytest.raises(RuntimeError, match="broke"):
        with silenced():
            print("a progress bar", file=sys.stderr)
            os.write(2, b"fatal: not a git repository\n")
            raise RuntimeError("broke")
    err = capfd.readouterr().err
    assert "a progress bar" in err and "fatal: not a git repository" in err
    assert logging.getLogger("lm_eval").level == level
