"""The typed manifest: one writer, one reader, a round trip that loses nothing, and older layouts read."""

from __future__ import annotations

from pathlib import Path

import pytest

from prune.errors import SlimpackError
from prune.manifest import (
    MANIFEST,
    AllocationRecord,
    EvaluationRecord,
    Manifest,
    MethodRecord,
    PrunedZeros,
    QuantizationRecord,
    Timing,
    brief_pruning,
)
from prune.sparsity import SparsityRecord


def manifest(**extra: object) -> Manifest:
    return Manifest(
        stage="prune", source_model="m", method=MethodRecord("wanda", {}), pattern="unstructured/row",
        target_sparsity=0.5, allocation=AllocationRecord("dlp", block_ratios=[0.5], plan={"a": 0.5}),
        calibration={"dataset": "offline"}, sparsity=SparsityRecord(0.5), timing=Timing(1.0, 2.0), **extra,
    )  # fmt: skip


def test_round_trip_and_hashes(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    written = manifest(evaluation=EvaluationRecord(perplexity=12.5)).write(tmp_path)
    read = Manifest.read(tmp_path)
    assert read == written and read.perplexity == 12.5 and set(read.files) == {"model.safetensors"}
    assert read.pruning() == "wanda 50 % dlp"
    assert read.check_files(tmp_path) == {"changed": [], "missing": [], "unlisted": []}
    (tmp_path / "model.safetensors").write_bytes(b"tampered")
    (tmp_path / "extra.bin").write_bytes(b"?")
    assert read.check_files(tmp_path) == {"changed": ["model.safetensors"], "missing": [], "unlisted": ["extra.bin"]}
    (tmp_path / "model.safetensors").unlink()
    assert read.check_files(tmp_path)["missing"] == ["model.safetensors"]
    assert brief_pruning(read.brief()) == "wanda 50 % dlp" and "plan" not in read.brief()["allocation"]


def test_missing_or_damaged_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SlimpackError, match="has no slimpack.json"):
        Manifest.read(tmp_path)
    (tmp_path / MANIFEST).write_text("{}")
    with pytest.raises(SlimpackError, match="is not a slimpack manifest"):
        Manifest.read(tmp_path)


def test_older_layouts_are_read() -> None:
    old_prune = {**manifest().to_dict(), "timing": {"prune_seconds": 3.0, "peak_rss_mib_after_prune": 9.0}}
    assert Manifest.from_dict(old_prune).timing == Timing(3.0, 9.0)
    parameters = {"before": {"total": 10, "blocks": 8}, "after": {"total": 6, "blocks": 4}}
    unit = {"name": "model.layers.0.self_attn", "ratio": 0.5, "removed": [1], "before": 2, "after": 1, "seconds": 0.1}
    old_structured = {**old_prune, "structured": True, "parameters": parameters, "units": [unit], "keep_heads": None,
                      "reconstruct": {"enabled": False, "lambda": 0.9}}  # fmt: skip
    structure = Manifest.from_dict(old_structured).structure
    assert structure is not None and structure.parameters.after.total == 6 and structure.heads() == [1]
    assert structure.reconstruct == {"enabled": False, "lambda": 0.9}
    old_quant = {**old_prune, "stage": "quantize", "timing": {"quantize_seconds": 4.0},
                 "quantization": {"bits": 4, "group_size": 128, "sym": True, "act_order": False, "format": "gptq",
                                  "checkpoint_format": "gptq"},
                 "pruned_zeros": {"pruned": 2, "kept": 2, "fraction_kept": 1.0}, "source_manifest": None,
                 "sparsity_before": 0.5}  # fmt: skip
    upgraded = Manifest.from_dict(old_quant)
    assert upgraded.timing.seconds == 4.0 and upgraded.quantization == QuantizationRecord(
        4, 128, True, False, False, "gptq", None, 0.5, PrunedZeros(2, 2, 1.0)
    )  # fmt: skip


def test_structured_spec_default_is_the_papers_lambda() -> None:
    from prune.spec import StructuredSpec
    from prune.structured.reconstruct import RIDGE_LAMBDA

    assert StructuredSpec().ridge_lambda == RIDGE_LAMBDA
