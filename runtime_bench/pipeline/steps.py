"""Resumable steps, shared by ``slimpack bench sweep`` and ``slimpack run``.

A step has a name, a configuration (plain JSON data: its parameters and the keys of the steps it reads)
and a function that writes its outputs and returns a JSON-able result. `StepCache.run` records
``{key, config, result, seconds}`` in ``<root>/state/<name>.json`` after the function returns; a later call
with the same configuration (same key) whose recorded ``outputs`` all still exist returns the recorded result
without running anything. A step killed half-way has no record (outputs are written atomically by the
functions themselves), so it simply runs again.

Under torchrun (``ranks``) rank 0 owns the records: it decides whether a step is up to date and every rank follows
(the decision and rank 0's result are sent to all, so every rank takes the same path through a run). A step
that runs ``everywhere`` (a stage's walk, an evaluation: work split across ranks) runs on every rank; any other
runs on rank 0 while the others wait for its result (at most ``--rank-timeout``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prune.errors import SlimpackError
from prune.io import fingerprint, write_json_atomic
from prune.ranks import Ranks

log = logging.getLogger(__name__)


def model_key(path: Path) -> str:
    """The key of a source model directory: its path and every file's name and content (`prune.io.fingerprint`:
    small files hashed whole, large ones by their header and sampled blocks) — so model files replaced at the
    same path make every step that read them run again, even with the old size and mtime kept."""
    path = Path(path).resolve()
    files = sorted((p.name, fingerprint(p)) for p in path.iterdir() if p.is_file())
    return f"model:{path}:{step_key(files)}"


def files_key(paths: list[Path]) -> str:
    """The key of the files a run reads beside its model (calibration and evaluation text, a plan): their content."""
    return step_key(sorted((str(p), fingerprint(p)) for p in paths if Path(p).is_file()))


def step_key(config: Any) -> str:
    """A short, stable hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def claim_step_dir(root: Path, names: frozenset[str], what: str) -> None:
    """Make ``root`` a directory of resumable steps (its ``state/``), unless it holds someone else's files: it must
    be new, empty, or already one (`owned_by_steps`); anything else is one line."""
    root = Path(root)
    entries = {p.name for p in root.iterdir()} - {".lock"} if root.is_dir() else set()
    if entries and not owned_by_steps(root, entries, names):
        shown = ", ".join(repr(e) for e in sorted(entries)[:3]) + (", …" if len(entries) > 3 else "")
        raise SlimpackError(
            f"{what} {str(root)!r} is not empty ({shown}) and is not one slimpack wrote (no state/ of its steps); "
            "choose a new or empty --out"
        )
    (root / "state").mkdir(parents=True, exist_ok=True)


def owned_by_steps(root: Path, entries: set[str], names: frozenset[str]) -> bool:
    """Whether ``root`` (holding ``entries``) is a directory of resumable steps that its writer made: only
    ``names`` it writes, and a ``state/`` of step records (`StepCache.run`'s ``{key, config, result}``)."""
    state = Path(root) / "state"
    if not entries <= names or not state.is_dir():
        return False
    records = list(state.glob("*.json"))  # none yet: killed during its first step (`state/` is made first)
    try:
        return all({"key", "result"} <= json.loads(r.read_text()).keys() for r in records)
    except (OSError, ValueError, AttributeError):
        return False


@dataclass
class StepResult:
    key: str
    result: dict[str, Any]
    cached: bool
    seconds: float


class StepCache:
    """Runs named steps under ``root``, skipping those whose record matches (see the module docstring)."""

    def __init__(self, root: Path, ranks: Ranks | None = None) -> None:
        self.root = Path(root)
        self.state = self.root / "state"
        self.ranks = ranks if ranks is not None else Ranks()

    def record(self, name: str) -> dict[str, Any] | None:
        path = self.state / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def up_to_date(self, name: str, key: str) -> dict[str, Any] | None:
        """The step's record, if its key matches and its outputs exist."""
        record = self.record(name)
        if record is not None and record.get("key") == key:
            if all(Path(p).exists() for p in record["result"].get("outputs", [])):
                log.info("%s: up to date, skipped (%s)", name, self.state / f"{name}.json")
                return record
        return None

    def run(self, name: str, config: Any, fn: Callable[[], dict[str, Any]], everywhere: bool = False) -> StepResult:
        key = step_key(config)
        ranks = self.ranks
        record = self.up_to_date(name, key) if ranks.writes else None
        cached = ranks.broadcast_ints([record is not None], 0, f"step {name}")[0] == 1
        if not cached:
            log.info("%s: running", name)
            start = time.perf_counter()
            result = fn() if ranks.writes or everywhere else {}
            seconds = time.perf_counter() - start
            if not everywhere:
                ranks.wait_for_writer(f"step {name}")
            if ranks.writes:
                record = {"key": key, "config": json.loads(json.dumps(config, default=str)), "result": result,
                          "seconds": seconds}  # fmt: skip
                write_json_atomic(self.state / f"{name}.json", record)
        if ranks.world > 1:  # every rank goes on with rank 0's record
            record = json.loads(ranks.gather_text(json.dumps(record) if ranks.writes else "", f"step {name}")[0])
        assert record is not None
        return StepResult(key, record["result"], cached, float(record.get("seconds", 0.0)))
