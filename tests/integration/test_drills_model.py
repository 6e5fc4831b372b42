"""Drills of issue #26, model directories that lie (items 4, 5 and 7): a shard index that points outside its model
or is damaged, a config.json whose sizes cannot be built or that asks for more than its weights hold, a FIFO
where a file should be, an architecture slimpack has no adapter for, a shard deleted while a streamed run reads
it, and ``auto_map`` (remote code) carried into outputs. Every refusal: exit 2, one stderr line naming the value
and the fix, before any work — every file of the models' folder (the inputs and their neighbours) unchanged,
no output and no temporary left."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from runtime_bench.cli import main
from tests.conftest import save_tiny

FAST = ["--nsamples", "2", "--seqlen", "16"]
SECRET = "secret-token-1234"  # in a neighbour's file: no message may quote it
INDEX = "model.safetensors.index.json"
AUTO_MAP = {"AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XForCausalLM"}


def digest(directory: Path) -> dict[str, str]:
    """sha256 of every regular file under ``directory``, by relative path."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def one_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:  # noqa: ANN001
    """The models' folder, built once: ``m`` (one file), ``sharded`` (five shards and an index), ``other`` (another
    model of the same shapes), ``q`` (``m`` quantized: a GPTQ checkpoint) and a neighbour's ``notes.txt``."""
    root = tmp_path_factory.mktemp("pristine") / "models"
    save_tiny(root / "m", tokenizer)
    save_tiny(root / "sharded", tokenizer, max_shard_size="100KB")
    save_tiny(root / "other", tokenizer, seed=1)
    assert main(["-q", "quantize", str(root / "m"), "--method", "rtn", "--group-size", "32", *FAST,
                 "--out", str(root / "q")]) == 0  # fmt: skip
    (root / "notes.txt").write_text(f"someone else's file: {SECRET}\n")
    return root


