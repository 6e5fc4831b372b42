"""The packages are floors: imports only run downward, prune < quant < export < runtime_bench, and inside
runtime_bench the benchmark proper (engines, harness, latency, memory, verify, report) never imports the
pipeline that orchestrates it (`runtime_bench.pipeline`, and the CLI on top); and no two files import each
other, directly or through others (no file-level cycle). Every import of every module is read — top-level and
inside functions alike — so a lazy import cannot hide a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOORS = ("prune", "quant", "export", "runtime_bench")
PIPELINE = ("runtime_bench.pipeline", "runtime_bench.cli")  # the orchestration, above the benchmark proper


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imports_of(path: Path, name: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every import statement in ``path`` (module ``name``; relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def modules() -> list[Path]:
    return sorted(p for floor in FLOORS for p in (ROOT / floor).rglob("*.py"))


def violations(path: Path, name: str) -> list[str]:
    floor = FLOORS.index(name.split(".")[0])
    in_pipeline = any(name == p or name.startswith(p + ".") for p in PIPELINE)
    bad = []
    for line, module in imports_of(path, name):
        top = module.split(".")[0]
        if top in FLOORS and FLOORS.index(top) > floor:
            bad.append(f"{name}:{line} imports {module} (a higher floor)")
        if (
            top == "runtime_bench"
            and not in_pipeline
            and any(module == p or module.startswith(p + ".") for p in PIPELINE)
        ):
            bad.append(f"{name}:{line} imports {module} (the pipeline, above the benchmark proper)")
    return bad


def test_every_floor_has_modules() -> None:
    found = {p.relative_to(ROOT).parts[0] for p in modules()}
    assert found == set(FLOORS)
    assert len(modules()) > 60


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_downward(path: Path) -> None:
    assert violations(path, module_name(path)) == []


def test_the_check_catches_upward_imports(tmp_path: Path) -> None:
    """The rule itself can fail: a lazy upward import, and the benchmark proper importing the pipeline."""
    fake = tmp_path / "probe.py"
    fake.write_text("def f():\n    from export.api import export_model\n    return export_model\n")
    assert violations(fake, "prune.probe") == [
        "prune.probe:2 imports export.api (a higher floor)",
        "prune.probe:2 imports export.api.export_model (a higher floor)",
    ]
    fake.write_text("from .pipeline import run\n")
    assert violations(fake, "runtime_bench.harness") == [
        "runtime_bench.harness:1 imports runtime_bench.pipeline (the pipeline, above the benchmark proper)",
        "runtime_bench.harness:1 imports runtime_bench.pipeline.run (the pipeline, above the benchmark proper)",
    ]
    assert violations(fake, "runtime_bench.pipeline.sweep") == []


def import_graph(paths: list[Path]) -> dict[str, set[str]]:
    """``{module: the project modules it imports}`` (a package is its ``__init__``; ``from a import b`` is an
    edge to ``a.b`` when that is a module, else to ``a``)."""
    names = {module_name(p).removesuffix(".__init__"): p for p in paths}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        found = {module for _, module in imports_of(path, module_name(path))}
        graph[name] = {m for m in found if m in names and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_file_imports_itself_through_others() -> None:
    graph = import_graph(modules())
    assert sum(len(edges) for edges in graph.values()) > 300  # the graph is really read
    assert cycles(graph) == []


def test_the_cycle_check_finds_cycles(tmp_path: Path) -> None:
    """Direct and indirect cycles, a lazy import among them; acyclic chains and self-imports are not cycles."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a", "g"}, "g": set()}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["d", "e"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    pkg = tmp_path / "prune"
    pkg.mkdir()
    (pkg / "x.py").write_text("from prune import y\n")
    (pkg / "y.py").write_text("def f():\n    from prune.x import g\n    return g\n")
    names = {"prune.x": pkg / "x.py", "prune.y": pkg / "y.py"}
    graph = {n: {m for _, m in imports_of(p, n)} & set(names) for n, p in names.items()}
    assert cycles(graph) == [["prune.x", "prune.y"]]


# Files run by another runtime's interpreter, in its own environment (no slimpack installed there).
FOREIGN = ("runtime_bench/external/*.py", "quant/external/*_probe.py", "runtime_bench/engines/deepsparse_worker.py")
OUTSIDE = ("scripts", "tests")  # above every package: they may import any of them, none imports them


def foreign_files() -> list[Path]:
    return sorted(p for pattern in FOREIGN for p in ROOT.glob(pattern) if p.name != "__init__.py")


def room_violations(path: Path, name: str) -> list[str]:
    """An import that leaves the file's room: a foreign file importing slimpack, a package importing scripts/tests."""
    foreign = path in foreign_files()
    bad = []
    for line, module in imports_of(path, name):
        top = module.split(".")[0]
        if foreign and top in FLOORS:
            bad.append(f"{name}:{line} imports {module} (it runs in another runtime's environment)")
        if top in OUTSIDE or (top and (ROOT / "scripts" / f"{top}.py").is_file()):
            bad.append(f"{name}:{line} imports {module} (scripts/ and tests/ sit above every package)")
    return bad


def test_the_rooms_keep_their_imports() -> None:
    """README's layout: the files other runtimes run import nothing of slimpack's; no package imports scripts/ or
    tests/."""
    assert len(foreign_files()) >= 5
    assert [v for path in modules() for v in room_violations(path, module_name(path))] == []


def test_the_room_check_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = ROOT / "quant" / "external" / "gptqmodel_probe.py"
    assert room_violations(probe, "quant.external.gptqmodel_probe") == []
    fake = tmp_path / "x.py"
    fake.write_text("import scale\nfrom tests.conftest import save_tiny\nfrom prune.errors import SlimpackError\n")
    assert [v.split(" (")[0] for v in room_violations(fake, "prune.x")] == [
        "prune.x:1 imports scale",
        "prune.x:2 imports tests.conftest",
        "prune.x:2 imports tests.conftest.save_tiny",
    ]
    monkeypatch.setattr(f"{__name__}.foreign_files", lambda: [fake])
    assert "prune.x:3 imports prune.errors (it runs in another runtime's environment)" in room_violations(
        fake, "prune.x"
    )


# --- one walk over a store: only the store modules know which store a model is in ------------------------------

STORE_MODULES = {"prune.store", "prune.stream", "prune.walker"}  # the stores, their blocks, the walker's default
STORE_INTERNALS = {  # what only a store uses: the streamed path's pieces and the resident blocks
    f"prune.stream.{n}"
    for n in (
        "open_streamed",
        "StreamedBlocks",
        "StreamedForward",
        "streamed_perplexity",
        "plan_streamed_walk",
        "output_writer",
        "finish",
    )  # fmt: skip
} | {"prune.walker.InMemoryBlocks", "prune.store.ResidentStore", "prune.store.StreamedStore"}
WALK_DEFAULTS = {"prune.structured.walk"}  # a walk's default store (its model's blocks in memory)


def store_branches(path: Path, name: str) -> list[str]:
    """Where ``path`` (module ``name``) tells the stores apart: an import of a store's internals, or a condition
    that reads a loaded model's ``.lazy`` (the streamed skeleton's checkpoint)."""
    bad = []
    allowed = {"prune.walker.InMemoryBlocks"} if name in WALK_DEFAULTS else set()
    bad += [f"{name}:{line} imports {m}" for line, m in imports_of(path, name) if m in STORE_INTERNALS - allowed]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.If | ast.IfExp | ast.While):
            for sub in ast.walk(node.test):
                if isinstance(sub, ast.Attribute) and sub.attr == "lazy" and "loaded" in ast.unparse(sub.value):
                    bad.append(f"{name}:{node.lineno} branches on .lazy")
    return bad


