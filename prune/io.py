"""Atomic output directories and file hashes: an output appears complete or not at all."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from prune.errors import SlimpackError
from prune.paths import Output, check_writes, inside

T = TypeVar("T")


def human_bytes(count: float) -> str:
    """``1536`` → ``1.5 KiB``: a size as a person reads it (no "0.00 GiB" for a small file)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.2f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def weight_bytes(directory: Path) -> int:
    """Bytes of the ``*.safetensors`` files of a model directory (what an output made from it rewrites)."""
    return sum(p.stat().st_size for p in Path(directory).glob("*.safetensors") if p.is_file())


def check_output_dir(
    out: Path, overwrite: bool, inputs: Sequence[Path | str] = (), need: int | None = None, record: str | None = None
) -> None:
    """Fail early (before any work) if ``out`` exists and may not be replaced, touches an input
    (`prune.paths.check_writes`), cannot be written, or its disk has less free space than the output will take (``need``
    bytes, estimated by the caller; default: the inputs' weights, rewritten once; a disk that fills anyway is one
    line too: `prune.cli`). ``--overwrite`` replaces only an output slimpack wrote: one holding ``record`` (its
    manifest), or an empty directory — never a directory of someone else's files."""
    check_writes([Output("--out", Path(out), "dir")], inputs)
    existing = Path(os.path.abspath(out))
    while not existing.exists():
        existing = existing.parent
    if need is None:
        need = sum(weight_bytes(Path(i)) if Path(i).is_dir() else 0 for i in inputs)
    free = shutil.disk_usage(existing).free
    if need > free:
        raise SlimpackError(
            f"the disk of --out {str(out)!r} has {human_bytes(free)} free, less than the {human_bytes(need)} the "
            "output will take (estimated); free space or choose another --out"
        )
    if out.exists() and not overwrite:
        raise SlimpackError(f"output {str(out)!r} already exists; pass --overwrite or choose another --out")
    if out.exists() and any(out.iterdir()) and (record is None or not (out / record).is_file()):
        raise SlimpackError(
            f"output {str(out)!r} holds files slimpack did not write (no {record or 'slimpack record'}); --overwrite "
            "replaces only slimpack's own outputs — choose another --out"
        )


@contextmanager
def atomic_output_dir(
    out: Path, overwrite: bool = False, inputs: Sequence[Path | str] = (), need: int | None = None,
    record: str | None = None,
) -> Iterator[Path]:  # fmt: skip
    """Yield a temporary directory beside ``out``; rename it to ``out`` only when the block succeeds. Without
    ``overwrite``, an ``out`` that appeared meanwhile (another process writing it) is left as it is and this
    run fails in one line; with it, the old ``out`` (slimpack's own: ``record`` inside, `check_output_dir`) is
    moved aside and removed after the rename. The directory gets the permissions the umask gives."""
    out = Path(os.path.abspath(out))  # "." and "x/.." named by what they are
    check_output_dir(out, overwrite, inputs, need, record)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
        follow_umask(tmp)
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


def umask() -> int:
    """The process's umask (read from /proc, which leaves it as it is; else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(directory: Path) -> None:
    """Give ``directory`` and everything in it the permissions the umask gives (writers such as ``mkdtemp``,
    ``mkstemp`` and some libraries' savers create 0700 / 0600)."""
    mask = umask()
    os.chmod(directory, 0o777 & ~mask)
    for root, dirs, files in os.walk(directory):  # links are not followed: what they point to is not ours
        for name in dirs:
            if not (Path(root) / name).is_symlink():
                os.chmod(Path(root) / name, 0o777 & ~mask)
        for name in files:
            if not (Path(root) / name).is_symlink():
                os.chmod(Path(root) / name, 0o666 & ~mask)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file (with the permissions the umask gives) and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
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


def from_known(cls: type[T], data: Mapping[str, Any], **given: Any) -> T:
    """The record ``cls`` (a dataclass) from the keys of ``data`` it declares — keys another release wrote are
    ignored — with ``given`` in place of (or beside) them: the nested records the caller read."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in known} | given)


def read_json_record(path: Path, parse: Callable[[Any], T], what: str) -> T:
    """``parse`` of the JSON file ``path`` (a record's ``from_dict``); one line naming the file when it cannot be
    read or is not ``what`` (e.g. "a slimpack run summary")."""
    try:
        return parse(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as err:
        raise SlimpackError(f"{str(path)!r} is not {what} ({type(err).__name__}: {err})") from None


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


WHOLE_HASH_BYTES = 64 * 2**20  # files up to this size are hashed whole by `fingerprint`
SAMPLE_BLOCKS, SAMPLE_BYTES = 32, 64 * 2**10


def fingerprint(path: Path) -> str:
    """What a file holds, cheaply: the sha256 of a small file (≤ 64 MiB) whole; of a large one, its size, its
    first MiB (a safetensors header and the first tensors), 32 blocks of 64 KiB evenly spread and its last
    MiB. A file replaced by another of the same size with the old mtime kept (``cp -p``, ``rsync -a``) gets a
    new fingerprint unless the two agree on every sampled byte."""
    size = Path(path).stat().st_size
    if size <= WHOLE_HASH_BYTES:
        return sha256_file(path)
    h = hashlib.sha256(f"sampled:{size}:".encode())
    with open(path, "rb") as fh:
        spots = [0, *((size - 2**20) * (i + 1) // (SAMPLE_BLOCKS + 1) for i in range(SAMPLE_BLOCKS)), size - 2**20]
        for i, offset in enumerate(spots):
            fh.seek(offset)
            h.update(fh.read(2**20 if i in (0, len(spots) - 1) else SAMPLE_BYTES))
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
    (present, not recorded). Every recorded name must lie inside ``directory`` (`prune.paths.inside`: one line
    naming the manifest that lists it, ``exclude[0]``, otherwise)."""
    listed_in = Path(directory) / (exclude[0] if exclude else "")
    if not isinstance(recorded, dict):
        raise SlimpackError(f"{str(listed_in)!r} records no file → sha256 table; the directory was edited or "
                            "damaged — write it again")  # fmt: skip
    for name in recorded:
        inside(Path(directory), name, listed_in)
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
    path = Path(os.environ.get(variable, Path(sys.prefix).parent / venv / "bin" / "python"))
    if not path.is_file():
        script = f"scripts/setup-{venv.removeprefix('.venv-')}.sh"
        raise SlimpackError(f"{what} environment not found at {path}; create it with `bash {script}` or set {variable}")
    return path


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child killed (``SIGKILL``) when the thread that starts it dies — with its
    process, even by ``kill -9`` (Linux ``PR_SET_PDEATHSIG``, kept across ``exec``); a parent already gone when
    it takes effect ends the child at once. None off Linux. libc is opened here, before the fork."""
    if sys.platform != "linux":  # pragma: no cover
        return None
    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died between the fork and the prctl
            os._exit(1)

    return preexec


def release_freed_heap() -> None:
    """Give the C heap's freed pages back to the kernel (glibc's ``malloc_trim``; nothing where there is none).
    Loading a model frees many temporaries of a few MB, below glibc's mmap threshold, so they stay in the heap and
    in the process's resident memory: 2.4 GiB after loading a 50 % LLaMA-2-7B-shape sparse checkpoint."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None) if sys.platform == "linux" else None
    if trim is not None:
        trim(0)


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
