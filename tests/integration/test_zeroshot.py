"""Zero-shot accuracy through lm-evaluation-harness (`runtime_bench.zeroshot`) on a tiny random Llama: the adapter's
log-likelihoods against a direct computation, runtimes and streaming against torch, the shipped local tasks
end to end, an altered artifact, and bad input (one line, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval")

from export.api import ExportConfig, export_model  # noqa: E402
from prune.io import hash_files  # noqa: E402
from prune.models import load_model  # noqa: E402
from runtime_bench.cli import main  # noqa: E402
from runtime_bench.engines.torch_engine import TorchEngine  # noqa: E402
from runtime_bench.lm_eval_model import EngineLM  # noqa: E402
from runtime_bench.logit_sources import EngineSource, ForwardSource  # noqa: E402
from runtime_bench.zeroshot import (  # noqa: E402
    LOCAL_TASKS,
    PAPER_TASKS,
    TaskData,
    Tasks,
    ZeroShotConfig,
    ZeroShotReport,
    task_specs,
    zeroshot,
)

PAIRS = [("The cat sat on", " the mat"), ("Water boils at", " one hundred degrees"), ("A", " b c d e f g")]


def requests(pairs: list[tuple[str, str]]) -> list[SimpleNamespace]:
    return [SimpleNamespace(args=pair) for pair in pairs]


def direct_loglikelihoods(model_dir: Path, pairs: list[tuple[str, str]]) -> list[tuple[float, bool]]:
    """Σ log p(continuation | context) from the torch model's logits, token by token (no adapter code)."""
    loaded = load_model(model_dir)
    tok = loaded.tokenizer
    out = []
    for context, continuation in pairs:
        whole = tok.encode(context + continuation, add_special_tokens=False)
        n_ctx = len(tok.encode(context, add_special_tokens=False))
        with torch.no_grad():
            logp = torch.log_softmax(loaded.model(torch.tensor([whole])).logits[0].double(), -1)
        total, greedy = 0.0, True
        for t in range(n_ctx, len(whole)):
            total += float(logp[t - 1, whole[t]])
            greedy &= int(logp[t - 1].argmax()) == whole[t]
        out.append((total, greedy))
    return out


def lm_over(model_dir: Path, batch_size: int = 1, stream: bool = False) -> EngineLM:
    loaded = load_model(model_dir)
    if stream:
        from prune.stream import StreamedForward

        source = ForwardSource(StreamedForward.open(model_dir, progress=False), batch_size)
    else:
        source = EngineSource(TorchEngine.from_model(loaded.model), batch_size)
    return EngineLM(source, loaded.tokenizer, 64)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_adapter_loglikelihoods_are_the_direct_computation(tiny_dir: Path, batch_size: int) -> None:
    expected = direct_loglikelihoods(tiny_dir, PAIRS)
    got = lm_over(tiny_dir, batch_size).loglikelihood(requests(PAIRS), disable_tqdm=True)
    for (ll, greedy), (want, want_greedy) in zip(got, expected):
        assert ll == pytest.approx(want, rel=1e-5, abs=1e-5)
        assert greedy == want_greedy


def test_streamed_adapter_gives_the_whole_models_loglikelihoods(tiny_dir: Path) -> None:
    whole = lm_over(tiny_dir, 2).loglikelihood(requests(PAIRS), disable_tqdm=True)
    streamed = lm_over(tiny_dir, 2, stream=True).loglikelihood(requests(PAIRS), disable_tqdm=True)
    assert [g for _, g in streamed] == [g for _, g in whole]
    np.testing.assert_allclose([ll for ll, _ in streamed], [ll for ll, _ in whole], rtol=1e-5, atol=1e-5)


def test_a_context_longer_than_the_window_keeps_its_last_tokens(tiny_dir: Path) -> None:
    lm = lm_over(tiny_dir)
    lm.max_length = 8
    long = [("one two three four five six seven eight nine ten eleven", " twelve")]
    short_context = lm.tok_encode(long[0][0])
    (ll, _), = lm.loglikelihood(requests(long), disable_tqdm=True)  # fmt: skip
    cont = lm._encode_pair(*long[0])[1]
    kept = (short_context + cont)[-9:]
    (want, _), = lm._loglikelihood_tokens([(None, kept[: 9 - len(cont)], cont)])  # fmt: skip
    assert ll == pytest.approx(want)