def test_only_the_store_knows_which_store_it_is() -> None:
    bad = [v for p in modules() if module_name(p) not in STORE_MODULES for v in store_branches(p, module_name(p))]
    assert not bad, "\n".join(bad)


def test_the_store_check_can_fail(tmp_path: Path) -> None:
    stage = tmp_path / "stage.py"
    stage.write_text(
        "from prune.stream import StreamedBlocks\n\ndef apply(loaded):\n    return 1 if loaded.lazy is None else 2\n"
    )
    assert store_branches(stage, "prune.stage") == [
        "prune.stage:1 imports prune.stream.StreamedBlocks",
        "prune.stage:4 branches on .lazy",
    ]


# --- records are read through their types: no chained string-key reads outside the module that defines them ----

RECORD_OWNERS = {  # modules that define a record (its type, or the JSON layout they write) and may read it raw
    "prune.manifest": "slimpack.json (`Manifest`, its briefs)",
    "runtime_bench.harness": "the benchmark results it writes",
    "runtime_bench.latency": "the latency report it writes",
    "runtime_bench.pipeline.steps": "a step's cache record",
    "export.sparse": "the sparse format's export.json details",
}
NOT_RECORDS = {  # chained reads of data slimpack does not define
    "prune.models": "config.json's quantization_config (transformers')",
    "prune.structured.walk": "the walk's accumulators by unit and statistic",
    "quant.external.autogptq_check": "a safetensors index",
    "runtime_bench.task_files": "a task's dataset document",
}
NOT_YET_TYPED: dict[str, int] = {}  # readers of records still read as dicts, with their count (it may only fall)


def _keyed(node: ast.AST) -> bool:
    """``x["key"]`` or ``x.get("key", …)``."""
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
        and bool(node.args) and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
    )  # fmt: skip


