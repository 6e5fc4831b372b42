"""``slimpack inspect``: re-measure sparsity from the saved safetensors and check the manifest's hashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prune.errors import SlimpackError
from prune.manifest import MANIFEST, Manifest
from prune.sparsity import sparsity_summary, weight_sparsity


def read_weights(directory: Path, names: list[str] | None) -> dict[str, dict[str, Any]]:
    """Sparsity of the named linears (module names; None: every prunable linear), each read alone through the
    directory's checkpoint kind (`prune.lazy`: plain, structured, or GPTQ decoded as `load_gptq` decodes it)."""
    from prune.architecture import adapter_for
    from prune.lazy import LazyCheckpoint
    from prune.model_config import read_config
    from prune.models import checkpoint_kind

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
    out: dict[str, dict[str, Any]] = {}
    for name in names if names is not None else linears:
        out[name] = weight_sparsity(lazy.read([f"{name}.weight"], None, "cpu")[f"{name}.weight"])
    return out


def inspect_dir(directory: Path, progress: bool = True) -> dict[str, Any]:
    """Measured sparsity of every prunable linear, and the files against the manifest's sha256 (changed,
    missing, and files it does not list) — or, without a manifest, that there is nothing to verify against."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SlimpackError(f"{str(directory)!r} is not a directory; pass a model directory written by slimpack")
    manifest = Manifest.read_if_any(directory)
    names = list(manifest.sparsity.get("modules", {})) or None if manifest else None
    measured = sparsity_summary(read_weights(directory, names))
    files: dict[str, Any] = {"verified": False, "changed": [], "missing": [], "unlisted": []}
    if manifest is None:
        files["note"] = f"no {MANIFEST} in the directory: nothing to verify the files against"
    else:
        files.update(manifest.check_files(directory, progress))
        files["verified"] = not (files["changed"] or files["missing"] or files["unlisted"])
    return {
        "directory": str(directory),
        "method": manifest.method.name if manifest else "?",
        "pattern": manifest.pattern if manifest else "?",
        "sparsity": measured,
        "manifest_overall": manifest.sparsity.get("overall") if manifest else None,
        "files": files,
    }