def test_local_tasks_are_the_papers_seven_with_their_lm_eval_configs() -> None:
    assert sorted(p.stem for p in LOCAL_TASKS.glob("*.jsonl")) == sorted([*PAPER_TASKS, "wikitext", "gsm8k"])
    tasks = Tasks.prepare(PAPER_TASKS, TaskData("local"))
    for name, spec in zip(PAPER_TASKS, tasks.specs):
        assert spec["task"] == name and spec["dataset_path"] == "json"
        files = set(spec["dataset_kwargs"]["data_files"].values())
        assert files == {str((LOCAL_TASKS / f"{name}.jsonl").resolve())}
        assert sum(1 for _ in (LOCAL_TASKS / f"{name}.jsonl").open()) == 30
    assert task_specs(["arc_easy"], TaskData("hub"), tasks.manager) == ["arc_easy"]  # the registry's, hub data


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("zeroshot") / "onnx"
    export_model(ExportConfig(str(tiny_dir), "onnx", out))
    return out


@pytest.fixture(scope="module")
def torch_report(tiny_dir: Path) -> ZeroShotReport:
    return zeroshot(ZeroShotConfig(str(tiny_dir), PAPER_TASKS, TaskData("local"), limit=12))


def test_every_local_task_runs_and_onnxruntime_equals_torch_to_the_last_example(
    torch_report: ZeroShotReport, onnx_artifact: Path
) -> None:
    onnx = zeroshot(ZeroShotConfig(str(onnx_artifact), PAPER_TASKS, TaskData("local"), limit=12))
    assert torch_report.runtime == "torch" and onnx.runtime == "onnxruntime"
    for name in PAPER_TASKS:
        row = torch_report.tasks[name]
        assert row.n == 12 and set(row.examples) >= {"acc"}
        assert onnx.tasks[name].examples == row.examples, name
    assert onnx.mean == torch_report.mean and onnx.equal_examples(torch_report) == (every := sum(12 * len(t.examples) for t in onnx.tasks.values()), every)
    assert ZeroShotReport.from_dict(onnx.to_dict()) == onnx
    metric = {n: torch_report.headline[n] for n in PAPER_TASKS}
    assert {metric[n] for n in ("hellaswag", "arc_easy", "arc_challenge", "openbookqa")} == {"acc_norm"}
    assert {metric[n] for n in ("boolq", "rte", "winogrande")} == {"acc"}


def test_an_altered_artifact_changes_the_accuracy_table(
    torch_report: ZeroShotReport, onnx_artifact: Path, tmp_path: Path
) -> None:
    """Every weight matrix of the ONNX file reversed and negated, and the manifest's sha256 made to match (as a
    different model would): the per-example results must move — the table comes from the artifact."""
    import onnx
    from onnx import numpy_helper

    altered = tmp_path / "altered"
    altered.mkdir()
    for f in onnx_artifact.iterdir():
        (altered / f.name).write_bytes(f.read_bytes())
    proto = onnx.load(str(altered / "model.onnx"))
    for i, tensor in enumerate(proto.graph.initializer):
        values = numpy_helper.to_array(tensor)
        if values.dtype == np.float32 and values.ndim == 2:
            flipped = -values[::-1].copy()
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(flipped, tensor.name))
    onnx.save(proto, str(altered / "model.onnx"))
    manifest = json.loads((altered / "export.json").read_text())
    manifest["sha256"] = hash_files(altered, exclude=("export.json",))
    (altered / "export.json").write_text(json.dumps(manifest))
    report = zeroshot(ZeroShotConfig(str(altered), PAPER_TASKS, TaskData("local"), limit=12))
    changed = [n for n in PAPER_TASKS if report.tasks[n].examples != torch_report.tasks[n].examples]
    assert len(changed) >= 3, changed


