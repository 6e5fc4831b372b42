"""Export formats and verify on a tiny random Llama: zeros kept, parity in each runtime, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from export.api import ExportConfig, export_model
from prune.models import load_model
from runtime_bench.cli import main
from runtime_bench.engines.base import ENGINES, Artifact


def deepsparse_available() -> bool:
    from prune.errors import SlimpackError
    from runtime_bench.engines.deepsparse_client import deepsparse_python

    try:
        deepsparse_python()
    except SlimpackError:
        return False
    return True


SOURCES = {"onnx": "p50", "semi24": "p24", "onnx-int4": "q4", "gptq": "q4", "deepsparse": "p50"}
EVAL = ["--seqlen", "64", "--windows", "4", "--tokens", "12", "--prompt", "8"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> dict[str, Path]:
    """A 2:4 model, a 50 % unstructured model, and a 4-bit act-order GPTQ checkpoint of the 2:4 one."""
    root = tmp_path_factory.mktemp("export")
    calib = ["--nsamples", "4", "--seqlen", "64"]
    p24, p50, q4 = root / "p24", root / "p50", root / "q4"
    source = ["--model", str(tiny_dir)]
    assert main(["-q", "prune", *source, "--method", "magnitude", "--pattern", "2:4", "--out", str(p24), *calib]) == 0
    assert main(["-q", "prune", *source, "--method", "wanda", "--sparsity", "0.5", "--out", str(p50), *calib]) == 0
    quantize = ["-q", "quantize", str(p24), "--bits", "4", "--group-size", "32", "--act-order"]
    assert main([*quantize, "--out", str(q4), *calib]) == 0
    return {"dense": tiny_dir, "p24": p24, "p50": p50, "q4": q4, "root": root}


@pytest.fixture(scope="module")
def artifacts(models: dict[str, Path]) -> dict[str, Path]:
    out = {}
    for fmt, source in SOURCES.items():
        out[fmt] = models["root"] / f"artifact-{fmt}"
        export_model(ExportConfig(str(models[source]), fmt, out[fmt]))
    return out


@pytest.mark.parametrize("fmt", list(SOURCES))
def test_zeros_counted_in_every_format(artifacts: dict[str, Path], models: dict[str, Path], fmt: str) -> None:
    zeros = Artifact.open(artifacts[fmt]).record.zeros
    assert zeros is not None
    source = load_model(models[SOURCES[fmt]]).model
    expected = sum(int((lin.weight == 0).sum()) for n, lin in source.named_modules() if n.endswith("_proj"))
    assert zeros.source_zeros == expected > 0.45 * zeros.numel
    assert zeros.exported_zeros >= zeros.source_zeros and not zeros.modules_losing_zeros
    assert zeros.modules == 14 and not zeros.modules_missing


@pytest.mark.parametrize("fmt", list(SOURCES))
def test_verify_passes_for_every_format(
    artifacts: dict[str, Path], models: dict[str, Path], fmt: str, tmp_path: Path
) -> None:
    if fmt == "deepsparse" and not deepsparse_available():
        pytest.skip("needs .venv-deepsparse (scripts/setup-deepsparse.sh)")
    report_path = tmp_path / "verify.json"
    rc = main(
        ["verify", str(artifacts[fmt]), "--reference", str(models[SOURCES[fmt]]), "--json", str(report_path), *EVAL]
    )
    report = json.loads(report_path.read_text())
    assert rc == 0 and report["passed"]
    assert report["greedy"]["equal"] == 12
    assert report["perplexity"]["relative_diff"] < 1e-3


def test_verify_runs_deepsparse_decode_only_and_names_a_bad_engine_option(
    artifacts: dict[str, Path], models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """One compiled graph (every window through decode.onnx, token by token) verifies like the default."""
    if not deepsparse_available():
        pytest.skip("needs .venv-deepsparse (scripts/setup-deepsparse.sh)")
    base = ["-q", "verify", str(artifacts["deepsparse"]), "--reference", str(models["p50"]), *EVAL]
    report_path = tmp_path / "verify.json"
    assert main([*base, "--engine-option", "deepsparse.kv_cache=decode-only", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["greedy"]["equal"] == 12 and report["perplexity"]["relative_diff"] < 1e-3
    assert report["engine_options"] == {"kv_cache": "decode-only"}
    capsys.readouterr()
    assert main([*base, "--engine-option", "deepsparse.colour=red"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "colour" in err[0] and "deepsparse" in err[0]


def test_verify_fails_on_corrupted_onnx(artifacts: dict[str, Path], models: dict[str, Path], tmp_path: Path) -> None:
    """One weight matrix scaled by 3 in the ONNX file: verify must say FAILED and exit 1."""
    import onnx
    from onnx import numpy_helper

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in artifacts["onnx"].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    proto = onnx.load(str(broken / "model.onnx"))
    weights = Artifact.open(broken).details["weights"]
    target = weights["model.layers.0.mlp.down_proj"]
    for i, tensor in enumerate(proto.graph.initializer):
        if tensor.name == target:
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 3, target))
    onnx.save(proto, str(broken / "model.onnx"))
    assert main(["-q", "verify", str(broken), "--reference", str(models["p50"]), *EVAL]) == 1


def test_a_shared_reference_run_gives_the_same_report(artifacts: dict[str, Path], models: dict[str, Path]) -> None:
    """`slimpack run` computes the reference side once per source model; the report must not change."""
    from prune.spec import EvalSpec
    from runtime_bench.verify import ReferenceRun, VerifyConfig, VerifyReport, verify

    config = VerifyConfig(artifacts["onnx"], str(models["p50"]), EvalSpec(seqlen=64, windows=4), tokens=12, prompt=8)
    shared = ReferenceRun.compute(config)
    alone, first, second = (verify(config).to_dict(), verify(config, shared).to_dict(),
                            verify(config, shared).to_dict())  # fmt: skip
    for report in (alone, first, second):  # everything but the times
        report.pop("engine_load_seconds")
        for side in ("artifact", "reference"):
            report["perplexity"][side].pop("seconds")
    assert alone == first == second and alone["passed"]
    assert VerifyReport.from_dict(verify(config, shared).to_dict()).brief().passed


def test_verify_fails_on_truncated_artifact(
    artifacts: dict[str, Path], models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    broken = tmp_path / "truncated"
    broken.mkdir()
    for f in artifacts["onnx"].iterdir():
        data = f.read_bytes()
        (broken / f.name).write_bytes(data[: len(data) // 2] if f.name == "model.onnx" else data)
    assert main(["-q", "verify", str(broken), "--reference", str(models["p50"]), *EVAL]) == 1  # fails its sha256
    assert "changed: model.onnx" in capsys.readouterr().out
    manifest = json.loads((broken / "export.json").read_text())
    manifest.pop("sha256")  # no sha256: not verified, a failure (issue #26), whatever the runtime would say
    (broken / "export.json").write_text(json.dumps(manifest))
    assert main(["-q", "verify", str(broken), "--reference", str(models["p50"]), *EVAL]) == 1
    assert "not verified: export.json records no sha256" in capsys.readouterr().out
    args = ["-q", "eval", str(broken), "--tasks", "boolq", "--task-data", "local", "--limit", "2"]
    assert main(args) == 2 and "--trust-unverified" in capsys.readouterr().err  # refused unless trusted
    assert main([*args, "--trust-unverified"]) == 2  # trusted, the runtime is the judge: one line
    err = capsys.readouterr().err.strip().splitlines()
    assert "onnxruntime cannot load" in err[-1], err


def test_onnx_int4_equals_dequantized_model(artifacts: dict[str, Path], models: dict[str, Path]) -> None:
    engine = ENGINES.build("onnxruntime", {})
    engine.load(Artifact.open(artifacts["onnx-int4"]))
    ids = np.random.RandomState(0).randint(0, 200, (2, 40)).astype(np.int64)
    ours = engine.logits(ids)
    with torch.no_grad():
        reference = load_model(models["q4"]).model(input_ids=torch.from_numpy(ids)).logits.numpy()
    assert np.abs(ours - reference).max() <= 1e-4 * np.abs(reference).max()
    import onnx

    proto = onnx.load(str(artifacts["onnx-int4"] / "model.onnx"))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMulNBits") == 14  # every quantized linear; act-order adds one Gather per linear
    assert not any(t.name.endswith(".weight_t") and "_proj" in t.name for t in proto.graph.initializer)


def test_onnx_kv_cache_decode_matches_full_forward(artifacts: dict[str, Path]) -> None:
    """Prefill + 5 cached steps give the logits of one full forward pass, batch 2."""
    engine = ENGINES.build("onnxruntime", {})
    engine.load(Artifact.open(artifacts["onnx"]))
    ids = np.random.RandomState(1).randint(0, 200, (2, 20)).astype(np.int64)
    full = engine.logits(ids)
    last, past = engine.prefill(ids[:, :15])
    steps = [last]
    for t in range(15, 20):
        last, past = engine.step(ids[:, t : t + 1], past)
        steps.append(last)
    assert np.abs(np.stack(steps[:-1], 1) - full[:, 14:19]).max() < 1e-4
    assert past[0].shape[2] == 20


def test_semi24_cpu_round_trip_is_bit_exact(artifacts: dict[str, Path], models: dict[str, Path]) -> None:
    from export.semi24 import compress, decompress, load_semi24

    source = load_model(models["p24"]).model
    loaded = load_semi24(artifacts["semi24"])
    for (name, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert b.dtype == torch.float16
        assert torch.equal(a.half(), b), name
    w = source.model.layers[1].mlp.down_proj.weight.detach().half()
    packed, meta = compress(w)
    assert packed.shape == (w.shape[0], w.shape[1] // 2) and meta.dtype == torch.int16
    assert torch.equal(decompress(packed, meta), w)


def _assert_refused(argv: list[str], capsys: pytest.CaptureFixture, needle: str, out: Path) -> None:
    siblings = set(out.parent.iterdir()) if out.parent.exists() else set()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    after = set(out.parent.iterdir()) if out.parent.exists() else set()
    assert after == siblings  # nothing half-written (no temporary directory left behind)


def test_semi24_refuses_a_model_that_is_not_2of4(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "semi"
    _assert_refused(["export", str(models["p50"]), "--format", "semi24", "--out", str(out)], capsys, "is not 2:4", out)
    assert not out.exists()


def test_onnx_int4_refuses_an_unquantized_model(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "int4"
    _assert_refused(
        ["export", str(models["p24"]), "--format", "onnx-int4", "--out", str(out)],
        capsys,
        "needs a GPTQ checkpoint",
        out,
    )
    assert not out.exists()


def test_existing_output_needs_overwrite(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _assert_refused(["export", str(models["p24"]), "--format", "semi24", "--out", str(out)], capsys, "--overwrite", out)
    assert (out / "keep.txt").read_text() == "mine"


def test_unknown_format_is_refused(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "x"
    _assert_refused(
        ["export", str(models["p24"]), "--format", "tflite", "--out", str(out)], capsys, "unknown export format", out
    )


def test_export_does_not_modify_its_input(models: dict[str, Path], tmp_path: Path) -> None:
    from prune.io import hash_files

    before = hash_files(models["q4"])
    export_model(ExportConfig(str(models["q4"]), "onnx-int4", tmp_path / "again"))
    assert hash_files(models["q4"]) == before


def test_deepsparse_environment_missing_is_one_line(
    artifacts: dict[str, Path],
    models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLIMPACK_DEEPSPARSE_PYTHON", str(tmp_path / "no-such-venv" / "bin" / "python"))
    report = tmp_path / "verify.json"
    argv = [
        "-q",
        "verify",
        str(artifacts["deepsparse"]),
        "--reference",
        str(models["p50"]),
        "--json",
        str(report),
        *EVAL,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DeepSparse environment not found" in err[0] and "setup-deepsparse.sh" in err[0]
    assert not report.exists()


def test_onnxruntime_reads_large_fp32_weights_in_place(artifacts: dict[str, Path], tmp_path: Path) -> None:
    """``weights``: ``auto`` maps (no prepacked copy) an fp32 export whose data file holds ≥ 1 GiB, never
    MatMulNBits (whose packed layout is its kernel's); a mapped session computes the packed one's logits."""
    import onnx

    from prune.errors import SlimpackError
    from runtime_bench.engines.ort import maps_weights

    fake = tmp_path / "fake" / "model.onnx"
    fake.parent.mkdir()
    with open(fake.with_name("model.onnx.data"), "wb") as f:
        f.truncate(2**30)  # sparse: its size is all the rule reads
    assert maps_weights(fake, "auto", fp32=True) and not maps_weights(fake, "auto", fp32=False)
    assert maps_weights(fake, "mapped", fp32=False) and not maps_weights(fake, "packed", fp32=True)
    with open(fake.with_name("model.onnx.data"), "r+b") as f:
        f.truncate(2**30 - 1)
    assert not maps_weights(fake, "auto", fp32=True)
    ext = tmp_path / "ext" / "model.onnx"
    ext.parent.mkdir()
    onnx.save_model(onnx.load(str(artifacts["onnx"] / "model.onnx")), str(ext), save_as_external_data=True,
                    location="model.onnx.data")  # tensors over 1 KiB: every weight  # fmt: skip
    ids = np.random.RandomState(2).randint(0, 200, (1, 16)).astype(np.int64)
    logits = {}
    for weights in ("packed", "mapped"):
        engine = ENGINES.build("onnxruntime", {"weights": weights})
        engine.load_file(ext, fp32=True)
        logits[weights] = engine.logits(ids)
    assert np.abs(logits["packed"] - logits["mapped"]).max() < 1e-4
    with pytest.raises(SlimpackError, match="onnxruntime.weights=mapped"):
        ENGINES.build("onnxruntime", {"weights": "mmap"})
