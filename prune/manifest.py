"""The ``slimpack.json`` manifest every stage writes beside its model directory."""

from __future__ import annotations

import json
import platform
import resource
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from prune.errors import SlimpackError
from prune.io import hash_files, write_json_atomic

MANIFEST = "slimpack.json"


def slimpack_version() -> str:
    try:
        return version("slimpack")
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "0+unknown"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def environment() -> dict[str, str]:
    import torch
    import transformers

    return {
        "slimpack": slimpack_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": str(torch.get_num_threads()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_manifest(directory: Path, body: dict[str, Any]) -> dict[str, Any]:
    """Add the sha256 of every file in ``directory`` and write the manifest there."""
    manifest = {**body, "files": hash_files(directory, exclude=(MANIFEST,))}
    write_json_atomic(directory / MANIFEST, manifest)
    return manifest


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise SlimpackError(f"{str(directory)!r} has no {MANIFEST}; pass a directory written by slimpack")
    with open(path) as fh:
        return json.load(fh)


def verify_files(directory: Path, manifest: dict[str, Any]) -> list[str]:
    """Names of files whose sha256 differs from the manifest (or that are missing)."""
    actual = hash_files(Path(directory), exclude=(MANIFEST,))
    return [name for name, digest in manifest.get("files", {}).items() if actual.get(name) != digest]
