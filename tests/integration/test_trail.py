"""Issue #28: following ``--sparsity`` and ``--bits`` from the command line to where they meet the weights enters
each file once (`scripts/trail.py` measures it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def trail():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("trail", ROOT / "scripts" / "trail.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sparsity_and_bits_enter_each_file_once(tiny_dir: Path, tmp_path: Path) -> None:
    t = trail()
    fast = ["--nsamples", "4", "--seqlen", "32"]
    rc, stops = t.follow(0.37, ["-q", "prune", "--model", str(tiny_dir), "--method", "sparsegpt", "--sparsity", "0.37",
                                *fast, "--out", str(tmp_path / "p")], "prune/masks.py:select_prune_mask")  # fmt: skip
    files = [f for f, _ in stops]
    assert rc == 0 and files[0] == "prune/api.py" and files[-1] == "prune/masks.py", stops
    assert {"prune/prepare.py", "prune/allocation/uniform.py", "prune/walker.py", "prune/obs.py"} <= set(files)
    assert t.revisited(stops) == [], stops
    rc, stops = t.follow(3, ["-q", "quantize", str(tmp_path / "p"), "--bits", "3", "--group-size", "32", *fast,
                             "--out", str(tmp_path / "q")], "quant/grid.py:quantize")  # fmt: skip
    files = [f for f, _ in stops]
    assert rc == 0 and files[0] == "quant/spec.py" and files[-1] == "quant/grid.py", stops
    assert {"quant/stage.py", "quant/methods.py"} <= set(files)
    assert t.revisited(stops) == [], stops


def test_the_trail_sees_a_file_entered_twice() -> None:
    t = trail()
    assert t.revisited([("a.py", ["f"]), ("b.py", ["g"]), ("a.py", ["h"])]) == ["a.py"]
    assert t.revisited([("a.py", ["f", "h"]), ("b.py", ["g"])]) == []
