"""The DeepSparse export and engine on a tiny random Llama with pruned weights.

Without DeepSparse: the graphs (opset/IR readable by onnx 1.14, names and static shapes), onnxruntime's logits
for them vs torch, zeros of every exported weight vs torch, and the one-line error when the environment is
missing. With ``.venv-deepsparse`` (``bash scripts/setup-deepsparse.sh``; marker ``deepsparse``, skipped
without it): DeepSparse's logits vs torch, greedy generation vs torch token for token (internal and external
KV cache, chunked prompts, the cache's capacity), and the two graph constructs that make DeepSparse abort.

Tolerance: DeepSparse computes in fp32 like torch; measured max |Δlogit| ≤ 3.6e-7 on these tiny models
(|logits| ≤ 0.7, i.e. ≤ 6e-7 relative) and, over 256 tokens of SmolLM2-135M, 2.4e-4 dense (5.7e-6 of
max |logit| 42), 8.6e-4 at 50 % (SparseGPT; 2.1e-5) and 3.1e-4 at 90 % (1.4e-5), argmax equal everywhere.
Asserted: max |Δ| ≤ 1e-4 · max |logit|.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from export.artifact import EXPORT_MANIFEST, Artifact
from export.deepsparse import (
    DECODE_FILE,
    IR_VERSION,
    OPSET,
    PREFILL_FILE,
    PROMPT_FILE,
    count_zeros,
    export_deepsparse,
)
from prune.architecture import adapter_for
from prune.errors import SlimpackError
from prune.models import tiny_llama
from runtime_bench.engines.base import ENGINES
from runtime_bench.engines.deepsparse_client import DeepSparseEngine, deepsparse_python

PREFILL, CACHE, PROMPT = 16, 64, 8
RTOL = 1e-4


def have_deepsparse() -> bool:
    try:
        deepsparse_python()
        return True
    except SlimpackError:
        return False


SKIP_WITHOUT_DEEPSPARSE = pytest.mark.skipif(
    not have_deepsparse(), reason="no .venv-deepsparse (bash scripts/setup-deepsparse.sh)"
)


def needs_deepsparse(test):  # noqa: ANN001, ANN201
    """Marker ``deepsparse``; skipped without ``.venv-deepsparse``."""
    return pytest.mark.deepsparse(SKIP_WITHOUT_DEEPSPARSE(test))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """Two layers, GQA (4 query / 2 KV heads); every linear magnitude-pruned to 50 %, one row fully zero."""
    torch.set_num_threads(1)
    m = tiny_llama(seed=3, num_layers=2)
    with torch.no_grad():
        for lin in adapter_for(m).named_linears(m).values():
            w = lin.weight
            w[w.abs() <= w.abs().flatten().kthvalue(w.numel() // 2).values] = 0
            w[0] = 0
    return m


@pytest.fixture(scope="module")
def artifact(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deepsparse")
    details = export_deepsparse(model, out, prefill_len=PREFILL, cache_len=CACHE, prompt_len=PROMPT)
    (out / EXPORT_MANIFEST).write_text(json.dumps({"format": "deepsparse", "engine": "deepsparse", **details}))
    return out


def torch_logits(model: torch.nn.Module, ids: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(ids)).logits.numpy()


def torch_greedy(model: torch.nn.Module, ids: np.ndarray, new: int) -> np.ndarray:
    """Greedy tokens by full forward passes (no cache, no generation config)."""
    seq = torch.from_numpy(ids)
    with torch.inference_mode():
        for _ in range(new):
            seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[0, ids.shape[1] :].numpy()


def assert_close(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape and got.dtype == np.float32
    diff = float(np.abs(got - ref).max())
    assert diff <= RTOL * float(np.abs(ref).max()), diff


def ids_of(length: int, seed: int = 0, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, length)).astype(np.int64)


# --- without DeepSparse --------------------------------------------------------------------------


def test_graphs_layout(artifact: Path) -> None:
    import onnx

    layers, kv_heads, head_dim = 2, 2, 16
    past = [f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    present = [f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    expected = {
        PREFILL_FILE: (
            {"input_ids": [1, PREFILL]},
            {"logits": [1, PREFILL, 256], **{n: [1, kv_heads, PREFILL, head_dim] for n in present}},
        ),
        PROMPT_FILE: (
            {"input_ids": [1, PROMPT], "attention_mask": [1, CACHE], "positions": [1, PROMPT]}
            | {n: [1, kv_heads, CACHE - PROMPT, head_dim] for n in past},
            {"logits": [1, PROMPT, 256], **{n: [1, kv_heads, CACHE, head_dim] for n in present}},
        ),
        DECODE_FILE: (
            {"input_ids": [1, 1], "attention_mask": [1, CACHE], "positions": [1, 1]}
            | {n: [1, kv_heads, CACHE - 1, head_dim] for n in past},
            {"logits": [1, 1, 256], **{n: [1, kv_heads, CACHE, head_dim] for n in present}},
        ),
    }

    def shapes(values: list) -> dict[str, list[int]]:
        return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

    for file, (inputs, outputs) in expected.items():
        proto = onnx.load(str(artifact / file), load_external_data=False)
        assert proto.ir_version == IR_VERSION <= 9
        assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)] and OPSET <= 18
        assert shapes(proto.graph.input) == inputs
        assert shapes(proto.graph.output) == outputs
        ops = {n.op_type for n in proto.graph.node}
        assert "Identity" not in ops and not ops & {"Where", "Expand", "Tile"}
        for node in proto.graph.node:  # DeepSparse aborts on a Concat that lists one tensor twice
            assert node.op_type != "Concat" or len(set(node.input)) == len(node.input)
        matmul_weights = {n.input[1] for n in proto.graph.node if n.op_type == "MatMul" and n.input[1].endswith("_t")}
        assert len(matmul_weights) == 7 * layers + 1  # every linear + lm_head: MatMul with a constant [in, out]


def test_exported_zeros_equal_torch(model: torch.nn.Module, artifact: Path) -> None:
    manifest = json.loads((artifact / EXPORT_MANIFEST).read_text())
    counts = count_zeros(artifact, manifest["weights"])
    linears = adapter_for(model).named_linears(model)
    assert set(counts) == set(linears)
    for name, lin in linears.items():
        assert counts[name] == {"zeros": int((lin.weight == 0).sum()), "numel": lin.weight.numel()}, name
        assert counts[name]["zeros"] >= lin.weight.numel() // 2


def test_onnxruntime_runs_the_graphs_like_torch(model: torch.nn.Module, artifact: Path) -> None:
    """The graphs compute the HF model (checked without DeepSparse): prefill, then one decode step."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    ids = ids_of(PREFILL)
    ref = torch_logits(model, ids)
    prefill = ort.InferenceSession(str(artifact / PREFILL_FILE), options)
    logits, *present = prefill.run(None, {"input_ids": ids})
    assert_close(logits, ref)
    n = 10  # the first n tokens as the cache, token n decoded
    decode = ort.InferenceSession(str(artifact / DECODE_FILE), options)
    mask = np.zeros((1, CACHE), np.int64)
    mask[0, CACHE - 1 - n :] = 1
    feed = {"input_ids": ids[:, n : n + 1], "positions": np.array([[n]], np.int64), "attention_mask": mask}
    names = [i.name for i in decode.get_inputs() if i.name.startswith("past_key_values.")]
    for name, p in zip(names, present):
        past = np.zeros((1, p.shape[1], CACHE - 1, p.shape[3]), np.float32)
        past[:, :, CACHE - 1 - n :] = p[:, :, :n]
        feed[name] = past
    assert_close(decode.run(["logits"], feed)[0][:, 0], ref[:, n])