def chained_reads(path: Path) -> list[str]:
    """Every ``a["k"]["l"]`` / ``a.get("k")["l"]`` / ``a["k"].get("l")`` in ``path``: a record read by its layout."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        inner = node.value if isinstance(node, ast.Subscript) else getattr(getattr(node, "func", None), "value", None)
        if _keyed(node) and inner is not None and _keyed(inner):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def record_readers() -> list[Path]:
    return [*modules(), *sorted((ROOT / "scripts").glob("*.py"))]


def test_records_are_read_through_their_types() -> None:
    bad, counts = [], {}
    for path in record_readers():
        name = module_name(path)
        if name in RECORD_OWNERS or name in NOT_RECORDS:
            continue
        reads = chained_reads(path)
        if name in NOT_YET_TYPED:
            counts[name] = len(reads)
        else:
            bad += [f"{name}:{read}" for read in reads]
    assert not bad, "chained string-key reads of a record outside its module:\n" + "\n".join(bad)
    assert counts == NOT_YET_TYPED, "lower NOT_YET_TYPED to the counts now (they may only fall)"


def test_the_chained_read_check_can_fail(tmp_path: Path) -> None:
    reader = tmp_path / "reader.py"
    reader.write_text('def f(m, r):\n    return m["structure"]["units"], r.get("a", {}).get("b"), m["x"], m.x["y"]\n')
    assert chained_reads(reader) == ["2: m['structure']['units']", "2: r.get('a', {}).get('b')"]


# --- registration: one explicit list (pyproject.toml's entry points), no registering by being imported ----------

GROUPS = {  # registry → its entry-point group
    "COMMANDS": "slimpack.commands", "OUTPUT_EVALUATIONS": "slimpack.output_evaluations",
    "RESULT_TABLES": "slimpack.result_tables", "CHECKPOINT_KINDS": "slimpack.checkpoint_kinds",
    "EXPORTERS": "slimpack.formats", "ENGINES": "slimpack.engines",
}  # fmt: skip


def registering_imports(path: Path, name: str) -> list[str]:
    """Where ``path`` registers by import: an import of a slimpack module kept only for what importing it does
    (``# noqa: F401`` on ``import a.b``, or on ``from a import b as _b``), or a ``.register(…)`` into a registry
    whose members pyproject.toml lists."""
    text = path.read_text()
    lines = text.splitlines()
    bad = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        noqa = isinstance(node, ast.Import | ast.ImportFrom) and "noqa: F401" in lines[node.lineno - 1]
        if noqa and isinstance(node, ast.Import) and any(a.name.split(".")[0] in FLOORS for a in node.names):
            bad.append(f"{name}:{node.lineno} imports a module for its side effect")
        if noqa and isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FLOORS:
            if any((a.asname or "").startswith("_") for a in node.names):
                bad.append(f"{name}:{node.lineno} imports a module for its side effect")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register":
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id in GROUPS:
                bad.append(f"{name}:{node.lineno} registers into {owner.id} (list it in pyproject.toml)")
    return bad


def test_registries_are_one_explicit_list() -> None:
    """Every member of a registry filled from other modules is an entry point in pyproject.toml, loaded by name;
    no module registers itself by being imported."""
    from importlib.metadata import entry_points

    bad = [v for path in modules() for v in registering_imports(path, module_name(path))]
    assert bad == [], "\n".join(bad)
    toml = (ROOT / "pyproject.toml").read_text()
    for group in GROUPS.values():
        assert f'[project.entry-points."{group}"]' in toml
        listed = {ep.name for ep in entry_points(group=group)}
        assert listed, f"{group}: reinstall slimpack (pip install -e .) to refresh its entry points"
        for ep in entry_points(group=group):
            ep.load()  # each names an object that exists


def test_the_registration_check_can_fail(tmp_path: Path) -> None:
    fake = tmp_path / "x.py"
    fake.write_text("import quant  # noqa: F401\nfrom export import sparse as _s  # noqa: F401\n"
                    "EXPORTERS.register('x')(object)\nfrom prune.metrics.base import METRICS  # noqa: F401\n")  # fmt: skip
    assert registering_imports(fake, "runtime_bench.x") == [
        "runtime_bench.x:1 imports a module for its side effect",
        "runtime_bench.x:2 imports a module for its side effect",
        "runtime_bench.x:3 registers into EXPORTERS (list it in pyproject.toml)",
    ]


# --- imports at module level, unless a stated reason keeps one inside a function -------------------------------


def lazy_imports(path: Path) -> list[str]:
    """Imports of slimpack modules inside a function without a ``# lazy: reason`` on their line."""
    text = path.read_text()
    lines = text.splitlines()
    bad = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if in_function and isinstance(child, ast.Import | ast.ImportFrom):
                module = child.module if isinstance(child, ast.ImportFrom) else child.names[0].name
                stated = any("# lazy:" in lines[i - 1] for i in range(child.lineno, (child.end_lineno or 0) + 1))
                if module and module.split(".")[0] in FLOORS and not stated:
                    bad.append(f"{path.relative_to(ROOT)}:{child.lineno} imports {module} inside a function")
            visit(child, inside)

    visit(ast.parse(text, filename=str(path)), False)
    return bad


def test_imports_sit_at_module_level() -> None:
    """A slimpack module imports slimpack modules at its top; one inside a function says why (``# lazy: …``,
    e.g. an optional heavy dependency) — the file-level import graph has no cycle to dodge."""
    bad = [v for path in modules() for v in lazy_imports(path)]
    assert bad == [], "\n".join(bad)


def test_the_lazy_import_check_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from prune.errors import E\n    from prune.io import g  # lazy: a reason\n"
                    "    import json\n")  # fmt: skip
    assert lazy_imports(fake) == ["x.py:2 imports prune.errors inside a function"]
