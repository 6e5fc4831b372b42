import json
from pathlib import Path

import pytest
import torch

from prune.data import (
    CORPORA,
    HF_CORPORA,
    DataSpec,
    HFCorpus,
    calibration_batches,
    calibration_windows,
    eval_windows,
    load_texts,
    split_text,
)
from prune.errors import SlimpackError


def test_offline_corpus_split_is_disjoint_deterministic_and_sized() -> None:
    a, b = load_texts("offline"), load_texts("offline")
    assert a == b
    total = len(a.calibration) + len(a.evaluation)
    assert 0.15 < len(a.evaluation) / total < 0.25
    assert a.calibration.endswith("\n")
    # disjoint: the two parts are consecutive slices of one text
    from pydoc_data.topics import topics

    assert a.calibration + a.evaluation == "\n\n".join(topics[k] for k in sorted(topics))


def test_local_file_is_split_the_same_way(tmp_path: Path) -> None:
    text = "".join(f"line {i}\n" for i in range(100))
    path = tmp_path / "c.txt"
    path.write_text(text)
    assert load_texts(str(path)) == split_text(text)
    assert load_texts(str(path)).evaluation.startswith("line 8")


def test_unknown_dataset_is_one_clear_error() -> None:
    with pytest.raises(SlimpackError, match="unknown dataset 'nope'.*offline"):
        load_texts("nope")


def test_calibration_windows_are_seeded() -> None:
    tokens = torch.arange(1000)
    a = calibration_windows(tokens, 8, 16, seed=1)
    assert a.shape == (8, 16)
    assert torch.equal(a, calibration_windows(tokens, 8, 16, seed=1))
    assert not torch.equal(a, calibration_windows(tokens, 8, 16, seed=2))
    assert ((a[:, 1:] - a[:, :-1]) == 1).all()  # contiguous windows


def test_eval_windows_are_consecutive_and_non_overlapping() -> None:
    w = eval_windows(torch.arange(100), 16)
    assert w.shape == (6, 16) and torch.equal(w.flatten(), torch.arange(96))
    assert eval_windows(torch.arange(100), 16, 2).shape == (2, 16)
    with pytest.raises(SlimpackError, match="more than the 6 windows"):
        eval_windows(torch.arange(100), 16, 7)


def test_calibration_batches_record_the_spec(tokenizer) -> None:  # noqa: ANN001
    spec = DataSpec("offline", nsamples=5, seqlen=32, seed=3)
    batches = calibration_batches(tokenizer, spec, batch_size=2)
    assert [b.shape for b in batches] == [(2, 32), (2, 32), (1, 32)]
    assert spec.to_dict() == {"dataset": "offline", "nsamples": 5, "seqlen": 32, "seed": 3}
    with pytest.raises(SlimpackError, match="nsamples 0"):
        DataSpec(nsamples=0).check()


class FakeDataset(dict):
    pass


def test_registered_hf_corpora_call_datasets_as_the_papers_do() -> None:
    calls = []

    def loader(path, name=None, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append((path, name, kw))
        field = "sentence" if path == "ptb_text_only" else "text"
        return FakeDataset({field: [f"{path}-{kw['split']}-{i}" for i in range(3)]})

    wt = HF_CORPORA["wikitext2"].texts(loader)
    assert wt.calibration == "wikitext-train-0\n\nwikitext-train-1\n\nwikitext-train-2"
    assert calls[-2:] == [
        ("wikitext", "wikitext-2-raw-v1", {"split": "train"}),
        ("wikitext", "wikitext-2-raw-v1", {"split": "test"}),
    ]
    ptb = HF_CORPORA["ptb"].texts(loader)
    assert ptb.evaluation == "ptb_text_only-test-0 ptb_text_only-test-1 ptb_text_only-test-2"
    HF_CORPORA["c4"].texts(loader)
    assert calls[-1] == (
        "allenai/c4",
        None,
        {"split": "train", "data_files": {"train": "en/c4-validation.00000-of-00008.json.gz"}},
    )
    assert set(HF_CORPORA) <= set(CORPORA.names())


def test_hf_corpus_reads_real_local_files_with_datasets(tmp_path: Path) -> None:
    """The c4 shape (json lines with a text field, one file per split) through the real `datasets`."""
    for split, n in (("train", 4), ("validation", 3)):
        with open(tmp_path / f"{split}.json", "w") as fh:
            for i in range(n):
                fh.write(json.dumps({"text": f"{split} document {i}", "url": "x"}) + "\n")
    corpus = HFCorpus(
        "json",
        None,
        "train",
        "validation",
        "text",
        " ",
        calib_files=str(tmp_path / "train.json"),
        eval_files=str(tmp_path / "validation.json"),
        eval_docs=2,
    )
    texts = corpus.texts()
    assert texts.calibration == "train document 0 train document 1 train document 2 train document 3"
    assert texts.evaluation == "validation document 0 validation document 1"


def test_heldout_windows_overlap_no_calibration_window() -> None:
    from prune.data import calibration_starts, heldout_windows

    tokens = torch.arange(5000)
    spec = DataSpec(nsamples=8, seqlen=64, seed=2)
    held = heldout_windows(tokens, 6, spec)
    starts = [int(w[0]) for w in held]
    taken = calibration_starts(5000, 8, 64, 2)
    assert all(abs(a - b) >= 64 for a in starts for b in taken)
    assert all(abs(a - b) >= 64 for i, a in enumerate(starts) for b in starts[i + 1 :])
    assert torch.equal(held, heldout_windows(tokens, 6, spec))
    with pytest.raises(SlimpackError, match="no room for"):
        heldout_windows(torch.arange(600), 6, spec)
