"""The streamed path (`prune.stream`): block by block from the shards, each finished block written — and the
same tensors, bit for bit, as the in-memory path for every method and allocator that streams."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prune.errors import SlimpackError
from prune.lazy import INDEX_FILE, LazyCheckpoint
from prune.manifest import Manifest
from prune.methods import METHODS
from prune.spec import StreamSpec
from runtime_bench.cli import main
from tests.conftest import save_tiny

FAST = ["--nsamples", "4", "--seqlen", "32", "--windows", "3"]


def save_sharded(directory: Path, tokenizer, arch: str = "llama", dtype: torch.dtype = torch.float32) -> Path:  # noqa: ANN001
    """A tiny model (norms and biases not all equal, as trained ones) saved in several shards with an index."""
    save_tiny(directory, tokenizer, arch, seed=3, distinct=True, dtype=dtype, max_shard_size="100KB")
    assert (directory / INDEX_FILE).is_file()
    return directory


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:  # noqa: ANN001
    return save_sharded(tmp_path_factory.mktemp("stream") / "model", tokenizer)


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


def run_both(tmp_path: Path, base: list[str], shard_mib: str) -> tuple[Path, Path]:
    """``base`` run in memory and streamed (``--shard-size shard_mib``): the two output directories."""
    memory, streamed = tmp_path / "memory", tmp_path / "streamed"
    assert main([*base, "--out", str(memory)]) == 0
    assert main([*base, "--out", str(streamed), "--stream", "--shard-size", shard_mib]) == 0
    return memory, streamed


def prune_both(model: Path, tmp_path: Path, *args: str) -> tuple[Path, Path]:
    return run_both(tmp_path, ["-q", "prune", "--model", str(model), *args, *FAST, "--eval"], "0.1")


def assert_same_tensors(memory: Path, streamed: Path) -> None:
    a, b = tensors(memory), tensors(streamed)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


def assert_same_model(memory: Path, streamed: Path) -> None:
    assert_same_tensors(memory, streamed)
    ma = json.loads((memory / "slimpack.json").read_text())
    mb = json.loads((streamed / "slimpack.json").read_text())
    assert ma["sparsity"] == mb["sparsity"] and ma["sparsity"]["overall"] > 0.3
    assert ma["evaluation"]["perplexity"] == mb["evaluation"]["perplexity"]  # the block-major evaluation, exactly


STREAMED_METHODS = [m for m in METHODS.names() if not METHODS.build(m, {}).needs_gradients]  # all but pruner-zero


@pytest.mark.parametrize("method", STREAMED_METHODS)
def test_streamed_prune_equals_in_memory_for_every_forward_method(method: str, sharded: Path, tmp_path: Path) -> None:
    memory, streamed = prune_both(sharded, tmp_path, "--method", method, "--sparsity", "0.5")
    assert_same_model(memory, streamed)
    assert len(list(streamed.glob("model-*-of-*.safetensors"))) > 1 and (streamed / INDEX_FILE).is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["--method", "wanda", "--allocation", "owl"],
        ["--method", "sparsegpt", "--allocation", "dlp", "--true-sequential"],
        ["--method", "magnitude", "--allocation", "log-increase"],
        ["--method", "sparsegpt", "--pattern", "2:4"],
    ],
    ids=["owl", "dlp-true-sequential", "log-increase", "2of4"],
)
def test_streamed_prune_equals_in_memory_for_allocators_and_patterns(
    args: list[str], sharded: Path, tmp_path: Path
) -> None:
    sparsity = [] if "--pattern" in args else ["--sparsity", "0.5"]
    assert_same_model(*prune_both(sharded, tmp_path, *args, *sparsity))


def test_qwen2_biases_stream_too(tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    model = save_sharded(tmp_path / "qwen2", tokenizer, "qwen2")
    assert_same_model(*prune_both(model, tmp_path, "--method", "sparsegpt", "--sparsity", "0.5"))


def test_a_bf16_model_streams_in_its_dtype_and_reloads(tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    from transformers import AutoModelForCausalLM

    model = save_sharded(tmp_path / "bf16", tokenizer, dtype=torch.bfloat16)
    out = tmp_path / "out"
    assert main(["-q", "prune", "--model", str(model), "--method", "wanda", "--sparsity", "0.5", *FAST,
                 "--stream", "--out", str(out)]) == 0  # fmt: skip
    stored = tensors(out)
    assert {t.dtype for t in stored.values()} == {torch.bfloat16}
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    q = reloaded.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(q, stored["model.layers.0.self_attn.q_proj.weight"]) and (q == 0).float().mean() >= 0.5
    source = tensors(model)
    assert torch.equal(stored["model.embed_tokens.weight"], source["model.embed_tokens.weight"])
    f32 = tmp_path / "f32"
    assert main(["-q", "prune", "--model", str(model), "--method", "magnitude", "--sparsity", "0.5", *FAST,
                 "--stream", "--dtype", "float32", "--out", str(f32)]) == 0  # fmt: skip
    assert {t.dtype for t in tensors(f32).values()} == {torch.float32}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "pruner-zero"], "needs whole-model gradients, which --stream cannot give"),
        (["--method", "wanda", "--allocation", "pi"], "allocation 'pi' runs the whole model"),
        (["--method", "wanda", "--dtype", "int8"], "--dtype 'int8' is not one of float32, bfloat16, float16"),
    ],
)
def test_what_cannot_stream_is_refused_in_one_line(
    args: list[str], message: str, sharded: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    rc = main(
        ["-q", "prune", "--model", str(sharded), *args, "--sparsity", "0.5", *FAST, "--stream", "--out", str(out)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and message in err[-1] and not out.exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_stream_options_refuse_resident(sharded: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["-q", "prune", "--model", str(sharded), "--dtype", "bfloat16", "--resident", *FAST,
               "--out", str(tmp_path / "o")])  # fmt: skip
    assert rc == 2 and "--dtype applies to the streamed store; drop it or drop --resident" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_store_is_chosen_from_the_model_size(
    sharded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No flag: a model whose fp32 copy fits and would save little by streaming is resident; one that would not
    fit the budget (``--max-memory``), or would save ≥ `STREAM_SAVING`, streams; a job that cannot stream is
    resident when it fits and refused in one line when it does not; ``--dtype`` implies the streamed store."""
    import prune.store as store

    footprint = store.ModelFootprint.of(sharded)
    assert footprint is not None and 0 < footprint.streamed <= footprint.resident  # 2 blocks: both held
    assert not store.choose_store(sharded).streamed
    held = store.process_bytes()
    small = held + footprint.resident - 2**20  # --max-memory counts the whole process
    assert store.choose_store(sharded, budget_bytes=small).streamed
    assert "more than" in store.choose_store(sharded, budget_bytes=small).reason
    assert not store.choose_store(sharded, budget_bytes=held + footprint.resident + 2**20).streamed
    monkeypatch.setattr(store, "STREAM_SAVING", footprint.resident - footprint.streamed)
    assert store.choose_store(sharded).streamed
    monkeypatch.setattr(store, "STREAM_SAVING", footprint.resident - footprint.streamed + 1)
    assert not store.choose_store(sharded).streamed
    assert not store.choose_store(sharded, "resident", budget_bytes=1).streamed  # forced: the user's call
    assert not store.choose_store(sharded, refusal="no way").streamed
    with pytest.raises(SlimpackError, match=r"\(--max-memory, less what the process holds\), and it cannot stream: no way"):
        store.choose_store(sharded, budget_bytes=1, refusal="no way")
    with pytest.raises(SlimpackError, match="^no way$"):
        store.choose_store(sharded, "stream", refusal="no way")
    # the CLI: where streaming saves enough, prune streams (the manifest records the streamed settings), and so
    # it does with --dtype; otherwise it is resident
    prune = ["-q", "prune", "--model", str(sharded), "--method", "magnitude", "--sparsity", "0.5", *FAST]
    monkeypatch.setattr(store, "STREAM_SAVING", 0)
    with caplog.at_level(logging.INFO, logger="prune.store"):
        assert main([*prune, "--out", str(tmp_path / "a")]) == 0
    assert Manifest.read(tmp_path / "a").stream == StreamSpec()
    assert any("store streamed: ≈ " in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(store, "STREAM_SAVING", 2**30)
    assert main([*prune, "--dtype", "float32", "--out", str(tmp_path / "b")]) == 0
    assert Manifest.read(tmp_path / "b").stream.dtype == "float32"
    assert main([*prune, "--out", str(tmp_path / "c")]) == 0
    assert Manifest.read(tmp_path / "c").stream is None


def test_a_missing_shard_or_tensor_is_named_before_any_work(
    sharded: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    from prune.errors import SlimpackError

    broken = tmp_path / "broken"
    shutil.copytree(sharded, broken)
    index = json.loads((broken / INDEX_FILE).read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    (broken / first).unlink()
    rc = main(["-q", "prune", "--model", str(broken), *FAST, "--stream", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and f"shard {first!r}" in err and "is missing" in err and not (tmp_path / "o").exists()
    lost = tmp_path / "lost"
    shutil.copytree(sharded, lost)
    index["weight_map"].pop("model.layers.1.mlp.up_proj.weight")
    (lost / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(SlimpackError, match="missing tensor 'model.layers.1.mlp.up_proj.weight'"):
        LazyCheckpoint.open(lost)


def test_a_run_over_its_memory_budget_is_refused_before_any_work(
    sharded: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    rc = main(["-q", "prune", "--model", str(sharded), *FAST, "--stream", "--max-memory", "1", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "--max-memory 1 MiB is too small" in err[-1] and "even one block needs" in err[-1]
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_the_budget_names_the_calibration_that_would_fit_or_spills_to_disk(tmp_path: Path) -> None:
    from prune.data import DataSpec
    from prune.errors import SlimpackError
    from prune.spec import StreamSpec
    from prune.stream import MemoryEstimate, Spill, check_budget
    from prune.walker import in_memory

    estimate = MemoryEstimate({"runtime": 2**30, "block": 2**30, "activations": 64 * 2**24}, per_sample=2**24)
    data = DataSpec(nsamples=64)
    assert check_budget(estimate, StreamSpec(max_memory_mib=3 * 1024), data) is in_memory  # 3 GiB: fits
    with pytest.raises(SlimpackError, match=r"--nsamples 32 \(of 64\) would fit, or --offload-dir DIR"):
        check_budget(estimate, StreamSpec(max_memory_mib=2.5 * 1024), data)
    offload = str(tmp_path / "acts")
    assert isinstance(check_budget(estimate, StreamSpec(max_memory_mib=2.5 * 1024, offload_dir=offload), data), Spill)
    assert check_budget(estimate, StreamSpec(max_memory_mib=3 * 1024, offload_dir=offload), data) is in_memory
    with pytest.raises(SlimpackError, match="even with the activations in"):
        check_budget(estimate, StreamSpec(max_memory_mib=1.5 * 1024, offload_dir=offload), data)


def test_the_time_estimate_counts_the_work_of_the_largest_block(
    sharded: Path, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The model's arithmetic on a tiny skeleton, by hand; and a streamed run says it before any work."""
    from prune.data import DataSpec
    from prune.stream import OBS_EFFICIENCY, MachineRates, estimate_time, open_streamed

    loaded = open_streamed(sharded)
    cfg = loaded.model.config  # hidden 64, FFN 128, 4 query / 2 KV heads of 16
    shapes = [
        (64, 64),
        (64, 32),
        (64, 32),
        (64, 64),
        (64, 128),
        (64, 128),
        (128, 64),
    ]  # (in, out): q k v o gate up down
    weights = sum(i * o for i, o in shapes)
    data, rates = DataSpec(nsamples=4, seqlen=32), MachineRates(flops=1e9, sort=1e6)
    tokens = 4 * 32
    one_pass = 2 * weights * tokens + 2 * tokens * 32 * cfg.hidden_size
    wanda = estimate_time(loaded, ("input_norm",), data, True, rates)
    assert wanda.blocks == cfg.num_hidden_layers and wanda.block_flops == 2 * one_pass and wanda.block_sorted == weights
    assert wanda.per_block == pytest.approx(2 * one_pass / 1e9 + weights / 1e6)
    hessian = sum(2 * i * i * tokens for i, _ in shapes)
    obs = sum(i**3 + 2 * i * i * o for i, o in shapes) / OBS_EFFICIENCY
    assert estimate_time(loaded, ("hessian",), data, True, rates).block_flops == 2 * one_pass + hessian + obs
    assert estimate_time(loaded, (), data, True, rates).block_flops == 0  # data-free: the sort only
    caplog.set_level("INFO", logger="prune.stream")
    assert main(["-q", "prune", "--model", str(sharded), "--method", "sparsegpt", "--sparsity", "0.5", *FAST,
                 "--stream", "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    said = [r.getMessage() for r in caplog.records if r.name == "prune.stream"]
    assert any(m.startswith("streamed run: estimated time ≈") and "GFLOP/s fp32 matmul" in m for m in said)
    assert any(m.startswith("streamed run: estimated peak memory ≈") for m in said)


def test_an_offload_dir_that_cannot_be_one_is_refused_before_any_work(
    sharded: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = tmp_path / "out"
    rc = main(["-q", "prune", "--model", str(sharded), *FAST, "--stream", "--offload-dir", str(blocker),
               "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--offload-dir" in err[0] and "is a file, not a directory" in err[0]
    assert not out.exists() and blocker.read_text() == ""


def test_spilled_activations_are_the_same_tensors_and_leave_no_file(tmp_path: Path) -> None:
    from prune.stream import Spill

    spill = Spill(tmp_path / "acts")
    hidden = torch.randn(2, 5, 8)
    kept = spill(hidden)
    assert torch.equal(kept, hidden) and kept.shape == hidden.shape
    assert list((tmp_path / "acts").iterdir()) == []  # unlinked at once: mapped, freed with the tensor


def test_a_streamed_prune_with_its_activations_on_disk_gives_the_same_model(sharded: Path, tmp_path: Path) -> None:
    args = ["--method", "sparsegpt", "--sparsity", "0.5", "--allocation", "dlp", "--true-sequential"]
    memory, streamed = prune_both(sharded, tmp_path, *args)
    offload = tmp_path / "offloaded"
    assert main(["-q", "prune", "--model", str(sharded), *args, *FAST, "--eval", "--stream", "--shard-size", "0.1",
                 "--offload-dir", str(tmp_path / "acts"), "--out", str(offload)]) == 0  # fmt: skip
    assert_same_model(streamed, offload)
    assert list((tmp_path / "acts").iterdir()) == []


def test_streamed_eval_equals_the_whole_model_forward(sharded: Path, tmp_path: Path) -> None:
    args = ["-q", "eval", str(sharded), "--seqlen", "32", "--windows", "5", "--eval-batch-size", "2"]
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    assert main([*args, "--stream", "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert a["perplexity"] == b["perplexity"] and a["tokens"] == b["tokens"] == 5 * 31


@pytest.mark.parametrize("model_type", ["mixtral", "qwen2_moe"])
def test_a_mixture_of_experts_model_is_named_as_such(model_type: str) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from prune.architecture import adapter_for
    from prune.errors import SlimpackError

    config = AutoConfig.for_model(model_type, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=64)  # fmt: skip
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(SlimpackError, match=rf"'{model_type}' is a mixture-of-experts model \(\d+ experts per block\)"):
        adapter_for(model)


STREAM_RECIPE = """
model: {model}
out: {out}
data: {{dataset: offline, nsamples: 4, seqlen: 32, seed: 0}}
eval: {{dataset: offline, seqlen: 32, windows: 3}}
{stream}
stages:
  prune: {{method: sparsegpt, sparsity: 0.5, allocation: dlp}}
{quantize}"""


def test_a_streamed_recipe_gives_the_in_memory_run_exactly(sharded: Path, tmp_path: Path) -> None:
    runs = {}
    for name, stream in (("memory", ""), ("streamed", "stream: {shard_mib: 0.1}")):
        recipe = tmp_path / f"{name}.yaml"
        quantize = (
            "  quantize: {bits: 4, group_size: 32}\n"
            "  export: {int4: {format: onnx-int4, source: quantize}}\n"
            "  verify: {windows: 2, prompt: 8, tokens: 3}\n"
        )
        recipe.write_text(STREAM_RECIPE.format(model=sharded, out=tmp_path / name, stream=stream, quantize=quantize))
        assert main(["-q", "run", str(recipe)]) == 0
        runs[name] = json.loads((tmp_path / name / "summary.json").read_text())["models"]
    memory, streamed = runs["memory"], runs["streamed"]
    assert memory["dense"]["perplexity"] == streamed["dense"]["perplexity"]
    for key in ("perplexity", "sparsity", "block_ratios", "importance"):
        assert memory["prune"][key] == streamed["prune"][key], key
    assert_same_model(tmp_path / "memory" / "prune", tmp_path / "streamed" / "prune")
    assert_same_checkpoint(tmp_path / "memory" / "quantize", tmp_path / "streamed" / "quantize")
    verified = {name: json.loads((tmp_path / name / "summary.json").read_text())["verify"]["int4"] for name in runs}
    assert verified["streamed"]["passed"] and verified["memory"]["passed"]
    assert verified["streamed"]["perplexity"] == verified["memory"]["perplexity"]  # the same int4 computation
    manifest = json.loads((tmp_path / "streamed" / "export" / "int4" / "export.json").read_text())
    assert manifest["streamed"] and (tmp_path / "streamed" / "export" / "int4" / "model.onnx.data").is_file()


def test_a_streamed_recipe_in_bf16_writes_its_gptq_checkpoint_in_fp16(sharded: Path, tmp_path: Path) -> None:
    """The recipe's one ``stream.dtype`` is the plain models'; the GPTQ format stores float16 regardless."""
    recipe = tmp_path / "bf16.yaml"
    quantize = "  quantize: {bits: 4, group_size: 32}\n"
    stream = "stream: {dtype: bfloat16, shard_mib: 0.1}"
    recipe.write_text(STREAM_RECIPE.format(model=sharded, out=tmp_path / "run", stream=stream, quantize=quantize))
    assert main(["-q", "run", str(recipe)]) == 0
    pruned, gptq = tensors(tmp_path / "run" / "prune"), tensors(tmp_path / "run" / "quantize")
    assert {t.dtype for t in pruned.values()} == {torch.bfloat16}
    assert {t.dtype for n, t in gptq.items() if t.is_floating_point()} == {torch.float16}
    assert "model.layers.0.self_attn.q_proj.qweight" in gptq


def without_seconds(manifest: dict) -> dict:
    return [{k: v for k, v in unit.items() if k != "seconds"} for unit in manifest["structure"]["units"]]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--method", "activation-l2", "--reconstruct", "--allocation", "uniform"],
        ["--reconstruct", "--keep-heads", "2"],
    ],
    ids=["slimgpt-log-increase", "activation-l2-ridge-uniform", "slimgpt-ridge-keep-heads"],
)
def test_streamed_structured_prune_equals_in_memory(args: list[str], sharded: Path, tmp_path: Path) -> None:
    """Heads and channels cut block by block from the shards: the same smaller model, record and perplexity."""
    memory, streamed = prune_both(sharded, tmp_path, "--structured", "--sparsity", "0.4", *args)
    assert_same_tensors(memory, streamed)
    ma, mb = (json.loads((d / "slimpack.json").read_text()) for d in (memory, streamed))
    assert without_seconds(ma) == without_seconds(mb) and ma["sparsity"] == mb["sparsity"]
    assert ma["structure"]["parameters"] == mb["structure"]["parameters"] and ma["sparsity"]["overall"] > 0.2
    assert ma["evaluation"]["perplexity"] == mb["evaluation"]["perplexity"]
    ca, cb = (json.loads((d / "config.json").read_text()) for d in (memory, streamed))
    assert ca["slimpack_structure"] == cb["slimpack_structure"]
    assert len(list(streamed.glob("model-*-of-*.safetensors"))) > 1


@pytest.fixture(scope="module")
def structured_sharded(sharded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A streamed structured prune of ``sharded`` (SlimGPT, 40 %; its layers differ in shape)."""
    out = tmp_path_factory.mktemp("structured") / "model"
    base = ["-q", "prune", "--model", str(sharded), "--structured", "--sparsity", "0.4", *FAST]
    assert main([*base, "--stream", "--shard-size", "0.1", "--out", str(out)]) == 0
    layers = json.loads((out / "config.json").read_text())["slimpack_structure"]["layers"]
    assert len({(la["num_attention_heads"], la["intermediate_size"]) for la in layers}) > 1
    return out


def test_a_structured_model_is_evaluated_and_quantized_streamed_as_loaded_whole(
    structured_sharded: Path, tmp_path: Path
) -> None:
    args = ["-q", "eval", str(structured_sharded), "--seqlen", "32", "--windows", "4"]
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    assert main([*args, "--stream", "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert a["perplexity"] == b["perplexity"]
    memory, streamed = quantize_both(structured_sharded, tmp_path / "q", "--act-order", "--group-size", "-1")
    assert_same_checkpoint(memory, streamed)  # its streamed evaluation cuts the GPTQ skeleton too
    config = json.loads((streamed / "config.json").read_text())
    assert config["slimpack_structure"] and config["quantization_config"]["quant_method"] == "gptq"


def test_a_damaged_gptq_checkpoint_is_named_before_any_work(
    structured_sharded: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A packed tensor whose shape its config cannot give (here: bits changed in config.json) is refused up
    front by the codec's shape check, not half-way through a block."""
    gptq = tmp_path / "gptq"
    assert main(["-q", "quantize", str(structured_sharded), "--group-size", "-1", *FAST, "--out", str(gptq)]) == 0
    config = json.loads((gptq / "config.json").read_text())
    config["quantization_config"]["bits"] = 8
    (gptq / "config.json").write_text(json.dumps(config))
    rc = main(["-q", "eval", str(gptq), "--seqlen", "32", "--windows", "2", "--stream"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "model.layers.0.self_attn.q_proj.qweight' has shape" in err[0]
    assert "8-bit quantization_config" in err[0] and err[0].endswith("the checkpoint is damaged")


@pytest.fixture(scope="module")
def pruned_sharded(sharded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A streamed 50 %-sparse prune of ``sharded`` (sharded output): the source of sequential quantization."""
    out = tmp_path_factory.mktemp("pruned") / "model"
    base = ["-q", "prune", "--model", str(sharded), "--method", "sparsegpt", "--sparsity", "0.5", *FAST]
    assert main([*base, "--stream", "--shard-size", "0.1", "--out", str(out)]) == 0
    return out


def quantize_both(model: Path, tmp_path: Path, *args: str) -> tuple[Path, Path]:
    return run_both(tmp_path, ["-q", "quantize", str(model), "--group-size", "32", *args, *FAST, "--eval"], "0.03")


def assert_same_checkpoint(memory: Path, streamed: Path) -> None:
    assert_same_tensors(memory, streamed)
    ma, mb = (json.loads((d / "slimpack.json").read_text()) for d in (memory, streamed))
    for key in ("sparsity", "method", "allocation"):
        assert ma[key] == mb[key], key
    ma["quantization"].pop("source"), mb["quantization"].pop("source")  # its source's timing and streaming differ
    assert ma["quantization"] == mb["quantization"]
    # the in-memory stage evaluates the fp32 model it quantized; the streamed one the checkpoint as written
    # (fp16 norms and embeddings): the same number as evaluating the in-memory checkpoint loaded whole
    json_out = memory.parent / "memory-eval.json"
    assert main(["-q", "eval", str(memory), "--seqlen", "32", "--windows", "3", "--json", str(json_out)]) == 0
    assert json.loads(json_out.read_text())["perplexity"] == mb["evaluation"]["perplexity"]
    ca, cb = (json.loads((d / "config.json").read_text()) for d in (memory, streamed))
    assert ca.get("quantization_config") == cb.get("quantization_config")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--act-order"],
        ["--asym", "--bits", "3", "--checkpoint-format", "gptq_v2"],
        ["--method", "rtn", "--bits", "8"],
    ],
    ids=["gptq", "act-order", "asym-3bit-v2", "rtn"],
)
def test_streamed_quantize_equals_in_memory(args: list[str], pruned_sharded: Path, tmp_path: Path) -> None:
    memory, streamed = quantize_both(pruned_sharded, tmp_path, *args)
    assert_same_checkpoint(memory, streamed)
    manifest = json.loads((streamed / "slimpack.json").read_text())
    zeros = manifest["quantization"]["pruned_zeros"]
    assert zeros["fraction_kept"] == 1.0 and zeros["pruned"] > 0 and manifest["quantization"]["sparsity_before"] > 0.45
    assert len(list(streamed.glob("model-*-of-*.safetensors"))) > 1 and (streamed / INDEX_FILE).is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["--joint-with", "sparsegpt", "--pattern", "2:4"],
        ["--joint-with", "wanda", "--sparsity", "0.5", "--allocation", "owl", "--true-sequential"],
    ],
    ids=["sparsegpt-2of4", "wanda-owl"],
)
def test_streamed_joint_quantize_equals_in_memory(args: list[str], sharded: Path, tmp_path: Path) -> None:
    assert_same_checkpoint(*quantize_both(sharded, tmp_path, *args))


def test_a_streamed_dequantized_checkpoint_is_a_plain_model(pruned_sharded: Path, tmp_path: Path) -> None:
    memory, streamed = quantize_both(pruned_sharded, tmp_path, "--checkpoint-format", "dequantized", "--bits", "5")
    assert_same_checkpoint(memory, streamed)
    assert {t.dtype for t in tensors(streamed).values()} == {torch.float32}


def test_a_gptq_checkpoint_is_evaluated_streamed_as_loaded_whole(pruned_sharded: Path, tmp_path: Path) -> None:
    out = tmp_path / "gptq"
    assert main(["-q", "quantize", str(pruned_sharded), "--group-size", "32", *FAST, "--out", str(out)]) == 0
    args = ["-q", "eval", str(out), "--seqlen", "32", "--windows", "4"]
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    assert main([*args, "--stream", "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert a["perplexity"] == b["perplexity"]


def test_a_streamed_gptq_checkpoint_refuses_another_dtype(
    pruned_sharded: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    rc = main(["-q", "quantize", str(pruned_sharded), "--group-size", "32", *FAST, "--stream", "--dtype", "bfloat16",
               "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].endswith("a GPTQ checkpoint stores float16; drop --dtype bfloat16")
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_a_streamed_recipe_with_stages_that_do_not_stream_is_refused(
    sharded: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = tmp_path / "r.yaml"
    body = STREAM_RECIPE.format(model=sharded, out=tmp_path / "out", stream="stream: {}", quantize="")
    recipe.write_text(body + "  export: {pt: {format: semi24, source: prune}}\n")
    assert main(["-q", "run", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stream: stages.export pt (semi24) load the model whole" in err[0]
    assert err[0].endswith("a streamed recipe exports deepsparse, hf, onnx, onnx-int4, sparse")
    assert not (tmp_path / "out").exists()


def test_a_streamed_sweep_times_only_engines_whose_artifacts_stream(
    sharded: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "sweep"
    rc = main(["-q", "bench", "sweep", "--model", str(sharded), "--stream", "--engines", "torch,onnxruntime",
               "--sparsities", "0.5", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--stream: the torch engine loads the model whole" in err[0]
    assert "streamed sweeps time deepsparse, onnxruntime, onnxruntime-int4" in err[0] and not out.exists()
