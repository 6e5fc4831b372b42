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
