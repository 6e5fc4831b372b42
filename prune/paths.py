"""The two path rules of slimpack, each in one place.

1. **Which paths may be written** (`check_writes`). Every path a command writes — ``--out``, ``--json``,
   ``--png``, ``--offload-dir``, ``--graph-cache``, ``--copy-to``, a recipe's ``out``, and what is written beside
   them (a plan's PNG) — is refused, before any work, when it

   - is, holds, or lies inside an input (model directory, artifact, reference, recipe, plan, data file), or
     is or holds the resolved target of an input's file (the Hugging Face cache's ``blobs/``, which a
     snapshot's symlinks point into);
   - is a directory where a file is written, or a file where a directory is written;
   - cannot be written: probed by creating and removing a file in the nearest existing directory, so that a
     read-only mount, an immutable directory (``chattr +i``) and permissions are judged as they behave, for
     root too.

   The command line declares each path option as `Reads` or `Writes` (`prune.cli`); `prune.cli.main` collects
   them and calls `check_writes` before the command runs. The package APIs call it again for their own
   outputs (a recipe's, an API caller's).

2. **Which files a directory may name** (`inside`). Every file that an index (``model.safetensors.index.json``),
   a manifest (``slimpack.json``) or ``export.json`` lists is a relative path inside that directory — no
   absolute path, no ``..`` — and a regular file (not a FIFO, device or directory). Anything else is refused in
   one line that names the entry and quotes nothing of any file's content. Symlinks inside the directory are
   followed (a hub snapshot's files are links into ``blobs/``).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from prune.errors import SlimpackError

WALK_LIMIT = 20_000  # entries of one input directory searched for symlinks (a model directory has a few dozen)


@dataclass(frozen=True)
class Output:
    """A path a command will write: the option that names it, and whether it is a file or a directory."""

    option: str  # "--out", "--json", "recipe out", …
    path: Path
    kind: str = "dir"  # "dir" | "file"


def labelled_path(item: str) -> tuple[str | None, Path]:
    """``NAME=PATH`` → (NAME, PATH); a plain path (or one whose whole text exists, ``=`` and all) → (None, it). A
    NAME holds no ``/``."""
    name, eq, rest = item.partition("=")
    if eq and name and rest and "/" not in name and not Path(item).exists():
        return name, Path(rest)
    return None, Path(item)


def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(path))


def _link_targets(root: Path) -> set[Path]:
    """The resolved targets of the symlinks under ``root`` (a hub snapshot's files live in ``blobs/``)."""
    targets: set[Path] = set()
    seen = 0
    for directory, dirs, files in os.walk(root):
        for name in (*files, *dirs):
            seen += 1
            entry = Path(directory) / name
            if entry.is_symlink():
                targets.add(_real(entry))
        if seen > WALK_LIMIT:
            break
    return targets


def _article(option: str) -> str:
    return "an" if option.lstrip("-")[:1].lower() in tuple("aeiou") else "a"


def check_apart(output: Output, inputs: Iterable[Path | str]) -> None:
    """One line if writing ``output`` would touch an input: it is, holds or lies inside one (symlinks resolved),
    or is or holds the resolved target of a symlink inside one."""
    where = _real(output.path)
    for given in inputs:
        source = _real(given)
        relation = None
        if where == source:
            relation = "is"
        elif where in source.parents:
            relation = "holds"
        elif source in where.parents:
            relation = "lies inside"
        elif source.is_dir():
            for target in _link_targets(Path(given)):
                if where == target or where in target.parents or target in where.parents:
                    how = "is" if where == target else "holds" if where in target.parents else "lies inside"
                    relation = f"{how} a linked file or folder ({str(target)!r}) of"
                    break
        if relation is not None:
            raise SlimpackError(
                f"output {str(output.path)!r} ({output.option}) {relation} the input {str(given)!r}; writing it "
                f"would change the input — choose {_article(output.option)} {output.option} outside it"
            )


def _nearest_existing(path: Path) -> Path:
    existing = Path(os.path.abspath(path))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def check_kind(output: Output) -> None:
    """One line if ``output`` exists as the other kind (a directory where a file is written, or the reverse), or
    is not a regular file or directory (a FIFO, a device)."""
    path = output.path
    if not path.exists():
        return
    if output.kind == "file" and path.is_dir():
        raise SlimpackError(
            f"{output.option} {str(path)!r} is a directory; pass a file path (e.g. {str(path / 'result.json')!r})"
        )
    if output.kind == "dir" and not path.is_dir():
        raise SlimpackError(f"{output.option} {str(path)!r} is a file, not a directory; pass a directory")
    if output.kind == "file" and not stat.S_ISREG(path.stat().st_mode):
        raise SlimpackError(f"{output.option} {str(path)!r} is not a regular file; pass a file path")


def check_writable(output: Output) -> None:
    """One line if nothing can be created where ``output`` goes: a file is created and removed in the nearest
    existing directory (the output itself when it is an existing directory; an existing file's directory, where
    its replacement is renamed into place)."""
    probe_dir = _nearest_existing(output.path)
    if probe_dir == Path(os.path.abspath(output.path)) and output.kind == "file" and probe_dir.is_file():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():  # a file on the way: ``a/file.txt/out``
        raise SlimpackError(
            f"{output.option} {str(output.path)!r} cannot be created: {str(probe_dir)!r} is a file; pass another path"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".slimpack-probe-", dir=probe_dir)
    except OSError as err:
        raise SlimpackError(
            f"{output.option} {str(output.path)!r} is not writable ({str(probe_dir)!r}: {err.strerror}); pass a "
            "writable location"
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_writes(outputs: Sequence[Output], inputs: Iterable[Path | str]) -> None:
    """The one rule of what may be written (module docstring, 1.), for every output before any work."""
    inputs = [Path(i) for i in inputs if i is not None and Path(i).exists()]
    for output in outputs:
        check_apart(output, inputs)
    for output in outputs:
        check_kind(output)
        check_writable(output)


def inside(directory: Path, name: object, listed_in: Path | str) -> Path:
    """The file ``name`` that ``listed_in`` (an index, a manifest, ``export.json``) lists, as a path inside
    ``directory`` (module docstring, 2.). It need not exist; if it exists it must be a regular file."""
    shown = repr(name)[:80] if isinstance(name, str) else type(name).__name__
    fix = "the directory is damaged or was edited — copy it again"
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise SlimpackError(f"{str(listed_in)!r} lists a file name that is not a path ({shown}); {fix}")
    parts = PurePosixPath(name)
    if parts.is_absolute() or ".." in parts.parts or "\\" in name or Path(name).is_absolute():
        raise SlimpackError(
            f"{str(listed_in)!r} lists {shown}, a file outside {str(directory)!r}; every listed file must lie "
            f"inside it — {fix}"
        )
    path = Path(directory) / parts
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        what = "a directory" if path.is_dir() else "not a regular file (a FIFO or a device?)"
        raise SlimpackError(f"{str(listed_in)!r} lists {shown}, which is {what}; {fix}")
    return path


def regular_file(path: Path, what: str, hint: str) -> Path:
    """``path`` if it is a regular file (symlinks followed); else one line — a FIFO is never opened (it would
    block), a directory or device never read."""
    path = Path(path)
    if not path.exists():
        raise SlimpackError(f"{what} {str(path)!r} does not exist; {hint}")
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise SlimpackError(f"{what} {str(path)!r} is {kind}; {hint}")
    return path
