"""Issue #29: slimpack's lm-eval model (`runtime_bench.lm_eval_model.EngineLM`) against lm-eval's own Hugging Face
model (``HFLM``, fp32, batch 1) in the same process, on a tiny random Llama whose tokenizer adds no BOS and on the
same model with a tokenizer that prepends one: a multiple-choice task (arc_easy), a rolling one (wikitext: word
perplexity) and a generation one (gsm8k: exact match under two filters), from the local task files. Every
per-example result is equal, log-likelihoods agree within 1e-4 nats, generated strings are equal; ``slimpack eval
--tasks`` reports every metric and how it encoded the requests."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lm_eval")

import lm_eval  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from tokenizers.processors import TemplateProcessing  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from runtime_bench.cli import main  # noqa: E402
from runtime_bench.zeroshot import TaskData, Tasks, ZeroShotConfig, ZeroShotReport, engine_lm, open_source  # noqa: E402

TASKS = ("arc_easy", "wikitext", "gsm8k")
LIMIT = 3


@pytest.fixture(scope="module")
def tasks() -> Tasks:
    return Tasks.prepare(TASKS, TaskData("local"))


@pytest.fixture(scope="module")
def bos_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """The tiny model with a tokenizer that prepends ``<s>`` to every encoding, as Llama's does."""
    out = tmp_path_factory.mktemp("bos") / "model"
    shutil.copytree(tiny_dir, out)
    tok = AutoTokenizer.from_pretrained(out)
    bos = tok.convert_tokens_to_ids("<s>")
    tok._tokenizer.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    tok.save_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).encode("hello")[0] == bos
    return out


def run(lm: Any, tasks: Tasks) -> dict[str, Any]:
    return lm_eval.simple_evaluate(
        model=lm, tasks=copy.deepcopy(tasks.specs), num_fewshot=0, limit=LIMIT, task_manager=tasks.manager,
        log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0,
        bootstrap_iters=0,
    )  # fmt: skip


def same(ours: Any, theirs: Any, where: str) -> None:
    """Numbers within 1e-4 (log-likelihoods), booleans, integers and strings equal, nested alike."""
    if isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, float):
        assert ours == pytest.approx(theirs, abs=1e-4), where
    else:
        assert ours == theirs, where


@pytest.mark.parametrize("which", ["plain", "bos"])
def test_every_request_type_equals_lm_evals_hf_model(which: str, tiny_dir: Path, bos_dir: Path, tasks: Tasks) -> None:
    model = tiny_dir if which == "plain" else bos_dir
    opened = open_source(ZeroShotConfig(str(model), TASKS, TaskData("local"), progress=False))
    ours_lm, _ = engine_lm(opened, progress=False)
    assert ours_lm.adds_bos == (which == "bos")
    ours = run(ours_lm, tasks)
    theirs = run(HFLM(pretrained=str(model), device="cpu", batch_size=1, dtype="float32"), tasks)
    for task in TASKS:
        mine = sorted(ours["samples"][task], key=lambda s: (s["doc_id"], s["filter"]))
        ref = sorted(theirs["samples"][task], key=lambda s: (s["doc_id"], s["filter"]))
        assert len(mine) == len(ref) > 0
        for a, b in zip(mine, ref):
            where = f"{which} {task} doc {b['doc_id']} {b['filter']}"
            same(a["arguments"], b["arguments"], f"{where} requests")
            same(a["resps"], b["resps"], f"{where} responses")  # log-likelihoods, or the generated strings
            same(a["filtered_resps"], b["filtered_resps"], f"{where} filtered")
            for metric in b["metrics"]:
                same(a[metric], b[metric], f"{where} {metric}")
        assert set(ours["results"][task]) == set(theirs["results"][task])
    generated = [s["resps"][0][0] for s in ours["samples"]["gsm8k"]]
    assert all(isinstance(g, str) for g in generated) and any(generated)


def test_eval_tasks_reports_every_metric_and_the_encoding(bos_dir: Path, tmp_path: Path) -> None:
    """``slimpack eval --tasks``: a rolling and a generation task next to a multiple-choice one, every metric in the
    JSON and the table (exact match under each filter, the perplexities), the mean over the accuracies only, and
    the BOS, window and prefix token it used; ``--no-add-bos-token`` turns BOS off."""
    out = tmp_path / "zs.json"
    args = ["-q", "eval", str(bos_dir), "--tasks", ",".join(TASKS), "--task-data", "local", "--limit", str(LIMIT)]
    assert main([*args, "--json", str(out)]) == 0
    report = ZeroShotReport.read(out)
    assert report.to_dict() == json.loads(out.read_text())
    assert (report.bos, report.max_length, report.model_max_length, report.prefix_token_id) == (True, 2048, 2048, 1)
    assert {"word_perplexity", "byte_perplexity", "bits_per_byte"} <= set(report.tasks["wikitext"].metrics)
    assert {"exact_match,strict-match", "exact_match,flexible-extract"} <= set(report.tasks["gsm8k"].metrics)
    assert report.headline == {"arc_easy": "acc_norm", "wikitext": "word_perplexity",
                               "gsm8k": "exact_match,strict-match"}  # fmt: skip
    assert report.mean_of == ["arc_easy", "gsm8k"]
    assert len(report.tasks["wikitext"].examples["word_perplexity"]) == LIMIT
    assert report.mean == pytest.approx((report.accuracy("arc_easy") + report.accuracy("gsm8k")) / 2)
    assert "| wikitext | word_perplexity (headline) |" in report.table()
    plain = tmp_path / "plain.json"
    assert main([*args[:4], "arc_easy", *args[5:], "--no-add-bos-token", "--json", str(plain)]) == 0
    assert ZeroShotReport.read(plain).bos is False
