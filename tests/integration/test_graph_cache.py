"""Graph templates (`export.graph_cache`): a graph traced for one model, filled with another model's weights,
gives the very file a direct export of that model gives — dense, pruned, structured, int4, three architectures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from export.api import ExportConfig, export_model
from export.artifact import ExportRecord
from export.graph_cache import MAX_CONSTANT, bind
from runtime_bench.cli import main
from tests.conftest import save_tiny

CALIB = ["--nsamples", "4", "--seqlen", "64"]


def save_trained_like(directory: Path, tokenizer, arch: str = "llama", seed: int = 0) -> Path:  # noqa: ANN001
    """Norm weights and biases that differ from each other, as trained ones do. (A fresh model's are all ones
    and zeros: the exporter stores identical tensors once, and such a graph is not cached.)"""
    return save_tiny(directory, tokenizer, arch, seed, distinct=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:  # noqa: ANN001
    return save_trained_like(tmp_path_factory.mktemp("graph") / "base", tokenizer)


def export(model: Path, out: Path, cache: Path | None, fmt: str = "onnx") -> ExportRecord:
    return export_model(ExportConfig(str(model), fmt, out, graph_cache=cache))


def same_file(a: Path, b: Path) -> bool:
    return (a / "model.onnx").read_bytes() == (b / "model.onnx").read_bytes()


@pytest.mark.parametrize(
    "arch", ["llama", pytest.param("qwen2", marks=pytest.mark.slow), pytest.param("mistral", marks=pytest.mark.slow)]
)
def test_filled_template_equals_direct_export(arch: str, tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    first = save_trained_like(tmp_path / "first", tokenizer, arch, seed=0)
    other = save_trained_like(tmp_path / "other", tokenizer, arch, seed=1)
    cache = tmp_path / "cache"
    direct = export(other, tmp_path / "direct", None)
    traced = export(first, tmp_path / "traced", cache)
    assert len(list(cache.glob("*.onnx"))) == 1  # the template: the graph without its weights
    weights = (first / "model.safetensors").stat().st_size
    template_bytes = sum(p.stat().st_size for p in cache.iterdir())
    assert template_bytes < (tmp_path / "traced" / "model.onnx").stat().st_size - 0.95 * weights
    filled = export(other, tmp_path / "filled", cache)
    assert same_file(tmp_path / "direct", tmp_path / "filled")
    assert not same_file(tmp_path / "direct", tmp_path / "traced")  # other weights, same graph
    assert filled.details["graph"] == traced.details["graph"] == direct.details["graph"]
    assert filled.details["weights"] == direct.details["weights"]
    assert filled.details["tied_embedding_copies"] == direct.details["tied_embedding_copies"]


def test_pruned_int4_and_structured_models_reuse_the_graph_exactly(base: Path, tmp_path: Path) -> None:
    p50, q4, slim = tmp_path / "p50", tmp_path / "q4", tmp_path / "slim"
    src = ["--model", str(base)]
    assert main(["-q", "prune", *src, "--method", "wanda", "--sparsity", "0.5", "--out", str(p50), *CALIB]) == 0
    assert main(["-q", "quantize", str(p50), "--bits", "4", "--group-size", "32", "--out", str(q4), *CALIB]) == 0
    assert main(["-q", "prune", *src, "--structured", "--sparsity", "0.4", "--out", str(slim), *CALIB]) == 0
    cache = tmp_path / "cache"
    export(base, tmp_path / "dense", cache)
    for name, model, fmt in (("p50", p50, "onnx"), ("q4", q4, "onnx-int4")):
        filled = export(model, tmp_path / f"{name}-filled", cache, fmt)
        export(model, tmp_path / f"{name}-direct", None, fmt)
        assert same_file(tmp_path / f"{name}-filled", tmp_path / f"{name}-direct"), name
        assert filled.zeros is not None and filled.zeros.exported_zeros >= filled.zeros.source_zeros > 0
    assert len(list(cache.glob("*.onnx"))) == 1  # dense, pruned and dequantized GPTQ: one graph
    export(slim, tmp_path / "slim-traced", cache)  # other layer shapes: another graph
    assert len(list(cache.glob("*.onnx"))) == 2
    export(slim, tmp_path / "slim-filled", cache)
    assert same_file(tmp_path / "slim-traced", tmp_path / "slim-filled")
    rc = main(["verify", str(tmp_path / "q4-filled"), "--reference", str(q4), "--seqlen", "64", "--windows", "2"])
    assert rc == 0


def test_a_damaged_template_is_ignored_and_replaced(base: Path, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    cache = tmp_path / "cache"
    assert (
        main(
            [
                "-q",
                "export",
                str(base),
                "--format",
                "onnx",
                "--out",
                str(tmp_path / "first"),
                "--graph-cache",
                str(cache),
            ]
        )
        == 0
    )
    (template,) = cache.glob("*.onnx")
    template.write_bytes(template.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="export.graph_cache"):
        export(base, tmp_path / "second", cache)
    assert "ignoring unreadable graph template" in caplog.text
    assert same_file(tmp_path / "first", tmp_path / "second")
    manifest = json.loads((tmp_path / "second" / "export.json").read_text())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="export.onnx_kv"):
        export(base, tmp_path / "third", cache)  # the replaced template is read again
    assert "reusing the exported graph" in caplog.text and manifest["graph"] == template.stem


def test_nothing_is_cached_when_told_not_to_or_when_equal_tensors_share_an_initializer(
    base: Path, tiny_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    args = ["-q", "export", "--format", "onnx", "--graph-cache", str(cache)]
    assert main([*args, str(base), "--out", str(tmp_path / "a"), "--no-graph-cache"]) == 0
    # a fresh model's norms are all ones: the exporter stores them once, which no template can express
    assert main([*args, str(tiny_dir), "--out", str(tmp_path / "b")]) == 0
    assert not cache.exists() or not list(cache.glob("*.onnx"))


def _proto(extra_initializer: int = 0, constant: int = 0):  # noqa: ANN202
    from onnx import TensorProto, helper, numpy_helper

    weight = np.arange(12, dtype=np.float32).reshape(3, 4)
    inits = [numpy_helper.from_array(weight.T.copy(), "lin.weight_t")]
    if extra_initializer:
        inits.append(numpy_helper.from_array(np.ones(extra_initializer, np.float32), "folded"))
    nodes = [helper.make_node("MatMul", ["x", "lin.weight_t"], ["y"])]
    if constant:
        value = numpy_helper.from_array(np.ones(constant, np.float32), "c")
        nodes.append(helper.make_node("Constant", [], ["c"], value=value))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    tensors = {"lin.weight": torch.from_numpy(weight)}
    return helper.make_model(graph), tensors


def transposed(name: str) -> str | None:
    return name[: -len("_t")] if name.endswith(".weight_t") else None


@pytest.mark.parametrize(
    ("extra", "constant", "bindable"),
    [(0, 0, True), (MAX_CONSTANT, MAX_CONSTANT, True), (MAX_CONSTANT + 1, 0, False), (0, MAX_CONSTANT + 1, False)],
)
def test_a_graph_with_large_unbound_constants_is_never_cached(extra: int, constant: int, bindable: bool) -> None:
    proto, tensors = _proto(extra, constant)
    bindings = bind(proto, tensors, tensors, transposed)
    assert (bindings is not None) == bindable
    if bindable:
        assert bindings == {"lin.weight_t": ("lin.weight", True)}


def test_a_tensor_without_an_initializer_or_with_other_values_is_never_cached() -> None:
    proto, tensors = _proto()
    unused = {**tensors, "unused.weight": torch.ones(2)}
    assert bind(proto, unused, unused, transposed) is None  # a parameter the graph does not hold as itself
    assert bind(proto, unused, tensors, transposed) is not None  # an unused buffer: fine
    other = {"lin.weight": tensors["lin.weight"] + 1}
    assert bind(proto, other, other, transposed) is None
