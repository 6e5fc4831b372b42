"""The papers' perplexity protocols (`prune.spec.PROTOCOLS`): each runs the real loader (`datasets`) on small
local files in its dataset's shape and gives the window count the docs state; ``--protocol`` replaces the
command's evaluation and calibration; a bad name is one line."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest

from prune.cli import add_data_arguments, add_eval_arguments, data_spec, eval_spec
from prune.data import HF_CORPORA, DataSpec, eval_windows, tokenize
from prune.spec import PROTOCOLS, EvalSpec

WORDS = "the model reads every window of the test text and predicts each next token from the ones before".split()


def write_split(path: Path, field: str, docs: int, words: int, seed: int) -> None:
    with path.open("w") as fh:
        for d in range(docs):
            text = " ".join(WORDS[(d * 7 + i * seed) % len(WORDS)] for i in range(words)) + f" {d}."
            fh.write(json.dumps({field: text, "extra": d}) + "\n")


@pytest.mark.parametrize("name", ["wikitext2-2048", "wikitext2-4096", "c4-256x2048", "ptb-2048"])
def test_protocol_windows_on_local_files_of_the_datasets_shape(tmp_path: Path, tokenizer, name: str) -> None:  # noqa: ANN001
    proto = PROTOCOLS[name]
    corpus = HF_CORPORA[proto.eval.dataset]
    train, test = tmp_path / "train.json", tmp_path / "test.json"
    write_split(train, corpus.field, 40, 60, 3)
    write_split(test, corpus.field, 1200, 400, 5)  # more documents than C4's first 1100
    local = replace(corpus, path="json", name=None, calib_files=str(train), eval_files=str(test))
    texts = local.texts()  # the real `datasets.load_dataset`, on the local files
    tokens = tokenize(tokenizer, texts.evaluation)
    windows = eval_windows(tokens, proto.eval.seqlen, proto.eval.windows)
    if name == "c4-256x2048":
        assert texts.evaluation.endswith(" 1099.")  # the first 1100 validation documents, joined with spaces
        assert windows.shape == (256, 2048)  # the first 256 windows, as SparseGPT's C4
    else:
        assert texts.evaluation.endswith(" 1199.")  # every test document
        assert windows.shape == (tokens.numel() // proto.eval.seqlen, proto.eval.seqlen)  # every whole window
        assert tokens.numel() - windows.numel() < proto.eval.seqlen  # only the trailing partial window is left
    assert proto.calibration.dataset == "c4" and proto.calibration.nsamples == 128
    assert proto.calibration.seqlen == proto.eval.seqlen


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    add_eval_arguments(parser)
    return parser.parse_args(argv)


def test_protocol_replaces_the_command_lines_evaluation_and_calibration() -> None:
    args = parse(["--protocol", "wikitext2-4096", "--seed", "3", "--eval-batch-size", "2"])
    assert eval_spec(args) == EvalSpec("wikitext2", 4096, None, 2)
    assert data_spec(args, args.protocol) == DataSpec("c4", 128, 4096, 3)
    plain = parse(["--dataset", "ptb", "--seqlen", "256"])
    assert eval_spec(plain) == EvalSpec("ptb", 256, 40, 1) and data_spec(plain, plain.protocol).nsamples == 32
    assert PROTOCOLS["offline-512"].eval == EvalSpec() and PROTOCOLS["offline-512"].calibration == DataSpec()


def test_an_unknown_protocol_is_one_line(tiny_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from runtime_bench.cli import main

    assert main(["-q", "eval", str(tiny_dir), "--protocol", "wikitext-2048"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown --protocol 'wikitext-2048'" in err and "wikitext2-2048" in err
