"""Atomic output directories and file hashes: an output appears complete or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prune.errors import SlimpackError


def check_apart(out: Path, inputs: Sequence[Path | str]) -> None:
    """One line if writing ``out`` would touch an input: ``out`` is one of ``inputs``, holds one, or lies inside
    one (symlinks resolved) — with ``--overwrite`` the input would be deleted."""
    where = Path(os.path.realpath(out))
    for given in inputs:
        source = Path(os.path.realpath(given))
        if where == source or where in source.parents or source in where.parents:
            relation = "is" if where == source else "holds" if where in source.parents else "lies inside"
            raise SlimpackError(
                f"output {str(out)!r} {relation} the input {str(given)!r}; writing it would change the input — "
                "choose an --out outside it"
            )


def check_writable_dir(path: Path, what: str) -> None:
    """One line, before any work, if ``path`` cannot be (or become) a writable directory."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path and not path.is_dir():
        raise SlimpackError(f"{what} {str(path)!r} is a file, not a directory; pass a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SlimpackError(f"{what} {str(path)!r} is not writable ({str(existing)!r}); pass a writable directory")


def check_output_dir(out: Path, overwrite: bool, inputs: Sequence[Path | str] = ()) -> None:
    """Fail early (before any work) if ``out`` exists and may not be replaced, touches an input
    (`check_apart`), cannot be written, or its disk has less free space than the inputs take (an output is
    at least about as big as what it is made from; a disk that fills anyway is one line too: `prune.cli`)."""
    check_apart(out, inputs)
    check_writable_dir(Path(out).parent if not Path(out).exists() else Path(out), "--out")
    existing = Path(os.path.abspath(out))
    while not existing.exists():
        existing = existing.parent
    need = sum(directory_bytes(Path(i)) if Path(i).is_dir() else 0 for i in inputs)
    free = shutil.disk_usage(existing).free
    if need > free:
        raise SlimpackError(
            f"the disk of --out {str(out)!r} has {free / 2**30:.2f} GiB free, less than the {need / 2**30:.2f} GiB "
            "the input takes; free space or choose another --out"
        )
    if out.exists() and not overwrite:
        raise SlimpackError(f"output {str(out)!r} already exists; pass --overwrite or choose another --out")
    if out.exists() and not out.is_dir():
        raise SlimpackError(f"output {str(out)!r} exists and is not a directory; choose another --out")


@contextmanager
def atomic_output_dir(out: Path, overwrite: bool = False, inputs: Sequence[Path | str] = ()) -> Iterator[Path]:
    """Yield a temporary directory beside ``out``; rename it to ``out`` only when the block succeeds. Without
    ``overwrite``, an ``out`` that appeared meanwhile (another process writing it) is left as it is and this
    run fails in one line; with it, the old ``out`` is moved aside and removed after the rename."""
    out = Path(os.path.abspath(out))  # "." and "x/.." named by what they are
    check_output_dir(out, overwrite, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
        if overwrite and out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, out)  # refused by the kernel if a non-empty ``out`` appeared meanwhile
            except OSError as err:
                raise SlimpackError(
                    f"output {str(out)!r} appeared while this run worked (another process writing it?); it was "
                    f"left as it is and this run's result discarded ({err.strerror}) — rerun with another --out"
                ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_orphans(out: Path) -> list[Path]:
    """Remove the temporary siblings of ``out`` (``.NAME.tmp-PID-*``, ``.NAME.old-PID-*``) left by a process
    that was killed: those whose PID no longer runs. A live writer's are left alone. Returns what went."""
    gone = []
    for path in [*out.parent.glob(f".{out.name}.tmp-*"), *out.parent.glob(f".{out.name}.old-*")]:
        pid = path.name.rsplit(".", 1)[-1].split("-")[1] if "-" in path.name.rsplit(".", 1)[-1] else ""
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        gone.append(path)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_text_file(path: Path, what: str, hint: str) -> str:
    """The text of ``path`` (a ``what`` the user named), or one line saying why it cannot be one: missing, a
    directory, unreadable, or not UTF-8 text; ``hint`` says what to pass instead."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problem = "does not exist"
    except IsADirectoryError:
        problem = "is a directory"
    except PermissionError:
        problem = "cannot be read (permission denied)"
    except UnicodeDecodeError as err:
        problem = f"is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})"
    raise SlimpackError(f"{what} {str(path)!r} {problem}; {hint}")


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


def sha256_file(path: Path, chunk: int = 1 << 20, on_chunk: Callable[[int], Any] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
            if on_chunk is not None:
                on_chunk(len(block))
    return h.hexdigest()


def hash_files(directory: Path, exclude: tuple[str, ...] = (), progress: bool = False) -> dict[str, str]:
    """sha256 of every file under ``directory`` (relative POSIX paths), except the excluded names; each file
    read in 1 MiB chunks, with a progress bar over the bytes when ``progress``."""
    from tqdm.auto import tqdm

    files = [p for p in sorted(directory.rglob("*")) if p.is_file() and p.name not in exclude]
    total = sum(p.stat().st_size for p in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="sha256", disable=not progress) as bar:
        out = {}
        for p in files:
            out[p.relative_to(directory).as_posix()] = sha256_file(p, on_chunk=bar.update)
    return out


def compare_files(
    directory: Path, recorded: dict[str, str], exclude: tuple[str, ...] = (), progress: bool = False
) -> dict[str, list[str]]:
    """``directory``'s files against ``recorded`` sha256s: ``changed``, ``missing``, and ``unlisted``
    (present, not recorded)."""
    actual = hash_files(Path(directory), exclude=exclude, progress=progress)
    return {
        "changed": [n for n, digest in recorded.items() if n in actual and actual[n] != digest],
        "missing": [n for n in recorded if n not in actual],
        "unlisted": [n for n in actual if n not in recorded],
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


@contextmanager
def locked_dir(directory: Path, what: str = "run directory") -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (``.lock`` inside it, `fcntl.flock`) for the block; a second
    process fails at once in one line. The kernel drops the lock when the process dies, so a killed run never
    leaves the directory locked."""
    import fcntl

    if directory.exists() and not directory.is_dir():
        raise SlimpackError(f"{what} {str(directory)!r} is a file, not a directory; choose another --out")
    directory.mkdir(parents=True, exist_ok=True)
    fh = open(directory / ".lock", "a+")  # noqa: SIM115 - closed below
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise SlimpackError(
                f"{what} {str(directory)!r} is in use by another slimpack process (pid {holder}); wait for it, "
                "or choose another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()
