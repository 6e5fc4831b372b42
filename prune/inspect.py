"""``slimpack inspect``: re-measure sparsity from the saved safetensors and check the manifest's hashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from prune.errors import SlimpackError
from prune.manifest import Manifest
from prune.report import module_sparsity


def read_weights(directory: Path, names: list[str] | None) -> dict[str, torch.Tensor]:
    """Weights of the named linears (module names), or of every decoder-block 2-D weight."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise SlimpackError(f"{str(directory)!r} holds no *.safetensors; pass a model directory")
    wanted = {f"{n}.weight": n for n in names} if names is not None else None
    out: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as fh:
            for key in fh.keys():
                if wanted is not None and key in wanted:
                    out[wanted[key]] = fh.get_tensor(key)
                elif wanted is None and ".layers." in key and key.endswith("proj.weight"):
                    out[key.removesuffix(".weight")] = fh.get_tensor(key)
    missing = [n for n in names or [] if n not in out]
    if missing:
        raise SlimpackError(
            f"{str(directory)!r} lacks weights the manifest lists, e.g. {missing[0]!r}; the directory is damaged"
        )
    return {n: out[n] for n in names} if names is not None else out


def inspect_dir(directory: Path) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.is_dir():
        raise SlimpackError(f"{str(directory)!r} is not a directory; pass a model directory written by slimpack")
    manifest = Manifest.read_if_any(directory)
    names = list(manifest.sparsity.get("modules", {})) or None if manifest else None
    measured = module_sparsity(read_weights(directory, names))
    bad = manifest.mismatched_files(directory) if manifest else []
    return {
        "directory": str(directory),
        "method": manifest.method.name if manifest else "?",
        "pattern": manifest.pattern if manifest else "?",
        "sparsity": measured,
        "manifest_overall": manifest.sparsity.get("overall") if manifest else None,
        "files_ok": not bad,
        "files_mismatched": bad,
    }
