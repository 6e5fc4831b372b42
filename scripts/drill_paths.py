"""Issue #26's path drills (classes 1, 2 and 5's path cases) as a table, against any checkout of slimpack.

    .venv/bin/python scripts/drill_paths.py                     # this checkout
    git worktree add --detach /tmp/base HEAD~1 && .venv/bin/python scripts/drill_paths.py --root /tmp/base

Each case runs the real command line in a child process, in a fresh workspace holding a tiny random Llama
(``WS/models/m``, with a neighbour ``WS/models/notes.txt``; ``WS/p``: it pruned by slimpack) and whatever the
case adds, and reports: the exit status, how many lines stderr had and its last line (log timestamps dropped), whether
every file that was there before is unchanged (sha256), and what was left that the command should not have written.
The tests that assert the same outcomes are ``tests/integration/test_drills_paths.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FAST = ["--nsamples", "2", "--seqlen", "16"]
RECIPE = "model: {model}\nout: {out}\ndata: {{nsamples: 2, seqlen: 16}}\neval: {{seqlen: 16, windows: 1}}\n"
RECIPE += "stages:\n  prune: {{method: magnitude, sparsity: 0.5}}\n"


@dataclass(frozen=True)
class Case:
    klass: str
    name: str
    make: Callable[[Path], tuple[list[str], Path | None]]  # workspace → (argv, cwd)
    may_write: tuple[str, ...] = ()  # paths (relative to the workspace) a successful run writes


def recipe(ws: Path, out: str | Path, model: Path | None = None) -> str:
    path = ws / "r.yaml"
    path.write_text(RECIPE.format(model=model or ws / "models" / "m", out=out))
    return str(path)


def tree(ws: Path, name: str, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (ws / name / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / name / rel).write_text(text)
    return ws / name


def hub(ws: Path) -> Path:
    """The model as a hub cache holds it: a snapshot of symlinks into ``blobs/``."""
    blobs, snap = ws / "hub" / "blobs", ws / "hub" / "snapshots" / "abc"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in (ws / "models" / "m").iterdir():
        shutil.copy(f, blobs / f.name)
        (snap / f.name).symlink_to(blobs / f.name)
    return snap


def artifact(ws: Path) -> Path:
    shutil.copytree(ws.parent / "artifact", ws / "art")  # exported once per drill run, beside the workspaces
    return ws / "art"


M = "models/m"
CASES = [
    # 1. a run takes over only its own directory
    Case("1", "`run --out .` in a source tree (prune/, export/, README.md)",
         lambda ws: (["run", recipe(ws, ".")], tree(ws, "src", {"prune/api.py": "x", "export/cli.py": "x", "README.md": "x"}))),
    Case("1", "`run --out D`, D holds a user's report.md, summary.json, notes.txt",
         lambda ws: (["run", recipe(ws, ws / "d"), "--out", str(tree(ws, "d", {"report.md": "mine", "summary.json": "{}", "notes.txt": "x"}))], None)),
    Case("1", "recipe `out: D`, D holds plots named as a run's (sparsity.png, speed.png)",
         lambda ws: (["run", recipe(ws, tree(ws, "d", {"sparsity.png": "x", "speed.png": "x"}))], None)),
    Case("1", "`run --out D`, D holds state/ but no run.json",
         lambda ws: (["run", recipe(ws, ws / "d"), "--out", str(tree(ws, "d", {"state/a.json": "{}"}))], None)),
    Case("1", "`run --out D`, D holds a run.json that is not a run's ([1, 2]) and state/",
         lambda ws: (["run", recipe(ws, ws / "d"), "--out", str(tree(ws, "d", {"run.json": "[1, 2]", "state/a.json": "{}"}))], None)),
    Case("1", "`run --out D`, D holds a user's prune/ and export/onnx/",
         lambda ws: (["run", recipe(ws, ws / "d"), "--out", str(tree(ws, "d", {"prune/mine.txt": "x", "export/onnx/mine.txt": "x"}))], None)),
    Case("1", "`prune --out D --overwrite`, D holds a user's thesis.tex",
         lambda ws: (["prune", "--model", str(ws / M), "--method", "magnitude", "--out", str(tree(ws, "d", {"thesis.tex": "x"})), "--overwrite", *FAST], None)),
    Case("1", "`export --out D --overwrite`, D holds a user's files",
         lambda ws: (["export", str(ws / M), "--format", "onnx", "--out", str(tree(ws, "d", {"a.txt": "x"})), "--overwrite"], None)),
    Case("1", "`run --out D`, D new (valid)", lambda ws: (["run", recipe(ws, ws / "d")], None), ("d",)),
    # 2. no output path may touch an input
    Case("2", "`eval M --json M/config.json`", lambda ws: (["eval", str(ws / M), "--seqlen", "16", "--windows", "1", "--json", str(ws / M / "config.json")], None)),
    Case("2", "`report P --json P/model.safetensors`", lambda ws: (["report", str(ws / "p"), "--json", str(ws / "p" / "model.safetensors")], None)),
    Case("2", "`report P --png P/model.safetensors`", lambda ws: (["report", str(ws / "p"), "--png", str(ws / "p" / "model.safetensors")], None)),
    Case("2", "`eval ART --tasks boolq --task-data local --json ART/model.onnx`",
         lambda ws: (["eval", str(artifact(ws)), "--tasks", "boolq", "--task-data", "local", "--limit", "2", "--json", str(ws / "art" / "model.onnx")], None)),
    Case("2", "`verify ART --reference M --json ART/export.json`",
         lambda ws: (["verify", str(artifact(ws)), "--reference", str(ws / M), "--seqlen", "16", "--windows", "1", "--prompt", "4", "--tokens", "2", "--json", str(ws / "art" / "export.json")], None)),
    Case("2", "`plan --model M --out M/config.json --overwrite`", lambda ws: (["plan", "--model", str(ws / M), "--out", str(ws / M / "config.json"), "--overwrite", *FAST], None)),
    Case("2", "`prune --stream --offload-dir M/spill`", lambda ws: (["prune", "--model", str(ws / M), "--out", str(ws / "o"), "--stream", "--offload-dir", str(ws / M / "spill"), *FAST], None)),
    Case("2", "`prune --model SNAPSHOT --out blobs/ --overwrite` (the hub cache's blobs)",
         lambda ws: (["prune", "--model", str(hub(ws)), "--out", str(ws / "hub" / "blobs"), "--overwrite", *FAST], None)),
    Case("2", "`inspect P --json P/slimpack.json`", lambda ws: (["inspect", str(ws / "p"), "--json", str(ws / "p" / "slimpack.json")], None)),
    Case("2", "`eval M --dataset corpus.txt --json corpus.txt`",
         lambda ws: (["eval", str(ws / M), "--dataset", str(tree(ws, "", {"corpus.txt": "text " * 400}) / "corpus.txt"), "--seqlen", "16", "--windows", "1", "--json", str(ws / "corpus.txt")], None)),
    Case("2", "`plan --model M --out M/plan.json` (a new file inside the model)",
         lambda ws: (["plan", "--model", str(ws / M), "--out", str(ws / M / "plan.json"), *FAST], None)),
    Case("2", "`export M --graph-cache M`", lambda ws: (["export", str(ws / M), "--format", "onnx", "--out", str(ws / "a"), "--graph-cache", str(ws / M)], None)),
    Case("2", "`bench sweep --model M --out M/sweep`", lambda ws: (["bench", "sweep", "--model", str(ws / M), "--out", str(ws / M / "sweep"), "--sparsities", "0.5", "--engines", "torch", "--threads", "1", *FAST], None)),
    Case("2", "`run R --out M` (the recipe's model)", lambda ws: (["run", recipe(ws, ws / "d"), "--out", str(ws / M)], None)),
    Case("2", "`eval M --json models/` (the model's parent)", lambda ws: (["eval", str(ws / M), "--seqlen", "16", "--windows", "1", "--json", str(ws / "models")], None)),
    # 5. path values that cannot work
    Case("5", "`prune --stream --shard-size inf`", lambda ws: (["prune", "--model", str(ws / M), "--out", str(ws / "o"), "--stream", "--shard-size", "inf", *FAST], None)),
    Case("5", "`prune --stream --shard-size nan`", lambda ws: (["prune", "--model", str(ws / M), "--out", str(ws / "o"), "--stream", "--shard-size", "nan", *FAST], None)),
    Case("5", "`eval M --json DIR` (an existing directory)", lambda ws: (["eval", str(ws / M), "--seqlen", "16", "--windows", "1", "--json", str(tree(ws, "d", {"keep.txt": "x"}))], None)),
    Case("5", "`eval M --json F/x.json`, F a file", lambda ws: (["eval", str(ws / M), "--seqlen", "16", "--windows", "1", "--json", str(tree(ws, "", {"f": "x"}) / "f" / "x.json")], None)),
    Case("5", "`eval M --json IMM/e.json`, IMM immutable (chattr +i)", lambda ws: (["eval", str(ws / M), "--seqlen", "16", "--windows", "1", "--json", str(immutable(ws) / "e.json")], None)),
    Case("5", "`plan --out IMM/p.json`, IMM immutable", lambda ws: (["plan", "--model", str(ws / M), "--out", str(immutable(ws) / "p.json"), *FAST], None)),
    Case("5", "`run R`, R's out inside an immutable directory", lambda ws: (["run", recipe(ws, immutable(ws) / "run")], None)),
    Case("5", "`prune --out IMM/o`, IMM immutable", lambda ws: (["prune", "--model", str(ws / M), "--out", str(immutable(ws) / "o"), *FAST], None)),
    Case("5", "`export --out IMM/a`, IMM immutable", lambda ws: (["export", str(ws / M), "--format", "onnx", "--out", str(immutable(ws) / "a")], None)),
]  # fmt: skip


def immutable(ws: Path) -> Path:
    path = ws / "imm"
    path.mkdir(exist_ok=True)
    subprocess.run(["chattr", "+i", str(path)], check=True)
    return path


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
        if not p.is_symlink() and (p.is_file() or p.is_dir())
    }


def run_case(case: Case, root: Path, model: Path, scratch: Path) -> dict[str, object]:
    ws = Path(tempfile.mkdtemp(dir=scratch))
    shutil.copytree(model, ws / "models" / "m")
    shutil.copytree(model.parent / "pruned", ws / "p")
    (ws / "models" / "notes.txt").write_text("someone else's file\n")
    argv, cwd = case.make(ws)
    before = digest(ws)
    code = f"import sys; sys.path.insert(0, {str(root)!r}); from runtime_bench.cli import main; sys.exit(main())"
    env = {**os.environ, "SLIMPACK_CACHE": str(scratch / "cache")}
    try:
        done = subprocess.run([sys.executable, "-c", code, "-q", *argv], cwd=cwd or ws, capture_output=True,
                              text=True, env=env, timeout=600)  # fmt: skip
    finally:
        subprocess.run(["chattr", "-i", str(ws / "imm")], capture_output=True)
    after = digest(ws)
    changed = sorted(k for k, v in before.items() if after.get(k) != v)
    written = sorted(k for k in after if k not in before and not any(k.startswith(w) for w in case.may_write))
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    last = lines[-1].replace(str(ws), "WS") if lines else ""
    return {
        "class": case.klass, "case": case.name, "exit": done.returncode, "stderr_lines": len(lines),
        "last_line": last[:240], "inputs_changed": changed, "left": written,
    }  # fmt: skip


def outcome(r: dict[str, object]) -> str:
    changed, left = r["inputs_changed"], r["left"]
    last = re.sub(r"^\d{4}-\d\d-\d\d [\d:,]+ ", "", str(r["last_line"]))
    last = re.sub(r"/tmp/drill-paths-[^/]+/tmp[^/']+", "WS", last).replace("|", "\\|")
    said = f"; {r['stderr_lines']} stderr line{'s' * (r['stderr_lines'] != 1)}: `{last}`" if r["stderr_lines"] else ""
    harm = (f"; **changed or removed: {', '.join(changed[:4])}{' …' if len(changed) > 4 else ''}**" if changed else "")
    harm += f"; left: {', '.join(left[:3])}{' …' if len(left) > 3 else ''}" if left else ""
    return f"exit {r['exit']}{said}{harm}{'' if changed or left else '; nothing changed, nothing left'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="slimpack checkout")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    parser.add_argument("--before", type=Path, default=None,
                        help="the --json of a run on an older checkout: a before | now table")  # fmt: skip
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import save_tiny, tiny_tokenizer

    scratch = Path(tempfile.mkdtemp(prefix="drill-paths-"))
    model = save_tiny(scratch / "model", tiny_tokenizer())
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(args.root)!r}); from runtime_bench.cli "
                    "import main; sys.exit(main())", "-q", "export", str(model), "--format", "onnx", "--out",
                    str(scratch / "artifact")], check=True, capture_output=True, env={**os.environ, "SLIMPACK_CACHE": str(scratch / "cache")})  # fmt: skip
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(args.root)!r}); from runtime_bench.cli "
                    "import main; sys.exit(main())", "-q", "prune", "--model", str(model), "--method", "magnitude",
                    "--out", str(scratch / "pruned"), *FAST], check=True, capture_output=True)  # fmt: skip
    results = [run_case(c, args.root.resolve(), model, scratch) for c in CASES if args.k in c.name]
    before = {r["case"]: r for r in json.loads(args.before.read_text())} if args.before else {}
    print("| class | case | before | now |\n|---|---|---|---|" if before else "| class | case | outcome |\n|---|---|---|")
    for r in results:
        old = f" {outcome(before[r['case']])} |" if r["case"] in before else " — |" if before else ""
        print(f"| {r['class']} | {r['case']} |{old} {outcome(r)} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