@pytest.fixture
def models(pristine: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(pristine, root, symlinks=True)
    return root


def edit_json(file: Path, change: Callable[[dict], object]) -> None:
    """Rewrite the JSON ``file`` as ``change(data)`` returns it (``None``: ``data`` changed in place)."""
    data = json.loads(file.read_text())
    changed = change(data)
    file.write_text(json.dumps(data if changed is None else changed))


def without(key: str) -> Callable[[dict], dict]:
    return lambda data: {k: v for k, v in data.items() if k != key}


def set_entry(models: Path, value: object) -> None:
    """The sharded model's index entry of its first tensor set to ``value``."""
    edit_json(models / "sharded" / INDEX, lambda d: d["weight_map"].update({next(iter(d["weight_map"])): value}))


def commands(model: Path, out: Path, recipe: Path | None = None) -> dict[str, list[str]]:
    """Every command that reads ``model``, with its output under ``out``."""
    prune = ["prune", "--model", str(model), "--method", "magnitude", "--sparsity", "0.5", *FAST]
    evaluate = ["eval", str(model), "--seqlen", "16", "--windows", "1"]
    found = {
        "prune": [*prune, "--out", str(out / "prune")],
        "prune --stream": [*prune, "--stream", "--out", str(out / "stream")],
        "eval": evaluate,
        "eval --stream": [*evaluate, "--stream"],
        "export": ["export", str(model), "--format", "onnx", "--out", str(out / "export")],
    }
    if recipe is not None:
        recipe.write_text(
            f"model: {model}\nout: {out / 'run'}\ndata: {{dataset: offline, nsamples: 2, seqlen: 16, seed: 0}}\n"
            "eval: {dataset: offline, seqlen: 16, windows: 1}\nstages:\n  prune: {method: magnitude, sparsity: 0.5}\n"
        )
        found["run"] = ["run", str(recipe)]
    return found


def refused_everywhere(
    models: Path, model: Path, named: list[str], capsys: pytest.CaptureFixture, tmp_path: Path, run: bool = False
) -> list[str]:
    """Every command refuses ``model`` in one line holding each of ``named`` and no byte of a neighbour's file;
    nothing changed, nothing written. Returns the lines."""
    before = digest(models)
    out = tmp_path / "outs"
    lines = []
    for name, args in commands(model, out, tmp_path / "recipe.yaml" if run else None).items():
        start = time.perf_counter()
        assert main(["-q", *args]) == 2, name
        line = one_line(capsys)
        assert time.perf_counter() - start < 30, (name, "refused late")
        assert line.startswith("slimpack: error: ") and SECRET not in line, (name, line)
        assert all(n in line for n in named), (name, line)
        lines.append(line)
    assert digest(models) == before
    assert not out.exists() and not list(tmp_path.rglob(".*tmp-*")) and not list(models.rglob(".*tmp-*"))
    return lines


# --- item 4: every file an index names lies inside its model; no message quotes a file's bytes --------------

OUTSIDE = {
    "absolute-system-file": (lambda m: "/etc/passwd", ["lists '/etc/passwd', a file outside"]),
    "dotdot-to-another-model": (lambda m: "../other/model.safetensors", ["'../other/model.safetensors', a file outside"]),
    "absolute-to-another-model": (lambda m: str(m / "other" / "model.safetensors"), ["a file outside"]),
    "dotdot-to-a-text-file": (lambda m: "../notes.txt", ["lists '../notes.txt', a file outside"]),
    "down-then-up": (lambda m: "sub/../../notes.txt", ["'sub/../../notes.txt', a file outside"]),
    "backslashes": (lambda m: "..\\notes.txt", ["a file outside"]),
    "empty-name": (lambda m: "", ["lists a file name that is not a path ('')"]),
    "a-number": (lambda m: 7, ["lists a file name that is not a path (int)"]),
}


@pytest.mark.parametrize("case", list(OUTSIDE))
def test_an_index_entry_outside_its_model_is_refused_by_every_command(
    case: str, models: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    value, named = OUTSIDE[case]
    set_entry(models, value(models))
    refused_everywhere(models, models / "sharded", named, capsys, tmp_path, run=True)


def test_an_index_entry_naming_a_folder_inside_is_refused(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (models / "sharded" / "sub").mkdir()
    set_entry(models, "sub")
    refused_everywhere(models, models / "sharded", ["lists 'sub', which is a directory"], capsys, tmp_path)


def safetensors_bytes(header: bytes) -> bytes:
    """A file that declares ``header`` as its safetensors header (length first), and no tensor data."""
    return len(header).to_bytes(8, "little") + header


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (f"{SECRET} and more text\n".encode(), "its first 8 bytes are not a header length"),
        (b"", "its first 8 bytes are not a header length"),
        (safetensors_bytes(b"\x80\xff" + SECRET.encode()), "its header is not JSON"),
        (safetensors_bytes(b"[1]"), "its header is not a table"),
        (safetensors_bytes(b'{"w": {"dtype": "F32", "shape": [2]')[:30], "its header is not JSON"),
        (safetensors_bytes(b'{"w": {"dtype": "F32", "shape": ["a"], "data_offsets": [0, 0]}}'),
         "tensor 'w' has no dtype name or a shape that is not whole numbers"),
        (safetensors_bytes(b'{"w": {"dtype": "F32", "shape": [1]}}'), "bad tensor entries"),
    ],
    ids=["text", "empty", "binary-header", "header-a-list", "cut-header", "shape-of-strings", "no-offsets"],
)
def test_a_file_that_is_not_safetensors_is_named_without_its_bytes(
    content: bytes, named: str, models: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (models / "m" / "model.safetensors").write_bytes(content)
    lines = refused_everywhere(models, models / "m", ["is not a safetensors file", named], capsys, tmp_path)
    length = int.from_bytes(content[:8], "little")
    assert all("0x" not in line and (length < 2**20 or str(length) not in line) for line in lines), lines


# --- item 5: a damaged shard index ------------------------------------------------------------------------

INDEX_DAMAGE = {
    "weight-map-a-list": (lambda d: d.update(weight_map=list(d["weight_map"])), "a list as its weight_map"),
    "weight-map-missing": (without("weight_map"), "it has no weight_map"),
    "weight-map-empty": (lambda d: d.update(weight_map={}), "it has an empty weight_map"),
    "a-null-file-name": (lambda d: d["weight_map"].update({next(iter(d["weight_map"])): None}),
                         "lists a file name that is not a path (NoneType)"),
    "a-list-as-file-name": (lambda d: d["weight_map"].update({next(iter(d["weight_map"])): ["a"]}),
                            "lists a file name that is not a path (list)"),
    "metadata-a-string": (lambda d: d.update(metadata="odd"), "its metadata is missing or not a table"),
    "metadata-missing": (without("metadata"), "its metadata is missing or not a table"),
    "index-a-list": (lambda d: [d], "it holds a JSON list, not an object"),
    "tensor-in-the-wrong-shard": (
        lambda d: d["weight_map"].update({"model.norm.weight": "model-00001-of-00005.safetensors"}),
        "lists tensor 'model.norm.weight' in 'model-00001-of-00005.safetensors', which does not hold it",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(INDEX_DAMAGE))
def test_a_damaged_shard_index_is_one_line(case: str, models: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    change, named = INDEX_DAMAGE[case]
    edit_json(models / "sharded" / INDEX, change)
    refused_everywhere(models, models / "sharded", [named], capsys, tmp_path)


def test_an_index_that_is_not_json_is_one_line(models: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (models / "sharded" / INDEX).write_text("{ not json " + SECRET)
    refused_everywhere(models, models / "sharded", ["is not a safetensors index (not JSON)"], capsys, tmp_path)


# --- item 5: config.json that cannot be built -------------------------------------------------------------

CONFIG_DAMAGE = {
    "top-level-list": (lambda c: [c], "holds a JSON list, not an object of settings"),
    "top-level-string": (lambda c: "llama", "holds a JSON str, not an object of settings"),
    "zero-heads": (lambda c: c.update(num_attention_heads=0), "gives num_attention_heads 0; it must be a whole number ≥ 1"),
    "string-size": (lambda c: c.update(hidden_size="64"), "gives hidden_size '64' (a string)"),
    "negative-vocabulary": (lambda c: c.update(vocab_size=-5), "gives vocab_size -5; it must be a whole number ≥ 1"),
    "boolean-layers": (lambda c: c.update(num_hidden_layers=True), "gives num_hidden_layers True (a boolean)"),
    "float-intermediate": (lambda c: c.update(intermediate_size=128.0), "gives intermediate_size 128.0;"),
    "zero-intermediate": (lambda c: c.update(intermediate_size=0), "gives intermediate_size 0;"),
    "missing-layers": (without("num_hidden_layers"), "gives no num_hidden_layers; it must be a whole number"),
    "negative-kv-heads": (lambda c: c.update(num_key_value_heads=-2), "gives num_key_value_heads -2;"),
    "zero-head-dim": (lambda c: c.update(head_dim=0), "gives head_dim 0;"),
    "negative-positions": (lambda c: c.update(max_position_embeddings=-1), "gives max_position_embeddings -1;"),
    "heads-not-dividing-width": (lambda c: c.update(hidden_size=66, head_dim=None),
                                 "hidden_size 66, which its num_attention_heads 4 does not divide"),
    "kv-heads-not-dividing-heads": (lambda c: c.update(num_key_value_heads=3),
                                    "num_key_value_heads 3, which does not divide its num_attention_heads 4"),
    "quantization-config-a-list": (lambda c: c.update(quantization_config=[]), "quantization_config that is not an"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CONFIG_DAMAGE))
def test_a_config_that_cannot_be_built_is_one_line_before_any_skeleton(
    case: str, models: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    change, named = CONFIG_DAMAGE[case]
    edit_json(models / "m" / "config.json", change)
    refused_everywhere(models, models / "m", [named, "config.json"], capsys, tmp_path)


# --- item 5: sizes that only fail when mapped -------------------------------------------------------------

SIZES = {
    "layers-100000": ("m", {"num_hidden_layers": 100_000},
                      "num_hidden_layers is 100000, but the weights in {model!r} hold 2 blocks"),
    "layers-one-more": ("sharded", {"num_hidden_layers": 3}, "num_hidden_layers is 3, but the weights in {model!r} hold 2"),
    "vocabulary-a-billion": ("m", {"vocab_size": 10**9},
                             "vocab_size is 1000000000, but the embedding 'model.embed_tokens.weight' in {model!r} holds 256 rows"),
    "vocabulary-one-more": ("sharded", {"vocab_size": 257}, "vocab_size is 257, but the embedding"),
    "width-of-a-7b": ("m", {"hidden_size": 4096}, "hidden_size is 4096, but the embedding 'model.embed_tokens.weight'"),
    "gptq-layers-100000": ("q", {"num_hidden_layers": 100_000}, "num_hidden_layers is 100000, but the weights"),
    "gptq-vocabulary-a-billion": ("q", {"vocab_size": 10**9}, "vocab_size is 1000000000, but the embedding"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SIZES))
def test_a_config_asking_more_than_its_weights_hold_is_refused_from_the_headers(
    case: str, models: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    name, sizes, named = SIZES[case]
    model = models / name
    edit_json(model / "config.json", lambda c: c.update(sizes))
    start = time.perf_counter()
    if name == "q":  # a GPTQ checkpoint: the commands that read one (onnx export refuses quantized weights)
        before = digest(models)
        for args in (["eval", str(model), "--seqlen", "16", "--windows", "1"],
                     ["eval", str(model), "--seqlen", "16", "--windows", "1", "--stream"],
                     ["export", str(model), "--format", "gptq", "--out", str(tmp_path / "outs" / "gptq")]):  # fmt: skip
            assert main(["-q", *args]) == 2, args
            assert named in one_line(capsys)
        assert digest(models) == before and not (tmp_path / "outs").exists()
    else:
        refused_everywhere(models, model, [named.format(model=str(model))], capsys, tmp_path, run=True)
    assert time.perf_counter() - start < 60  # 100 000 layers took 122 s for one command before


# --- item 5: FIFOs, folders and unsupported architectures -------------------------------------------------


WATCHER = """
import os, sys, time
while True:
    try:
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: nobody reads it
        time.sleep(0.02)
        continue
    print("opened", flush=True)
    os.close(fd)
"""


@contextmanager
def never_opened(fifo: Path) -> Iterator[None]:
    """Fail the drill if anything opens ``fifo`` to read it (a reader would block for ever): a watcher process
    (a thread could not run while a reader blocks holding the GIL) opens the write end whenever a reader waits —
    which unblocks that reader with an empty file — and says so."""
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, str(fifo)], stdout=subprocess.PIPE)
    try:
        yield
    finally:
        watcher.terminate()
        said = watcher.communicate()[0]
    assert b"opened" not in said, f"{fifo} was opened"


@pytest.mark.parametrize(
    ("model", "file"),
    [
        ("m", "model.safetensors"),
        ("m", "config.json"),
        ("m", "tokenizer.json"),
        ("m", "generation_config.json"),
        ("sharded", "model-00003-of-00005.safetensors"),
        ("sharded", INDEX),
        ("q", "model.safetensors"),
    ],
)
def test_a_fifo_in_place_of_a_model_file_never_hangs(
    model: str, file: str, models: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    fifo = models / model / file
    fifo.unlink()
    os.mkfifo(fifo)
    with never_opened(fifo):
        if model == "q":
            before = digest(models)
            assert main(["-q", "eval", str(models / model), "--seqlen", "16", "--windows", "1"]) == 2
            assert f"{str(fifo)!r} is a FIFO" in one_line(capsys)
            assert digest(models) == before
        else:  # export's own first check finds no config.json where a FIFO stands: one line too, nothing opened
            named = ["config.json"] if file == "config.json" else [file, "FIFO"]
            refused_everywhere(models, models / model, named, capsys, tmp_path)


def test_a_folder_named_as_the_weights_is_one_line(models: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (models / "m" / "model.safetensors").unlink()
    (models / "m" / "model.safetensors").mkdir()
    refused_everywhere(models, models / "m", ["weights file", "model.safetensors' is a directory"], capsys, tmp_path)


ARCHITECTURES = {
    "bert": (lambda c: c.update(model_type="bert"), "unsupported architecture 'bert'; slimpack supports model_type: llama"),
    "gpt2": (lambda c: c.update(model_type="gpt2"), "unsupported architecture 'gpt2'"),
    "t5": (lambda c: c.update(model_type="t5"), "unsupported architecture 't5'"),
    "upper-case": (lambda c: c.update(model_type="LLaMA"), "unsupported architecture 'LLaMA'"),
    "a-number": (lambda c: c.update(model_type=7), "unsupported architecture 7"),
    "missing": (without("model_type"), "names no model_type; slimpack supports model_type: llama"),
    "mixtral": (lambda c: c.update(model_type="mixtral", num_local_experts=8),
                "'mixtral' is a mixture-of-experts model (8 experts per block)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ARCHITECTURES))
def test_an_unsupported_architecture_is_named_before_anything_is_built(
    case: str, models: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    change, named = ARCHITECTURES[case]
    edit_json(models / "m" / "config.json", change)
    refused_everywhere(models, models / "m", [named], capsys, tmp_path, run=True)


# --- item 5: a shard deleted while a streamed run reads it -----------------------------------------------

VANISH = {
    "prune --stream, sharded": ("sharded", lambda m, o: ["prune", "--model", str(m), "--method", "sparsegpt",
                                "--sparsity", "0.5", *FAST, "--stream", "--out", str(o)]),
    "prune --stream, one file": ("m", lambda m, o: ["prune", "--model", str(m), "--method", "wanda", "--sparsity",
                                 "0.5", *FAST, "--stream", "--out", str(o)]),
    "eval --stream": ("sharded", lambda m, o: ["eval", str(m), "--seqlen", "16", "--windows", "1", "--stream",
                      "--json", str(o / "eval.json")]),
    "quantize --stream": ("sharded", lambda m, o: ["quantize", str(m), "--method", "rtn", "--group-size", "32",
                          *FAST, "--stream", "--out", str(o)]),
    "export --stream": ("sharded", lambda m, o: ["export", str(m), "--format", "onnx", "--stream", "--out", str(o)]),
    "gptq eval --stream": ("q", lambda m, o: ["eval", str(m), "--seqlen", "16", "--windows", "1", "--stream"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(VANISH))
def test_a_shard_deleted_during_a_streamed_run_is_one_clear_line(
    case: str, models: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prune.lazy import LazyCheckpoint, read_index

    name, args = VANISH[case]
    model, out = models / name, tmp_path / "outs" / "out"
    files, _ = read_index(model)
    victim = next(f for n, f in files.items() if n.startswith("model.layers.1."))
    reads = LazyCheckpoint.read_stored

    def read_stored(self: LazyCheckpoint, names: list[str]) -> dict:
        if any(n.startswith("model.layers.1.") for n in names) and victim.exists():
            victim.unlink()  # after block 0, before block 1: as another process would
        return reads(self, names)

    monkeypatch.setattr(LazyCheckpoint, "read_stored", read_stored)
    before = digest(models)
    assert main(["-q", *args(model, out)]) == 2
    line = one_line(capsys)
    assert not victim.exists(), "the hook never ran"
    assert f"shard {victim.name!r} of {str(model)!r} vanished while slimpack read it" in line, line
    assert "nothing was written — restore the model directory" in line
    before.pop(str(victim.relative_to(models)))
    assert digest(models) == before
    assert not out.exists() and not list(tmp_path.rglob(".*tmp-*"))


# --- item 7: auto_map never reaches an output -------------------------------------------------------------


def with_auto_map(model: Path) -> None:
    edit_json(model / "config.json", lambda c: c.update(auto_map=AUTO_MAP))
    edit_json(model / "tokenizer_config.json", lambda c: c.update(auto_map={"AutoTokenizer": ["tokenization_x.X", None]}))


AUTO_MAP_RUNS = {
    "prune": ("m", ["prune", "--model", "{m}", "--method", "wanda", "--sparsity", "0.5", *FAST, "--out", "{o}"]),
    "prune --stream": ("sharded", ["prune", "--model", "{m}", "--method", "wanda", "--sparsity", "0.5", *FAST,
                                   "--stream", "--out", "{o}"]),
    "prune --structured": ("m", ["prune", "--model", "{m}", "--structured", "--sparsity", "0.25", *FAST, "--out", "{o}"]),
    "quantize": ("m", ["quantize", "{m}", "--method", "rtn", "--group-size", "32", *FAST, "--out", "{o}"]),
    "quantize --stream": ("sharded", ["quantize", "{m}", "--method", "rtn", "--group-size", "32", *FAST, "--stream",
                                      "--out", "{o}"]),
    "export gptq": ("q", ["export", "{m}", "--format", "gptq", "--out", "{o}"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(AUTO_MAP_RUNS))
def test_auto_map_is_not_carried_into_any_output(
    case: str, models: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    name, args = AUTO_MAP_RUNS[case]
    model, out = models / name, tmp_path / "out"
    with_auto_map(model)
    source = json.loads((model / "config.json").read_text())
    before = digest(models)
    assert main(["-q", *(a.format(m=model, o=out) for a in args)]) == 0
    written = json.loads((out / "config.json").read_text())
    assert "auto_map" not in written and written["model_type"] == source["model_type"] == "llama"
    assert "auto_map" not in json.loads((out / "tokenizer_config.json").read_text())
    assert written["num_hidden_layers"] == source["num_hidden_layers"]
    assert digest(models) == before  # the source keeps its auto_map: only outputs drop it
    assert "auto_map" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("how", "named"),
    [("moved", "vanished while slimpack read it"), ("replaced", "changed while slimpack read it")],
)
def test_a_shard_moved_or_replaced_during_a_streamed_run_is_one_clear_line(
    how: str, named: str, models: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from prune.lazy import LazyCheckpoint, read_index

    model, out = models / "sharded", tmp_path / "outs" / "out"
    files, _ = read_index(model)
    victim = next(f for n, f in files.items() if n.startswith("model.layers.1."))
    reads = LazyCheckpoint.read_stored

    def read_stored(self: LazyCheckpoint, names: list[str]) -> dict:
        if any(n.startswith("model.layers.1.") for n in names) and not (tmp_path / "done").exists():
            (tmp_path / "done").touch()
            if how == "moved":
                victim.rename(tmp_path / victim.name)
            else:
                victim.write_text(f"{SECRET}: not the shard it was")
        return reads(self, names)

    monkeypatch.setattr(LazyCheckpoint, "read_stored", read_stored)
    before = digest(models)
    args = ["prune", "--model", str(model), "--method", "wanda", "--sparsity", "0.5", *FAST, "--stream"]
    assert main(["-q", *args, "--out", str(out)]) == 2
    line = one_line(capsys)
    assert f"shard {victim.name!r} of {str(model)!r} {named}" in line and SECRET not in line, line
    assert "nothing was written" in line
    before.pop(str(victim.relative_to(models)))
    after = digest(models)
    after.pop(str(victim.relative_to(models)), None)
    assert after == before and not out.exists() and not list(tmp_path.rglob(".*tmp-*"))