def refused(argv: list[str], capsys: pytest.CaptureFixture, *needles: str) -> None:
    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_bad_input_is_one_line(
    tiny_dir: Path, onnx_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    model = str(tiny_dir)
    refused(["eval", model, "--tasks", "arc_eesy", "--task-data", "local"], capsys, "unknown task 'arc_eesy'",
            "arc_easy")  # fmt: skip
    refused(["eval", model, "--tasks", "arc_easy", "--task-data", "local", "--limit", "0"], capsys, "--limit 0")
    refused(["eval", model, "--tasks", "", "--task-data", "local"], capsys, "names no task")
    refused(["eval", model, "--tasks", "arc_easy", "--task-data", str(tmp_path / "none")], capsys,
            "is not a directory")  # fmt: skip
    (tmp_path / "mine").mkdir()
    refused(["eval", model, "--tasks", "boolq", "--task-data", str(tmp_path / "mine")], capsys,
            f"no {tmp_path / 'mine' / 'boolq.jsonl'}", "--task-data hub")  # fmt: skip
    refused(["eval", str(onnx_artifact)], capsys, "is an exported artifact", "--tasks")
    refused(["eval", str(onnx_artifact), "--tasks", "rte", "--task-data", "local", "--stream"], capsys,
            "leave --stream out")  # fmt: skip
    changed = tmp_path / "changed"
    changed.mkdir()
    for f in onnx_artifact.iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    with (changed / "model.onnx").open("r+b") as fh:
        fh.seek(4096)
        fh.write(b"\x00" * 64)
    refused(["eval", str(changed), "--tasks", "boolq", "--task-data", "local"], capsys,
            "is not the artifact its export.json records (changed: model.onnx)", "export it again")  # fmt: skip
    # the hub's data, offline and not cached: where it looked and how to provide it
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    refused(["eval", model, "--tasks", "arc_easy"], capsys, "could not be loaded", str(tmp_path / "empty-cache"),
            "--task-data local")  # fmt: skip


def test_prune_with_tasks_records_them_in_the_manifest_and_streamed_equals_in_memory(
    tiny_dir: Path, tmp_path: Path
) -> None:
    """``slimpack prune --tasks``: the manifest's ``evaluation.zeroshot`` is the zero-shot report of the model as
    written (``slimpack eval OUT --tasks`` gives the same examples), in memory and streamed alike."""
    from prune.manifest import Manifest

    tasks = ["--tasks", "boolq,arc_easy", "--task-data", "local", "--limit", "6"]
    fast = ["--method", "wanda", "--nsamples", "4", "--seqlen", "32"]
    whole, streamed = tmp_path / "whole", tmp_path / "streamed"
    assert main(["-q", "prune", "--model", str(tiny_dir), *fast, "--eval", "--windows", "2", *tasks,
                 "--out", str(whole)]) == 0  # fmt: skip
    assert main(["-q", "prune", "--model", str(tiny_dir), *fast, "--stream", *tasks, "--out", str(streamed)]) == 0
    memory, stream = (Manifest.read(d).evaluation for d in (whole, streamed))
    assert memory is not None and stream is not None
    assert memory.perplexity is not None and memory.perplexity > 0 and stream.perplexity is None  # --eval: its own
    ours, streamed_report = (ZeroShotReport.from_dict(e.further["zeroshot"]) for e in (memory, stream))
    assert ours.runtime == "torch" and streamed_report.runtime == "torch, streamed"
    assert ours.summary is not None and ours.summary.startswith("zero-shot mean")
    report = tmp_path / "eval.json"
    assert main(["-q", "eval", str(whole), *tasks, "--json", str(report)]) == 0
    again = ZeroShotReport.read(report)
    for name in ("boolq", "arc_easy"):
        assert ours.tasks[name].n == 6
        assert ours.tasks[name].examples == again.tasks[name].examples, name
        assert streamed_report.tasks[name].examples == again.tasks[name].examples, name
    assert ours.mean == again.mean


def test_a_model_writing_command_refuses_bad_tasks_before_any_work(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    refused(["prune", "--model", str(tiny_dir), "--limit", "5", "--out", str(out)], capsys,
            "--limit applies to zero-shot tasks; add --tasks")  # fmt: skip
    refused(["prune", "--model", str(tiny_dir), "--tasks", "boolqq", "--task-data", "local", "--out", str(out)],
            capsys, "unknown task 'boolqq'", "boolq")  # fmt: skip
    refused(["quantize", str(tiny_dir), "--tasks", "rte", "--task-data", "local", "--limit", "0", "--out", str(out)],
            capsys, "--limit 0")  # fmt: skip
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # hub data neither reachable nor cached: before calibration
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    refused(
        ["prune", "--model", str(tiny_dir), "--tasks", "arc_easy", "--out", str(out)], capsys, "could not be loaded"
    )
    assert not out.exists()
