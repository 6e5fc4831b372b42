"""Many ranks under torchrun (`prune.ranks`, `prune.walker.walk`): 2 ranks on gloo, started from the test with
``torchrun --standalone --nproc-per-node 2 --no-python slimpack …``, give what one process gives.

Every process runs one thread (torchrun's default for several ranks; the single process is given
``OMP_NUM_THREADS=1`` too): a different thread count changes the blocking of fp32 matrix products, and with
it the last bits of activations. At equal threads the results are equal **bit for bit**: each rank's share of the
calibration set is run exactly as one process runs it, the statistics are float64 sums of the same per-batch
products (their sum across ranks differs from one process's by float64 rounding, below what the cast to fp32
keeps), and each linear is compressed once, on its owner, and broadcast.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from prune.manifest import Manifest
from tests.conftest import save_tiny

SLIMPACK = str(Path(sys.executable).with_name("slimpack"))
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
DATA = ["--nsamples", "6", "--seqlen", "32"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def one(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SLIMPACK, "-q", *args], env=env(), capture_output=True, text=True, timeout=300)


def ranks(n: int, *args: str, program: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [TORCHRUN, "--standalone", f"--nproc-per-node={n}", "--no-python", *(program or [SLIMPACK, "-q"]), *args]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)


def weights(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(directory.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def assert_same_model(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert wa[name].shape == wb[name].shape, name
        assert torch.equal(wa[name] == 0, wb[name] == 0), f"{name}: masks differ"
        assert torch.equal(wa[name], wb[name]), f"{name}: weights differ"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:  # noqa: ANN001
    return save_tiny(tmp_path_factory.mktemp("dist") / "model", tokenizer, distinct=True)


CASES = {
    "magnitude": ["prune", "--method", "magnitude", "--sparsity", "0.5"],
    "wanda": ["prune", "--method", "wanda", "--sparsity", "0.5"],
    "sparsegpt": ["prune", "--method", "sparsegpt", "--sparsity", "0.5"],
    "sparsegpt-2:4-true-sequential": ["prune", "--method", "sparsegpt", "--pattern", "2:4", "--true-sequential"],
    "owl": ["prune", "--method", "wanda", "--sparsity", "0.5", "--allocation", "owl"],
    "dlp": ["prune", "--method", "wanda", "--sparsity", "0.5", "--allocation", "dlp"],
    "slimgpt": ["prune", "--structured", "--method", "slimgpt", "--sparsity", "0.3", "--reconstruct"],
    "gptq": ["quantize", "--method", "gptq", "--bits", "4", "--group-size", "16"],
    "joint": ["quantize", "--method", "gptq", "--bits", "4", "--group-size", "16", "--joint-with", "sparsegpt",
              "--sparsity", "0.5"],  # fmt: skip
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_write_what_one_process_writes(case: str, model: Path, tmp_path: Path) -> None:
    command, *options = CASES[case]
    model_arg = [str(model)] if command == "quantize" else ["--model", str(model)]
    args = [command, *model_arg, *options, *DATA, "--eval", "--windows", "3"]
    single, double = tmp_path / "one", tmp_path / "two"
    done = one(*args, "--out", str(single))
    assert done.returncode == 0, done.stderr
    done = ranks(2, *args, "--out", str(double))
    assert done.returncode == 0, done.stderr
    assert_same_model(single, double)
    a, b = Manifest.read(single), Manifest.read(double)
    assert a.ranks is None and b.ranks is not None and (b.ranks.world_size, b.ranks.backend) == (2, "gloo")
    assert a.sparsity.to_dict() == b.sparsity.to_dict()
    assert a.perplexity == b.perplexity  # evaluated on rank 0, on the same weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # rank 1 wrote nothing


def test_eval_splits_windows_and_zeroshot_requests(model: Path, tmp_path: Path) -> None:
    ppl = ["eval", str(model), "--seqlen", "32", "--windows", "7"]
    assert one(*ppl, "--json", str(tmp_path / "p1.json")).returncode == 0
    done = ranks(2, *ppl, "--json", str(tmp_path / "p2.json"))
    assert done.returncode == 0, done.stderr
    p1, p2 = (read_json(tmp_path / f"p{i}.json") for i in (1, 2))
    assert p1["nll"] == p2["nll"] and p1["perplexity"] == p2["perplexity"] and p1["tokens"] == p2["tokens"]

    tasks = ["eval", str(model), "--tasks", "arc_easy,wikitext,gsm8k", "--task-data", "local", "--limit", "5"]
    assert one(*tasks, "--json", str(tmp_path / "z1.json")).returncode == 0
    done = ranks(2, *tasks, "--json", str(tmp_path / "z2.json"))
    assert done.returncode == 0, done.stderr
    z1, z2 = read_json(tmp_path / "z1.json"), read_json(tmp_path / "z2.json")
    assert set(z1["tasks"]) == {"arc_easy", "wikitext", "gsm8k"}
    assert z1["tasks"] == z2["tasks"]  # every metric, and every example's values and generated text
    assert (z1["headline"], z1["mean"]) == (z2["headline"], z2["mean"])


def read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


def test_ranks_given_different_arguments_are_refused_before_any_work(model: Path, tmp_path: Path) -> None:
    script = (f'if [ "$RANK" = 1 ]; then s=0.6; else s=0.5; fi; exec {SLIMPACK} -q prune --model {model} '
              f'--method wanda --sparsity $s {" ".join(DATA)} --out {tmp_path / "out"}')  # fmt: skip
    done = ranks(2, program=["bash", "-c", script])
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "slimpack: error:" in line]
    assert lines and all("rank 1 was started with '--sparsity 0.6' where rank 0 has '--sparsity 0.5'" in line
                         for line in lines), done.stderr  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_a_command_of_one_process_is_refused_under_torchrun(model: Path) -> None:
    done = ranks(2, "inspect", str(model))
    assert done.returncode != 0 and "`slimpack inspect` runs in one process" in done.stderr


def digest(directory: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(directory.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def rank_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun's worker ``rank`` (its environment says RANK=…)."""
    for child in psutil.Process(parent).children():
        with contextlib.suppress(psutil.Error):
            if child.environ().get("RANK") == str(rank):
                return child.pid
    return None


