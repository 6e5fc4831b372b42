"""What every export format implements (`Exporter`) and the registry of formats (``EXPORTERS``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from prune.models import LoadedModel
from prune.registry import Registry

ZeroCounts = dict[str, dict[str, int]]  # module → {"zeros": n, "numel": n}


class Exporter(Protocol):
    """One artifact format: what it accepts, how it writes it, and how to count zeros in what it wrote."""

    engine: str

    def check_source(self, model_dir: Path) -> None:
        """Fail (one-line `SlimpackError`) before any work if ``model_dir`` cannot become this format."""

    def export(self, loaded: LoadedModel, model_dir: Path, out: Path) -> dict[str, Any]:
        """Write the artifact into the empty directory ``out``; returns format details for the manifest."""

    def count_zeros(self, out: Path, details: dict[str, Any]) -> ZeroCounts:
        """Zeros of each prunable weight, read back from the files in ``out``."""


EXPORTERS: Registry[type] = Registry("export format")


def is_quantized(model_dir: Path) -> bool:
    config = model_dir / "config.json"
    return config.is_file() and "quantization_config" in json.loads(config.read_text())
