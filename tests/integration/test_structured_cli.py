"""``slimpack prune --structured`` on a tiny model directory: smaller model, exact reload, eval, ONNX export
and verify of the smaller model, rl-search for both kinds, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prune.models import load_model
from runtime_bench.cli import main

FAST = ["--nsamples", "4", "--seqlen", "32"]


def cli(*args: str) -> int:
    return main(["-q", *args])


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("structured") / "slim"
    assert cli("prune", "--model", str(tiny_dir), "--structured", "--sparsity", "0.4", "--out", str(out), *FAST) == 0
    return out


def test_structured_prune_writes_a_smaller_model_that_reloads_exactly(slim: Path, tiny_dir: Path) -> None:
    manifest = json.loads((slim / "slimpack.json").read_text())
    assert manifest["structure"] and manifest["method"]["name"] == "slimgpt"
    assert manifest["allocation"]["name"] == "log-increase"
    before, after = manifest["structure"]["parameters"]["before"], manifest["structure"]["parameters"]["after"]
    assert after["total"] < before["total"]
    config = json.loads((slim / "config.json").read_text())
    layers = config["slimpack_structure"]["layers"]
    assert len(layers) == 2 and all(layer["num_attention_heads"] in (2, 4) for layer in layers)
    loaded = load_model(slim)
    assert sum(p.numel() for p in loaded.model.parameters()) == after["total"]
    dense = load_model(tiny_dir).model
    ids = torch.randint(0, 200, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = loaded.model(ids).logits, load_model(slim).model(ids).logits
        assert torch.equal(a, b) and not torch.allclose(a, dense(ids).logits)


def test_in_memory_pruned_model_and_its_saved_form_give_identical_logits(tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    from prune.architecture import adapter_for
    from prune.models import save_model, tiny_llama
    from prune.structured import STRUCTURED
    from prune.structured.shapes import record_structure
    from prune.structured.walk import structured_walk

    model = tiny_llama(vocab_size=len(tokenizer), seed=4)
    adapter = adapter_for(model)
    plan = {f"model.layers.{i}.{u}": r for i, r in enumerate((0.3, 0.6)) for u in ("self_attn", "mlp")}
    batches = list(torch.randint(0, 200, (4, 16), generator=torch.Generator().manual_seed(1)).split(2))
    structured_walk(model, adapter, STRUCTURED.build("slimgpt", {}), plan, batches, progress=False)
    record_structure(model.config, adapter.blocks(model))
    save_model(model, tokenizer, tmp_path / "m")
    ids = torch.randint(0, 200, (2, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "m").model(ids).logits, model(ids).logits)


def test_structured_model_exports_to_onnx_and_verifies(slim: Path, tmp_path: Path) -> None:
    out = tmp_path / "onnx"
    assert cli("export", str(slim), "--format", "onnx", "--out", str(out)) == 0
    report = tmp_path / "verify.json"
    args = ["--seqlen", "32", "--windows", "2", "--tokens", "6", "--prompt", "8", "--json", str(report)]
    assert cli("verify", str(out), "--reference", str(slim), *args) == 0
    assert json.loads(report.read_text())["passed"]


@pytest.mark.parametrize("method", ["activation-l2", "slimgpt"])
def test_reconstruct_and_uniform_keep_heads(method: str, tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    args = ["--method", method, "--allocation", "uniform", "--keep-heads", "2", "--reconstruct"]
    assert (
        cli("prune", "--model", str(tiny_dir), "--structured", "--sparsity", "0.3", *args, "--out", str(out), *FAST)
        == 0
    )
    layers = json.loads((out / "config.json").read_text())["slimpack_structure"]["layers"]
    assert [layer["num_attention_heads"] for layer in layers] == [2, 2]
    manifest = json.loads((out / "slimpack.json").read_text())
    assert manifest["structure"]["reconstruct"] == {"enabled": True, "lambda": 0.9}


@pytest.mark.parametrize("structured", [True, False])
def test_rl_search_for_both_kinds_writes_agent_and_curves(structured: bool, tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "searched"
    kind = ["--structured", "--method", "activation-l2"] if structured else ["--method", "wanda"]
    search = ["--allocation", "rl-search", "-A", "episodes=16", "-A", "windows=2", "-A", "seqlen=16"]
    assert cli("prune", "--model", str(tiny_dir), *kind, "--sparsity", "0.3", *search, "--out", str(out), *FAST) == 0
    assert (out / "search.png").is_file() and (out / "agent" / "agent.json").is_file()
    options = json.loads((out / "slimpack.json").read_text())["allocation"]["options"]
    assert len(options["history"]) == 16 and options["episodes_per_hour"] > 0
    again = tmp_path / "again"
    reuse = [*search[:3], "episodes=2", "-A", f"agent={out / 'agent'}", "-A", "windows=2", "-A", "seqlen=16"]
    assert cli("prune", "--model", str(tiny_dir), *kind, "--sparsity", "0.4", *reuse, "--out", str(again), *FAST) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sparsity", "0.9"], "would remove all 4 query heads of model.layers.0.self_attn"),
        (["--keep-heads", "3"], "--keep-heads 3: .* keep one of 2, 4"),
        (["--keep-heads", "0"], "--keep-heads 0"),
        (["--allocation", "owl"], "allocation 'owl' works on weight matrices only; for --structured choose one of"),
        (["--method", "wanda"], "unknown structured method 'wanda'"),
        (["--pattern", "2:4"], "--pattern, --scope and --true-sequential are for unstructured pruning"),
    ],
)
def test_bad_structured_input_is_one_line_and_writes_nothing(
    extra: list[str],
    message: str,
    tiny_dir: Path,
    tmp_path: Path,
    capsys,  # noqa: ANN001
) -> None:
    import re

    out = tmp_path / "never"
    assert cli("prune", "--model", str(tiny_dir), "--structured", *extra, "--out", str(out), *FAST) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_structured_flags_need_structured(tiny_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert cli("prune", "--model", str(tiny_dir), "--reconstruct", "--out", str(tmp_path / "x"), *FAST) == 2
    assert "--reconstruct applies to structured pruning only; add --structured" in capsys.readouterr().err
