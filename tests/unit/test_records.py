"""The typed records round-trip the files the previous release wrote: ``slimpack.json`` (`prune.manifest.Manifest`)
and ``export.json`` (`export.artifact.ExportRecord`). ``tests/data/previous_release/`` holds them as written by
commit 0bdfe41 (before ``export.json`` was typed): prune (Wanda, evaluated), quantize (GPTQ), structured
(SlimGPT) manifests, and the sparse, onnx and onnx-int4 export records of a tiny model; and ``slimpack verify``'s
reports (`runtime_bench.verify.VerifyReport`) as written by commit 7f03596 (before they were typed): one that
passed, one of an artifact whose file was changed (its integrity check fails, nothing else is run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.artifact import ExportRecord
from export.base import ZeroSummary
from prune.manifest import Manifest
from runtime_bench.verify import VerifyBrief, VerifyReport

DATA = Path(__file__).resolve().parents[1] / "data" / "previous_release"
MANIFESTS = sorted(DATA.glob("*.slimpack.json"))
EXPORTS = sorted(DATA.glob("*.export.json"))
VERIFY_REPORTS = sorted(DATA.glob("*.verify.json"))


def test_the_previous_release_files_are_there() -> None:
    assert [p.name.split(".")[0] for p in MANIFESTS] == ["prune", "quantize", "structured"]
    assert [p.name.split(".")[0] for p in EXPORTS] == ["onnx-int4", "onnx", "sparse"]
    assert [p.name.split(".")[0] for p in VERIFY_REPORTS] == ["sparse", "tampered"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_a_previous_manifest_round_trips(path: Path) -> None:
    data = json.loads(path.read_text())
    manifest = Manifest.from_dict(data)
    assert manifest.to_dict() == data
    assert json.dumps(manifest.to_dict(), indent=2) == json.dumps(data, indent=2)  # key order too


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.name)
def test_a_previous_export_record_round_trips(path: Path) -> None:
    data = json.loads(path.read_text())
    record = ExportRecord.from_dict(data)
    assert isinstance(record.zeros, ZeroSummary) and record.zeros.exported_zeros >= record.zeros.source_zeros > 0
    assert record.format == path.name.split(".")[0] and record.details  # the format's own fields kept apart
    assert not set(record.details) & {"format", "engine", "zeros", "bytes", "sha256"}
    assert json.dumps(record.to_dict(), indent=2) == json.dumps(data, indent=2)  # the same file, key order too


def test_a_record_missing_or_damaging_fields_reads_them_as_none() -> None:
    """An older or edited ``export.json``: absent fields are None and are not written back; damaged zeros read
    as None (verify counts zeros again and never reads them)."""
    data = json.loads((DATA / "onnx.export.json").read_text())
    for key in ("sha256", "peak_rss_mib", "environment", "source_stage"):
        data.pop(key)
    data["zeros"] = {"source_zeros": 1}
    record = ExportRecord.from_dict(data)
    assert record.sha256 is None and record.zeros is None and record.environment is None
    written = record.to_dict()
    assert "sha256" not in written and "zeros" not in written and written["source_stage"] is None


@pytest.mark.parametrize("path", VERIFY_REPORTS, ids=lambda p: p.name)
def test_a_previous_verify_report_round_trips(path: Path) -> None:
    data = json.loads(path.read_text())
    report = VerifyReport.from_dict(data)
    assert json.dumps(report.to_dict(), indent=2) == json.dumps(data, indent=2)  # key order too
    brief = report.brief()
    if path.name.startswith("tampered"):
        assert brief == VerifyBrief(False, integrity=data["integrity"]) and report.perplexity is None
    else:
        assert report.passed and brief.perplexity == report.perplexity.artifact.perplexity > 0  # type: ignore[union-attr]
    assert report.table().startswith(f"verify {report.format} ")
