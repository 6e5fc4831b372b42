"""Atomic output directories and file hashes: an output appears complete or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prune.errors import SlimpackError


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Fail early (before any work) if ``out`` exists and may not be replaced."""
    if out.exists() and not overwrite:
        raise SlimpackError(f"output {str(out)!r} already exists; pass --overwrite or choose another --out")
    if out.exists() and not out.is_dir():
        raise SlimpackError(f"output {str(out)!r} exists and is not a directory; choose another --out")


@contextmanager
def atomic_output_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``out``; rename it to ``out`` only when the block succeeds."""
    out = Path(out)
    check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_files(directory: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``directory`` (relative POSIX paths), except the excluded names."""
    return {
        p.relative_to(directory).as_posix(): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in exclude
    }


def directory_bytes(directory: Path) -> int:
    """Size on disk of every file under ``directory``."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def read_safetensors(directory: Path) -> dict[str, Any]:
    """Every tensor of every ``*.safetensors`` file in ``directory`` (shards merged); never unpickles."""
    from safetensors.torch import load_file

    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise SlimpackError(f"{directory} has no .safetensors weights")
    tensors: dict[str, Any] = {}
    for f in files:
        tensors.update(load_file(str(f)))
    return tensors


def external_python(what: str, variable: str, venv: str) -> Path:
    """The interpreter of an external runtime's own environment: ``$variable``, else the virtual environment
    ``venv`` beside the one running now (``.venv`` → ``.venv-deepsparse``: where ``scripts/setup-*.sh`` build
    them); a one-line `SlimpackError` naming the setup script when it is missing."""
    import sys

    path = Path(os.environ.get(variable, Path(sys.prefix).parent / venv / "bin" / "python"))
    if not path.is_file():
        script = f"scripts/setup-{venv.removeprefix('.venv-')}.sh"
        raise SlimpackError(f"{what} environment not found at {path}; create it with `bash {script}` or set {variable}")
    return path
