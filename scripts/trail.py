"""Follow one value of the command line through slimpack's files (issue #28: "following --sparsity visits each file
once"): every entry into a slimpack file — a call from another file — of a function that receives the value, as an
argument or inside one (a dataclass field or a dict value, two levels deep; the parsed command line itself is not
followed), in call order, up to the first call of ``--until FILE:FUNCTION`` (where the value meets the weights).

    python scripts/trail.py --until prune/masks.py:select_prune_mask 0.37 -- \
        prune --model M --method sparsegpt --sparsity 0.37 --out OUT

prints the stops (a file and the functions entered there) and how many files were entered more than once.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def holds(x: Any, value: float, depth: int = 0) -> bool:
    if isinstance(x, int | float) and not isinstance(x, bool) and x == value:
        return True
    if depth >= 2 or isinstance(x, argparse.Namespace):
        return False
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return any(holds(getattr(x, f.name, None), value, depth + 1) for f in dataclasses.fields(x))
    if isinstance(x, dict):
        return any(holds(v, value, depth + 1) for v in list(x.values())[:5000])
    return False


def follow(value: float, argv: list[str], until: str) -> tuple[int, list[tuple[str, list[str]]]]:
    """Run ``slimpack ARGV``; its exit status and the stops of ``value`` (file, functions) up to ``until``."""
    from runtime_bench.cli import main

    entries: list[tuple[str, str]] = []

    def tracer(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call" or any(f"{r}:{fn}" == until for r, fn in entries):
            return None
        code = frame.f_code
        path = Path(code.co_filename)
        if not path.is_relative_to(ROOT) or {".venv", "tests"} & set(path.relative_to(ROOT).parts):
            return None
        if frame.f_back is not None and frame.f_back.f_code.co_filename == code.co_filename:
            return None  # a call inside the file it is already in: not an entry
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        if any(holds(frame.f_locals.get(n), value) for n in names):
            entries.append((str(path.relative_to(ROOT)), code.co_name))
        return None

    sys.settrace(tracer)
    try:
        rc = main(argv)
    finally:
        sys.settrace(None)
    stops: list[tuple[str, list[str]]] = []
    for rel, fn in entries:
        if stops and stops[-1][0] == rel:
            stops[-1][1].append(fn)
        else:
            stops.append((rel, [fn]))
    return rc, stops


def revisited(stops: list[tuple[str, list[str]]]) -> list[str]:
    """The files entered more than once."""
    files = [f for f, _ in stops]
    return sorted({f for f in files if files.count(f) > 1})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--until", required=True, help="FILE:FUNCTION where the trail ends")
    parser.add_argument("value", type=float)
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="-- then slimpack's arguments")
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    rc, stops = follow(args.value, ["-q", *argv], args.until)
    for rel, fns in stops:
        print(f"{rel}: {', '.join(dict.fromkeys(fns))}")
    again = revisited(stops)
    print(
        f"exit {rc}: {len(stops)} stops in {len({f for f, _ in stops})} files; entered again: {', '.join(again) or 'none'}"
    )
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
