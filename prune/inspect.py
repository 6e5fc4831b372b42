"""``slimpack inspect``: re-measure sparsity from the saved safetensors and check the manifest's hashes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prune.architecture import adapter_for
from prune.errors import SlimpackError
from prune.lazy import LazyCheckpoint
from prune.manifest import MANIFEST, Manifest
from prune.model_config import read_config
from prune.models import checkpoint_kind
from prune.sparsity import SparsityRecord, WeightSparsity


def read_weights(directory: Path, names: list[str] | None) -> dict[str, WeightSparsity]:
    """Sparsity of the named linears (module names; None: every prunable linear), each read alone through the
    directory's checkpoint kind (`prune.lazy`: plain, structured, or GPTQ decoded as `load_gptq` decodes it)."""
    kind = checkpoint_kind(directory)
    codec = kind.codec(read_config(directory))
    if codec is None:
        raise SlimpackError(f"{str(directory)!r} is a {kind.name} checkpoint, which inspect cannot read")
    lazy = LazyCheckpoint.open(directory, codec)  # every tensor present and of its shape, or named
    linears = list(adapter_for(lazy.model).named_linears(lazy.model))
    missing = [n for n in names or [] if n not in linears]
    if missing:
        raise SlimpackError(
            f"{str(directory)!r} lacks weights the manifest lists, e.g. {missing[0]!r}; the directory is damaged"
        )
    out: dict[str, WeightSparsity] = {}
    for name in names if names is not None else linears:
        out[name] = WeightSparsity.of(lazy.read([f"{name}.weight"], None, "cpu")[f"{name}.weight"])
    return out


@dataclass
class FileCheck:
    """The directory's files against the manifest's sha256 (`prune.manifest.Manifest.check_files`); ``note``:
    why they were not verified (no manifest)."""

    verified: bool = False
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    note: str | None = None


@dataclass
class InspectReport:
    """``slimpack inspect``'s result (its ``--json``): the sparsity measured from the weights, the manifest's
    claim, and the file check."""

    directory: str
    method: str
    pattern: str
    sparsity: SparsityRecord
    manifest_overall: float | None
    files: FileCheck

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sparsity"] = self.sparsity.to_dict()
        data["files"] = {k: v for k, v in data["files"].items() if v is not None}
        return data


def inspect_dir(directory: Path, progress: bool = True) -> InspectReport:
    """Measured sparsity of every prunable linear, and the files against the manifest's sha256 (changed,
    missing, and files it does not list) — or, without a manifest, that there is nothing to verify against."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SlimpackError(f"{str(directory)!r} is not a directory; pass a model directory written by slimpack")
    manifest = Manifest.read_if_any(directory)
    names = list(manifest.sparsity.modules or {}) or None if manifest else None
    measured = SparsityRecord.of(read_weights(directory, names))
    if manifest is None:
        files = FileCheck(note=f"no {MANIFEST} in the directory: nothing to verify the files against")
    else:
        found = manifest.check_files(directory, progress)
        files = FileCheck(not any(found.values()), found["changed"], found["missing"], found["unlisted"])
    return InspectReport(
        directory=str(directory),
        method=manifest.method.name if manifest else "?",
        pattern=manifest.pattern if manifest else "?",
        sparsity=measured,
        manifest_overall=manifest.sparsity.overall if manifest else None,
        files=files,
    )
