"""The typed manifest: one writer, one reader, a round trip that loses nothing, and older layouts read."""

from __future__ import annotations

from pathlib import Path

import pytest

from prune.errors import SlimpackError
from prune.manifest import MANIFEST, Manifest, MethodRecord, Timing, brief_pruning


def manifest(**extra: object) -> Manifest:
    return Manifest(
        stage="prune", source_model="m", method=MethodRecord("wanda", {}), pattern="unstructured/row",
        target_sparsity=0.5, allocation={"name": "dlp", "plan": {"a": 0.5}, "block_ratios": [0.5]},
        calibration={"dataset": "offline"}, sparsity={"overall": 0.5}, timing=Timing(1.0, 2.0), **extra,
    )  # fmt: skip


def test_round_trip_and_hashes(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    written = manifest(evaluation={"perplexity": 12.5}).write(tmp_path)
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
    old_structured = {**old_prune, "structured": True, "parameters": {"before": 2}, "units": [], "keep_heads": None,
                      "reconstruct": {"enabled": False}}  # fmt: skip
    assert Manifest.from_dict(old_structured).structure["parameters"] == {"before": 2}
    old_quant = {**old_prune, "stage": "quantize", "timing": {"quantize_seconds": 4.0}, "quantization": {"bits": 4},
                 "pruned_zeros": {"kept": 1}, "source_manifest": None, "sparsity_before": 0.5}  # fmt: skip
    upgraded = Manifest.from_dict(old_quant)
    assert upgraded.timing.seconds == 4.0 and upgraded.quantization == {
        "bits": 4, "source": None, "sparsity_before": 0.5, "pruned_zeros": {"kept": 1}
    }  # fmt: skip


def test_structured_spec_default_is_the_papers_lambda() -> None:
    from prune.spec import StructuredSpec
    from prune.structured.reconstruct import RIDGE_LAMBDA

    assert StructuredSpec().ridge_lambda == RIDGE_LAMBDA
