"""The artifact format, owned by export: an exported directory plus its ``export.json`` (format, the engine that
runs it, source, export seconds, bytes, zeros counted back). `Artifact.open` is the one reader; the one writer
is `export.api.export_model`. Runtimes (`runtime_bench.engines`) read artifacts through this class."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prune.errors import SlimpackError

EXPORT_MANIFEST = "export.json"


@dataclass(frozen=True)
class Artifact:
    """An exported model directory and its manifest (``export.json``)."""

    path: Path
    format: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path) -> Artifact:
        path = Path(path)
        manifest_path = path / EXPORT_MANIFEST
        if not manifest_path.is_file():
            raise SlimpackError(
                f"{str(path)!r} is not an exported artifact (no {EXPORT_MANIFEST}); make one with `slimpack export`"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
            return cls(path=path, format=str(manifest["format"]), manifest=manifest)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise SlimpackError(f"{str(manifest_path)!r} is not an export manifest ({type(err).__name__})") from None

    @staticmethod
    def exists(path: str | Path) -> bool:
        return (Path(path) / EXPORT_MANIFEST).is_file()

    @property
    def engine(self) -> str:
        return str(self.manifest["engine"])

    @property
    def bytes(self) -> int:
        return int(self.manifest["bytes"])

    def check_integrity(self, progress: bool = False) -> dict[str, Any]:
        """What verify checks before any number: every file against the sha256 in ``export.json`` (changed,
        missing, unlisted), then the zeros of the prunable weights counted again, against the source's. An
        artifact exported before sha256s were recorded says so (``files.note``), is not failed for it, and is
        left to its runtime to load (its files may be unreadable)."""
        import export.api  # noqa: F401  (registers the formats)
        from export.base import EXPORTERS
        from prune.io import compare_files

        recorded = self.manifest.get("sha256")
        if isinstance(recorded, dict):
            files: dict[str, Any] = compare_files(self.path, recorded, (EXPORT_MANIFEST,), progress)
            files["ok"] = not (files["changed"] or files["missing"] or files["unlisted"])
        else:
            files = {"ok": True, "note": f"{EXPORT_MANIFEST} records no sha256 (exported by an older slimpack)"}
        zeros: dict[str, Any] = {"ok": True}
        source = self.manifest.get("zeros", {}).get("source_zeros")
        if files["ok"] and source is not None and "note" not in files:  # a changed file's zeros tell nothing more
            counted = EXPORTERS.build(self.format, {}).count_zeros(self.path, self.manifest)
            zeros = {"source": source, "artifact": sum(c["zeros"] for c in counted.values())}
            zeros["ok"] = zeros["artifact"] >= source
        return {"files": files, "zeros": zeros, "ok": files["ok"] and zeros["ok"]}