def test_a_rank_killed_mid_block_stops_every_rank_and_publishes_nothing(tmp_path: Path, tokenizer) -> None:  # noqa: ANN001
    from prune.models import tiny_llama

    big = tmp_path / "model"  # large enough that the walk lasts a few seconds
    save_tiny(big, tokenizer)
    m = tiny_llama(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688, num_layers=4)
    m.save_pretrained(big, safe_serialization=True)
    before = digest(big)
    out = tmp_path / "out"
    cmd = [TORCHRUN, "--standalone", "--nproc-per-node=2", "--no-python", SLIMPACK, "-q", "--rank-timeout", "30",
           "prune", "--model", str(big), "--method", "sparsegpt", "--sparsity", "0.5", "--nsamples", "64",
           "--seqlen", "128", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(tmp_path.glob(".out.tmp-*")):
            time.sleep(0.05)  # rank 0 opened its temporary output: the walk has begun
        assert list(tmp_path.glob(".out.tmp-*")), "the walk never started"
        time.sleep(1.0)
        victim = rank_pid(proc.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - killed < 60
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, err
    assert not out.exists()
    assert digest(big) == before  # the input is untouched
    time.sleep(0.5)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert not leftovers, leftovers  # rank 0 removed its temporary output on the way out
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    shutil.rmtree(big)


RUN_RECIPE = """
model: {model}
out: {out}
data: {{dataset: offline, nsamples: 48, seqlen: 128, seed: 0}}
eval: {{dataset: offline, seqlen: 128, windows: 4}}
stages:
  prune: {{method: sparsegpt, sparsity: 0.5}}
  quantize: {{bits: 4, group_size: 16}}
  export:
    gptq: {{format: gptq, source: quantize}}
  zeroshot: {{tasks: [arc_easy], task_data: local, limit: 6, artifacts: []}}
"""


@pytest.mark.slow  # 70 s: three runs of a 4-block model
def test_a_run_killed_under_torchrun_resumes_and_equals_one_process(tmp_path: Path, tokenizer) -> None:  # noqa: ANN001
    from prune.models import tiny_llama

    model = tmp_path / "model"
    save_tiny(model, tokenizer)
    tiny_llama(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688, num_layers=4).save_pretrained(
        model, safe_serialization=True)  # fmt: skip
    run_dir, one_dir = tmp_path / "run", tmp_path / "one"
    (tmp_path / "r.yaml").write_text(RUN_RECIPE.format(model=model, out=run_dir))
    (tmp_path / "o.yaml").write_text(RUN_RECIPE.format(model=model, out=one_dir))
    cmd = [TORCHRUN, "--standalone", "--nproc-per-node=2", "--no-python", SLIMPACK, "-q", "--rank-timeout", "60",
           "run", str(tmp_path / "r.yaml")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (run_dir / "state" / "prune.json").exists() and proc.poll() is None:
            time.sleep(0.05)
        assert (run_dir / "state" / "prune.json").exists(), "the prune step never finished"
        victim = rank_pid(proc.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)  # during the quantize step
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert not (run_dir / "summary.json").exists() and not (run_dir / "state" / "quantize.json").exists()

    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)  # the same command again
    assert done.returncode == 0, done.stderr[-3000:]
    record = read_json(run_dir / "run.json")
    status = {s["stage"]: s["status"] for s in record["steps"]}
    assert status["prune"] == "cached" and status["eval"] == "cached" and status["quantize"] == "ran"

    done = one("run", str(tmp_path / "o.yaml"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_model(one_dir / "prune", run_dir / "prune")
    assert_same_model(one_dir / "quantize", run_dir / "quantize")
    z1, z2 = (read_json(d / "zeroshot" / "model-quantize.json") for d in (one_dir, run_dir))
    assert z1["tasks"] == z2["tasks"]