@pytest.fixture(scope="module")
def tied(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A tiny Llama whose lm_head is its embedding (as SmolLM2's), exported."""
    m = tiny_llama(seed=5, num_layers=1)
    m.lm_head.weight = m.model.embed_tokens.weight
    m.config.tie_word_embeddings = True
    out = tmp_path_factory.mktemp("tied")
    details = export_deepsparse(m, out, prefill_len=PREFILL, cache_len=CACHE, prompt_len=PROMPT)
    (out / EXPORT_MANIFEST).write_text(json.dumps({"format": "deepsparse", "engine": "deepsparse", **details}))
    return m, out


def test_tied_lm_head_is_the_embedding_stored_once(tied: tuple[torch.nn.Module, Path]) -> None:
    import onnx
    import onnxruntime as ort

    model, out = tied
    proto = onnx.load(str(out / PREFILL_FILE), load_external_data=False)
    names = {t.name for t in proto.graph.initializer}
    assert "lm_head.weight_t" not in names and "model.embed_tokens.weight" in names
    ids = ids_of(PREFILL, seed=2)
    logits = ort.InferenceSession(str(out / PREFILL_FILE)).run(["logits"], {"input_ids": ids})[0]
    assert_close(logits, torch_logits(model, ids))


def test_missing_environment_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere" / "bin" / "python"
    monkeypatch.setenv("SLIMPACK_DEEPSPARSE_PYTHON", str(missing))
    (tmp_path / EXPORT_MANIFEST).write_text(json.dumps({"format": "deepsparse", "engine": "deepsparse"}))
    engine = ENGINES.get("deepsparse")()
    with pytest.raises(SlimpackError) as err:
        engine.load(Artifact.open(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        f"DeepSparse environment not found at {missing}; create it with `bash scripts/setup-deepsparse.sh` "
        "or set SLIMPACK_DEEPSPARSE_PYTHON"
    )


def test_export_rejects_unsafe_prompt_chunks(model: torch.nn.Module, tmp_path: Path) -> None:
    with pytest.raises(SlimpackError, match="multiple of 4"):
        export_deepsparse(model, tmp_path, prefill_len=16, cache_len=64, prompt_len=6)
    with pytest.raises(SlimpackError, match="cache_len / 4"):
        export_deepsparse(model, tmp_path, prefill_len=16, cache_len=64, prompt_len=32)


# --- with DeepSparse ----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["internal", "external", "decode-only"])
def engine(request: pytest.FixtureRequest, artifact: Path):  # noqa: ANN201
    eng = DeepSparseEngine(threads=1, kv_cache=request.param)
    eng.load(Artifact.open(artifact))
    yield eng
    eng.close()


@needs_deepsparse
@pytest.mark.parametrize("length", [1, 9, PREFILL, 40])
def test_deepsparse_logits_equal_torch(model: torch.nn.Module, engine: DeepSparseEngine, length: int) -> None:
    ids = ids_of(length, seed=length, batch=2)  # 40 > prefill_len: prompt chunks / decode steps
    assert_close(engine.logits(ids), torch_logits(model, ids))


@needs_deepsparse
@pytest.mark.parametrize("prompt,new", [(12, 20), (PROMPT, 10), (1, 24), (PREFILL + 5, 12)])
def test_deepsparse_generate_equals_torch_greedy(
    model: torch.nn.Module, engine: DeepSparseEngine, prompt: int, new: int
) -> None:
    ids = ids_of(prompt, seed=100 + prompt)
    tokens = engine.generate(ids, new)
    assert tokens.dtype == np.int64 and tokens.shape == (new,)
    np.testing.assert_array_equal(tokens, torch_greedy(model, ids, new))
    assert len(engine.last["decode_s"]) == new - 1


@needs_deepsparse
def test_deepsparse_cache_capacity(model: torch.nn.Module, engine: DeepSparseEngine) -> None:
    """The longest generation that fits the cache matches torch; one more token is a clear error."""
    ids = ids_of(5, seed=7)
    # entries before the last decode step ≤ cache_len - 1: internal cache: one prompt chunk (8 entries);
    # external and decode-only: the 5 prompt entries
    fits = (CACHE - PROMPT if engine.kv_cache == "internal" else CACHE - 5) + 1
    np.testing.assert_array_equal(engine.generate(ids, fits), torch_greedy(model, ids, fits))
    with pytest.raises(SlimpackError, match="do not fit the artifact's KV cache"):
        engine.generate(ids, fits + 1)
    assert engine.generate(ids, 2).shape == (2,)  # still serving


@needs_deepsparse
def test_deepsparse_reports_bad_requests(engine: DeepSparseEngine) -> None:
    with pytest.raises(SlimpackError, match="unknown op"):
        engine.request({"op": "nope"})
    with pytest.raises(SlimpackError, match="integer array"):
        engine.request({"op": "logits"}, np.zeros((1, 3), np.float32))
    assert engine.info["fraction_of_supported_ops"] and all(
        v == 1.0 for v in engine.info["fraction_of_supported_ops"].values()
    )
    assert engine.prefill_seconds(ids_of(PREFILL)) > 0
    if engine.kv_cache == "decode-only":  # one compiled graph: prompts went through decode.onnx
        assert list(engine.info["compile_s"]) == ["decode"] and engine.info["kv_cache"] == "decode-only"


@needs_deepsparse
def test_the_memory_probe_runs_decode_only_and_names_a_bad_option(artifact: Path) -> None:
    import sys

    probe = [sys.executable, "-m", "runtime_bench.memory", str(artifact), "--prompt", "4", "--tokens", "3",
             "--vocab", "200", "--threads", "1"]  # fmt: skip
    done = subprocess.run(
        [*probe, "--engine-option", "deepsparse.kv_cache=decode-only"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-500:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["worker_peak_rss_mib"] > 0 and figures["generate_seconds"] >= 0 and figures["tokens"] == 3
    bad = subprocess.run([*probe, "--engine-option", "kv_cache=decode-only"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --engine-option 'kv_cache=decode-only' is not ENGINE.KEY=VALUE, e.g. deepsparse.kv_cache=decode-only"
    ]


@needs_deepsparse
def test_deepsparse_tied_lm_head(tied: tuple[torch.nn.Module, Path]) -> None:
    model, out = tied
    engine = DeepSparseEngine(threads=1)
    engine.load(Artifact.open(out))
    try:
        ids = ids_of(PREFILL, seed=4)
        assert_close(engine.logits(ids), torch_logits(model, ids))
        np.testing.assert_array_equal(engine.generate(ids[:, :10], 12), torch_greedy(model, ids[:, :10], 12))
    finally:
        engine.close()


@needs_deepsparse
def test_deepsparse_abort_is_one_line(artifact: Path, tmp_path: Path) -> None:
    """A graph DeepSparse cannot compile kills the worker; load() reports its assertion in one line."""
    import shutil

    from onnx import TensorProto, helper, save

    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    value = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Transpose", ["x"], ["v"], perm=[0, 2, 1, 3]),
        helper.make_node("Identity", ["v"], ["present"]),
        helper.make_node("MatMul", ["p", "present"], ["y"]),
    ]
    inputs = [value("x", TensorProto.FLOAT, [1, 8, 2, 16]), value("p", TensorProto.FLOAT, [1, 2, 8, 8])]
    outputs = [value("y", TensorProto.FLOAT, [1, 2, 8, 16]), value("present", TensorProto.FLOAT, [1, 2, 8, 16])]
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs), opset_imports=[helper.make_opsetid("", 13)]
    )
    model.ir_version = IR_VERSION
    save(model, str(broken / PREFILL_FILE))
    engine = DeepSparseEngine(threads=1)
    with pytest.raises(SlimpackError) as err:
        engine.load(Artifact.open(broken))
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("DeepSparse worker exited (code ") and "map_utils.hpp:82" in str(err.value)
    assert engine.proc is None


def _aborts(tmp_path: Path, nodes: list, inputs: list, outputs: list) -> str:
    """Compile a graph in DeepSparse in a subprocess; its output when it aborts (else fail)."""
    from onnx import helper, save

    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    path = tmp_path / "g.onnx"
    save(model, str(path))
    code = f"from deepsparse import Engine; Engine({str(path)!r}, batch_size=1, num_cores=1); print('compiled')"
    run = subprocess.run([str(deepsparse_python()), "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "compiled" not in run.stdout, "DeepSparse accepted the graph"
    return run.stdout + run.stderr


@needs_deepsparse
@pytest.mark.parametrize("construct", ["identity_output_into_matmul", "concat_same_tensor_twice"])
def test_deepsparse_aborts_on_the_constructs_the_export_avoids(tmp_path: Path, construct: str) -> None:
    """Why the graphs look the way they do (see `export.deepsparse`): onnxruntime runs both of these."""
    from onnx import TensorProto, helper

    def value(name: str, shape: list[int]):  # noqa: ANN202
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    if construct == "identity_output_into_matmul":  # present = Identity(v); probs @ present
        nodes = [
            helper.make_node("Transpose", ["x"], ["v"], perm=[0, 2, 1, 3]),
            helper.make_node("Identity", ["v"], ["present"]),
            helper.make_node("MatMul", ["p", "present"], ["y"]),
        ]
        inputs = [value("x", [1, 8, 2, 16]), value("p", [1, 2, 8, 8])]
        outputs = [value("y", [1, 2, 8, 16]), value("present", [1, 2, 8, 16])]
        expect = "map_utils.hpp:82"
    else:  # repeat_kv as Concat(k, k, k)
        nodes = [
            helper.make_node("Concat", ["k", "k", "k"], ["kk"], axis=1),
            helper.make_node("MatMul", ["q", "kk"], ["y"]),
        ]
        inputs, outputs = [value("k", [1, 1, 8, 16]), value("q", [1, 3, 4, 8])], [value("y", [1, 3, 4, 16])]
        expect = "graph.cpp:925"
    out = _aborts(tmp_path, nodes, inputs, outputs)
    assert "Assertion at" in out and expect in out, out[-2000:]
