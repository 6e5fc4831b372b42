"""Drills of issue #26, class 3 (verify vouches for the artifact's bytes, never for what ``export.json`` says)
and the ``export.json`` parts of classes 4 and 5: a missing or malformed sha256 list is "not verified" (verify:
exit 1; ``eval --tasks``: one line, exit 2, unless ``--trust-unverified``), the zeros are counted against the
reference model's own, every file entry resolves inside the artifact, and a damaged field of ``export.json``
is one line, exit 2, before any work, for every command that opens an artifact. No drill changes a file of
the artifact, of the reference or of their neighbours."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from prune.errors import SlimpackError
from prune.io import hash_files
from runtime_bench.cli import main
from tests.conftest import save_tiny
from tests.integration.test_reliability import FAST, digest, one_line

VERIFY = ["--seqlen", "16", "--windows", "2", "--prompt", "4", "--tokens", "4"]
TASKS = ["--tasks", "boolq", "--task-data", "local", "--limit", "2"]
Manifest = dict[str, Any]
Case = tuple[Path, Path, Callable[[], None]]  # the reference, the artifact's copy, "tampered: check from here"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> tuple[Path, Path]:  # noqa: ANN001
    """A pruned tiny model (the reference, beside a neighbour's file) and its onnx artifact, made once."""
    root = tmp_path_factory.mktemp("artifact")
    model = save_tiny(root / "models" / "m", tokenizer)
    pruned, artifact = root / "models" / "pruned", root / "onnx"
    (root / "models" / "notes.txt").write_text("someone else's file\n")
    assert main(["-q", "prune", "--model", str(model), "--method", "magnitude", "--sparsity", "0.5", *FAST,
                 "--out", str(pruned)]) == 0  # fmt: skip
    assert main(["-q", "export", str(pruned), "--format", "onnx", "--out", str(artifact)]) == 0
    return pruned, artifact


@pytest.fixture
def case(exported: tuple[Path, Path], tmp_path: Path):  # noqa: ANN201
    """A copy of the artifact to tamper with (``tmp_path/art``, beside ``tmp_path/other/model.onnx``); after the
    test, the copy as tampered, the reference and every neighbour are byte for byte as before it."""
    pruned, artifact = exported
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    (tmp_path / "other").mkdir()
    shutil.copy(artifact / "model.onnx", tmp_path / "other" / "model.onnx")
    state: dict[str, Any] = {}

    def tampered() -> None:  # the drill's own edit done: what must not change from here
        state["before"] = (digest(tmp_path), digest(pruned.parent))

    yield pruned, art, tampered
    assert (digest(tmp_path), digest(pruned.parent)) == state["before"]  # nothing changed, nothing left


def edit(change: Callable[[Manifest], None]) -> Callable[[Path], None]:
    """A tamper that edits ``export.json`` only."""

    def tamper(art: Path) -> None:
        manifest = json.loads((art / "export.json").read_text())
        change(manifest)
        (art / "export.json").write_text(json.dumps(manifest))

    return tamper


def first(mapping: dict[str, Any]) -> str:
    return next(iter(mapping))


def zeros_made_tiny(art: Path) -> None:
    """200 pruned zeros of one exported weight set to 1e-12 (no number changes: ppl and greedy tokens alike),
    the sha256 list rewritten and the recorded source zeros lowered to match: a hostile edit of everything."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(art / "model.onnx"))
    tensor = next(t for t in proto.graph.initializer if "q_proj" in t.name and len(t.dims) == 2)
    array = numpy_helper.to_array(tensor).copy()
    flat = array.reshape(-1)
    flat[np.flatnonzero(flat == 0)[:200]] = 1e-12
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    onnx.save(proto, str(art / "model.onnx"))
    manifest = json.loads((art / "export.json").read_text())
    manifest["sha256"] = hash_files(art, exclude=("export.json",))
    manifest["zeros"]["source_zeros"] -= 200
    manifest["zeros"]["exported_zeros"] -= 200
    (art / "export.json").write_text(json.dumps(manifest))


def other_sha(m: Manifest, name: str) -> None:
    m["sha256"][name] = m["sha256"]["model.onnx"]


# --- class 3: verify's integrity check ------------------------------------------------------------------------
INTEGRITY: list[tuple[str, Callable[[Path], None], str]] = [
    ("sha256-removed", edit(lambda m: m.pop("sha256")), "not verified: export.json records no sha256"),
    ("sha256-null", edit(lambda m: m.update(sha256=None)), "not verified: export.json records no sha256"),
    ("sha256-emptied", edit(lambda m: m.update(sha256={})), "not verified: export.json records an empty sha256"),
    ("sha256-a-list", edit(lambda m: m.update(sha256=list(m["sha256"]))), "records sha256 as a list"),
    ("sha256-a-string", edit(lambda m: m.update(sha256="ok")), "records sha256 as 'ok'"),
    ("digest-63-hex", edit(lambda m: m["sha256"].update({"model.onnx": m["sha256"]["model.onnx"][:63]})),
     "as the sha256 of 'model.onnx', not a sha256"),
    ("digest-not-hex", edit(lambda m: m["sha256"].update({"model.onnx": "z" * 64})), "not a sha256"),
    ("digest-a-number", edit(lambda m: m["sha256"].update({"model.onnx": 7})), "records 7 as the sha256"),
    ("entry-dotdot", edit(lambda m: other_sha(m, "../other/model.onnx")),
     "lists '../other/model.onnx', a file outside"),
    ("entry-absolute", edit(lambda m: other_sha(m, "/etc/hostname")), "lists '/etc/hostname', a file outside"),
    ("entry-empty-name", edit(lambda m: other_sha(m, "")), "lists a file name that is not a path"),
    ("zeros-lowered-sha-rewritten", zeros_made_tiny, "(reference "),
    ("weights-module-dropped", edit(lambda m: m["weights"].pop(first(m["weights"]))), " missing"),
    ("weights-unknown-initializer", edit(lambda m: m["weights"].update({first(m["weights"]): "nope"})),
     "cannot be counted from the artifact (KeyError"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "tamper", "reason"), INTEGRITY, ids=[c[0] for c in INTEGRITY])
def test_verify_fails_what_export_json_cannot_vouch_for(
    case: Case, name: str, tamper: Callable[[Path], None], reason: str, capsys: pytest.CaptureFixture
) -> None:
    pruned, art, tampered = case
    tamper(art)
    tampered()
    capsys.readouterr()
    assert main(["-q", "verify", str(art), "--reference", str(pruned), *VERIFY]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and reason in out and "numeric checks | not run" in out, out
    if name.startswith("zeros"):
        assert "< " in out  # the weight that lost zeros, by name: the recount against the reference's own


def test_streamed_verify_counts_the_references_zeros_from_its_shards(case: Case, capsys: pytest.CaptureFixture) -> None:
    pruned, art, tampered = case
    zeros_made_tiny(art)
    tampered()
    assert main(["-q", "verify", str(art), "--reference", str(pruned), *VERIFY, "--stream"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "self_attn.q_proj 1848 < 2048" in out, out


def test_verify_passes_an_artifact_whose_recorded_zeros_were_removed(case: Case, capsys: pytest.CaptureFixture) -> None:
    """The zeros that export.json records are never read: removed, verify still counts both sides and passes."""
    pruned, art, tampered = case
    edit(lambda m: m.pop("zeros"))(art)
    tampered()
    assert main(["-q", "verify", str(art), "--reference", str(pruned), *VERIFY]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "all equal" in out and "(reference " in out


@pytest.mark.parametrize(
    ("tamper", "needle"),
    [
        (edit(lambda m: m.pop("sha256")), "is not verified: export.json records no sha256; export it again, or pass "
         "--trust-unverified to run it anyway"),
        (edit(lambda m: other_sha(m, "../other/model.onnx")), "is not verified: "),
        (edit(lambda m: m["sha256"].update({"model.onnx": "0" * 63})), "not a sha256; export it again, or pass "
         "--trust-unverified"),
    ],
    ids=["sha256-removed", "entry-dotdot", "digest-63-hex"],
)  # fmt: skip
def test_eval_refuses_an_unverified_artifact_in_one_line(
    case: Case, tamper: Callable[[Path], None], needle: str, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("lm_eval")
    _, art, tampered = case
    tamper(art)
    tampered()
    assert main(["-q", "eval", str(art), *TASKS]) == 2
    line = one_line(capsys)
    assert line.startswith(f"slimpack: error: '{art}' ") and needle in line, line


def test_eval_runs_an_unverified_artifact_with_trust_unverified_only(
    case: Case, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("lm_eval")
    _, art, tampered = case
    edit(lambda m: m.pop("sha256"))(art)
    tampered()
    assert main(["-q", "eval", str(art), *TASKS, "--trust-unverified"]) == 0
    assert "onnxruntime" in capsys.readouterr().out and "running it anyway (--trust-unverified)" in caplog.text


def test_a_truncated_artifact_without_sha256_is_not_verified_and_trusted_fails_in_its_runtime(
    case: Case, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    """No more "exported by an older slimpack": verify fails it; eval --trust-unverified runs it, and its runtime
    refuses the truncated graph in one line."""
    pytest.importorskip("lm_eval")
    pruned, art, tampered = case
    data = (art / "model.onnx").read_bytes()
    (art / "model.onnx").write_bytes(data[: len(data) // 2])
    edit(lambda m: m.pop("sha256"))(art)
    tampered()
    assert main(["-q", "verify", str(art), "--reference", str(pruned), *VERIFY]) == 1
    assert "not verified: export.json records no sha256" in capsys.readouterr().out
    assert main(["-q", "eval", str(art), *TASKS, "--trust-unverified"]) == 2
    assert "not verified: export.json records no sha256; running it anyway (--trust-unverified)" in caplog.text
    assert one_line(capsys).startswith(f"slimpack: error: onnxruntime cannot load '{art / 'model.onnx'}'")


def test_trust_unverified_does_not_pass_a_changed_file(case: Case, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("lm_eval")
    _, art, tampered = case
    with (art / "tokenizer.json").open("a") as fh:
        fh.write(" ")
    tampered()
    assert main(["-q", "eval", str(art), *TASKS, "--trust-unverified"]) == 2
    assert "is not the artifact its export.json records (changed: tokenizer.json); export it again" in one_line(capsys)


# --- classes 4 and 5: export.json's fields, checked when the artifact opens --------------------------------
def outside_file(absolute: bool) -> Callable[[Path], None]:
    def tamper(art: Path) -> None:
        target = art.parent / "other" / "model.onnx"
        edit(lambda m: m.update(file=str(target) if absolute else "../other/model.onnx"))(art)

    return tamper


def duplicated_weight(m: Manifest) -> None:
    a, b = list(m["weights"])[:2]
    m["weights"][b] = m["weights"][a]


def write(text: str) -> Callable[[Path], None]:
    return lambda art: (art / "export.json").write_text(text)


DAMAGED: list[tuple[str, Callable[[Path], None], str]] = [
    ("format-unknown", edit(lambda m: m.update(format="onnx-fp8")),
     "records the format 'onnx-fp8', not one slimpack exports ("),
    ("format-swapped", edit(lambda m: m.update(format="deepsparse")),
     "records the format 'deepsparse' with the engine 'onnxruntime', but 'deepsparse' runs in 'deepsparse'"),
    ("format-null", edit(lambda m: m.update(format=None)), "records the format null, not one slimpack exports"),
    ("format-a-list", edit(lambda m: m.update(format=["onnx"])), "records the format a list"),
    ("engine-removed", edit(lambda m: m.pop("engine")),
     "records the format 'onnx' with the engine null, but 'onnx' runs in 'onnxruntime'"),
    ("engine-swapped", edit(lambda m: m.update(engine="torch")),
     "records the format 'onnx' with the engine 'torch', but"),
    ("bytes-a-string", edit(lambda m: m.update(bytes="12")), "records bytes '12', not a size in bytes"),
    ("bytes-negative", edit(lambda m: m.update(bytes=-1)), "records bytes -1, not a size in bytes"),
    ("bytes-true", edit(lambda m: m.update(bytes=True)), "records bytes true, not a size in bytes"),
    ("file-absolute", outside_file(True), "a file outside"),
    ("file-dotdot", outside_file(False), "lists '../other/model.onnx', a file outside"),
    ("file-a-number", edit(lambda m: m.update(file=3)), "lists a file name that is not a path (int)"),
    ("files-a-string", edit(lambda m: m.update(files="model.onnx")), "records files 'model.onnx', not a list"),
    ("weights-a-list", edit(lambda m: m.update(weights=["x"])), "records weights a list, not weight names"),
    ("weights-one-for-two", edit(duplicated_weight), "records one weight for two modules"),
    ("manifest-a-list", write("[]"), "is not an export manifest (a JSON list, not an object)"),
    ("manifest-not-json", write("{"), "is not an export manifest (JSONDecodeError)"),
    ("manifest-binary", lambda art: (art / "export.json").write_bytes(b"\xff\xfe\x00"),
     "is not an export manifest (UnicodeDecodeError)"),
]  # fmt: skip


@pytest.mark.parametrize(("tamper", "needle"), [c[1:] for c in DAMAGED], ids=[c[0] for c in DAMAGED])
def test_a_damaged_export_json_is_one_line_for_every_command_that_opens_it(
    case: Case, tamper: Callable[[Path], None], needle: str, capsys: pytest.CaptureFixture
) -> None:
    from runtime_bench.engines import open_engine

    pruned, art, tampered = case
    tamper(art)
    tampered()
    where = str(art / "export.json")
    commands = [["verify", str(art), "--reference", str(pruned), *VERIFY]]
    try:
        import lm_eval  # noqa: F401

        commands.append(["eval", str(art), *TASKS])
    except ImportError:
        pass
    for argv in commands:
        assert main(["-q", *argv]) == 2, argv
        line = one_line(capsys)
        assert line.startswith(f"slimpack: error: '{where}' ") and needle in line, line
        assert line.endswith(("export it again with `slimpack export`", "copy it again", "(JSONDecodeError)",
                              "(UnicodeDecodeError)", "not an object)")), line  # fmt: skip
    with pytest.raises(SlimpackError, match="export.json") as err:  # the benchmarks' way in (bench sweep, memory)
        open_engine(art, 1)
    assert "\n" not in str(err.value)


def test_deepsparse_graphs_must_lie_inside_the_artifact(tmp_path: Path) -> None:
    """The graphs the DeepSparse worker compiles are named by the artifact's deepsparse.json: inside it too."""
    from export.artifact import Artifact
    from runtime_bench.engines.deepsparse_client import check_graphs

    art = tmp_path / "ds"
    art.mkdir()
    (art / "export.json").write_text(json.dumps({"format": "deepsparse", "engine": "deepsparse"}))
    for graph, message in (("../prefill.onnx", "a file outside"), ("/etc/hostname", "a file outside"),
                           (None, "not a path")):  # fmt: skip
        config = {"prefill": "prefill.onnx", "prompt": graph, "decode": "decode.onnx"}
        (art / "deepsparse.json").write_text(json.dumps(config))
        with pytest.raises(SlimpackError, match=message) as err:
            check_graphs(Artifact.open(art))
        assert "deepsparse.json" in str(err.value) and "\n" not in str(err.value)
    (art / "deepsparse.json").write_text("[1, 2")
    with pytest.raises(SlimpackError, match="cannot be read"):
        check_graphs(Artifact.open(art))
