"""The artifact format, owned by export: an exported directory plus its ``export.json`` (format, the engine that
runs it, source, export seconds, bytes, sha256 of every file, zeros counted back), typed as `ExportRecord`.
`Artifact.open` is the one reader (a damaged manifest is one line there, before any work); `ExportRecord.write`
the one writer (called by `export.api.export_model`).
Every file the manifest names resolves inside the directory through `Artifact.file`. Runtimes
(`runtime_bench.engines`) read artifacts through this class."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from export.base import EXPORTERS, ZeroSummary, zero_summary
from prune.errors import SlimpackError
from prune.io import compare_files, write_json_atomic
from prune.paths import inside

log = logging.getLogger(__name__)

EXPORT_MANIFEST = "export.json"
SHA256 = re.compile(r"[0-9a-f]{64}")


def _shown(value: object) -> str:
    """A field's value for a message: a scalar quoted (a string cut at 40 characters), else its JSON kind."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else f"{value[:40]}…")
    return repr(value) if isinstance(value, int | float) else f"a {type(value).__name__}"


def check(path: Path, m: dict[str, Any]) -> None:
    """One line for a field of ``path``'s ``export.json`` (read as ``m``) that no export writes: an unknown format,
    an engine that does not run it, a size that is not a number of bytes, a file entry outside the directory."""
    where = str(path / EXPORT_MANIFEST)
    fix = "the artifact was edited or damaged — export it again with `slimpack export`"
    fmt = m.get("format")
    if not isinstance(fmt, str) or fmt not in EXPORTERS:
        raise SlimpackError(
            f"{where!r} records the format {_shown(fmt)}, not one slimpack exports "
            f"({', '.join(EXPORTERS.names())}); {fix}"
        )
    engine = EXPORTERS.get(fmt).engine
    if m.get("engine") != engine:
        raise SlimpackError(
            f"{where!r} records the format {fmt!r} with the engine {_shown(m.get('engine'))}, but {fmt!r} runs "
            f"in {engine!r}; {fix}"
        )
    size = m.get("bytes", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise SlimpackError(f"{where!r} records bytes {_shown(size)}, not a size in bytes; {fix}")
    files = m.get("files", [])
    if not isinstance(files, list):
        raise SlimpackError(f"{where!r} records files {_shown(files)}, not a list of file names; {fix}")
    for name in ([m["file"]] if "file" in m else []) + files:
        inside(path, name, path / EXPORT_MANIFEST)
    weights = m.get("weights", {})
    if not (isinstance(weights, dict) and all(isinstance(v, str) for v in weights.values())):
        raise SlimpackError(f"{where!r} records weights {_shown(weights)}, not weight names by module; {fix}")
    if len(set(weights.values())) < len(weights):
        raise SlimpackError(f"{where!r} records one weight for two modules (its weights were edited); {fix}")


REQUIRED = ("format", "engine", "source", "source_stage")  # written even when None (``source_stage``: not ours)


@dataclass
class ExportRecord:
    """``export.json``. The format's own fields (its file, weights, opset, layouts …) are ``details``, written at
    the top level where the field ``details`` stands, as every release wrote them. A field an older or edited
    file lacks reads as None, and is not written back; what a runtime needs is checked by `check`, what the
    sha256 can vouch for by `Artifact.unverified`. ``zeros`` is what the export counted; verify counts again
    and never reads it (a damaged one reads as None)."""

    format: str
    engine: str
    source: str | None = None
    source_stage: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    zeros: ZeroSummary | None = None
    export_seconds: float | None = None
    bytes: int = 0
    sha256: Any = None  # {file: digest} as recorded (possibly damaged: `Artifact.unverified` says so)
    peak_rss_mib: float | None = None
    environment: dict[str, Any] | None = None

    @classmethod
    def common(cls) -> list[str]:
        """The fields every format writes, in file order (``details`` marks where the format's own go)."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportRecord:
        known = {k: data[k] for k in cls.common() if k in data and k != "details"}
        zeros = known.pop("zeros", None)
        try:
            known["zeros"] = ZeroSummary(**zeros) if isinstance(zeros, dict) else None
        except TypeError:  # edited: not the fields an export writes
            known["zeros"] = None
        details = {k: v for k, v in data.items() if k not in cls.common()}
        return cls(**known, details=details)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.common():
            value = getattr(self, name)
            if name == "details":
                out.update(value)
            elif value is not None or name in REQUIRED:
                out[name] = asdict(value) if isinstance(value, ZeroSummary) else value
        return out

    def write(self, directory: Path) -> None:
        """``directory/export.json`` (atomically)."""
        write_json_atomic(directory / EXPORT_MANIFEST, self.to_dict())


@dataclass(frozen=True)
class Artifact:
    """An exported model directory and its manifest (``export.json``, `ExportRecord`)."""

    path: Path
    record: ExportRecord

    @property
    def format(self) -> str:
        return self.record.format

    @property
    def details(self) -> dict[str, Any]:
        """The format's own fields of ``export.json`` (its file, weights, …)."""
        return self.record.details

    @classmethod
    def open(cls, path: str | Path) -> Artifact:
        """The artifact at ``path``; one line if its ``export.json`` is not one slimpack wrote (`check`)."""
        path = Path(path)
        manifest_path = path / EXPORT_MANIFEST
        if not manifest_path.is_file():
            raise SlimpackError(
                f"{str(path)!r} is not an exported artifact (no {EXPORT_MANIFEST}); make one with `slimpack export`"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SlimpackError(f"{str(manifest_path)!r} is not an export manifest ({type(err).__name__})") from None
        if not isinstance(manifest, dict):
            raise SlimpackError(
                f"{str(manifest_path)!r} is not an export manifest (a JSON {type(manifest).__name__}, not an object)"
            )
        check(path, manifest)
        return cls(path=path, record=ExportRecord.from_dict(manifest))

    @staticmethod
    def exists(path: str | Path) -> bool:
        return (Path(path) / EXPORT_MANIFEST).is_file()

    def file(self, name: object, listed_in: str = EXPORT_MANIFEST) -> Path:
        """The artifact's file ``name``, as ``listed_in`` (``export.json``, or a format's own manifest) names it:
        inside the directory, or one line (`prune.paths.inside`)."""
        return inside(self.path, name, self.path / listed_in)

    @property
    def model_directory(self) -> bool:
        """Whether the artifact is also a model directory that every command reads (its format says so)."""
        return bool(EXPORTERS.get(self.format).model_directory)

    @property
    def engine(self) -> str:
        return self.record.engine

    @property
    def bytes(self) -> int:
        return int(self.record.bytes)

    def unverified(self) -> str | None:
        """Why ``export.json``'s sha256 cannot vouch for the files (missing, empty, malformed, a name outside
        the artifact), or None."""
        recorded = self.record.sha256
        if not isinstance(recorded, dict) or not recorded:
            what = "no sha256" if recorded is None else f"sha256 as {_shown(recorded)}, not a file → digest table"
            return f"{EXPORT_MANIFEST} records {'an empty sha256' if recorded == {} else what}"
        for name, digest in recorded.items():
            try:
                self.file(name)
            except SlimpackError as err:
                return str(err).split("; ")[0]
            if not (isinstance(digest, str) and SHA256.fullmatch(digest)):
                return f"{EXPORT_MANIFEST} records {_shown(digest)} as the sha256 of {name!r}, not a sha256"
        return None

    def check_files(self, progress: bool = False) -> dict[str, Any]:
        """Every file against the sha256 in ``export.json``: ``changed``, ``missing``, ``unlisted``; ``ok`` when
        none. A sha256 list that is missing or malformed verifies nothing: ``ok`` false, ``verified`` false and
        the reason in ``note``."""
        reason = self.unverified()
        if reason is not None:
            return {"ok": False, "verified": False, "note": f"not verified: {reason}"}
        files: dict[str, Any] = compare_files(self.path, self.record.sha256, (EXPORT_MANIFEST,), progress)
        return {"ok": not (files["changed"] or files["missing"] or files["unlisted"]), "verified": True, **files}

    def check_zeros(self, reference: Callable[[], dict[str, dict[str, int]]]) -> dict[str, Any]:
        """The zeros of each prunable weight counted back from the artifact's files against ``reference()``'s
        (the reference model's, counted from it: called only once the artifact's are counted), module by
        module: none may have fewer zeros or be missing. ``export.json``'s own zero counts are not read."""
        try:
            counted = EXPORTERS.build(self.format, {}).count_zeros(self.path, self.details)
        except Exception as err:  # a file or a field of export.json that no export wrote: nothing to vouch for
            first = (str(err).strip().splitlines() or [""])[0][:120]
            return {"ok": False, "note": f"cannot be counted from the artifact ({type(err).__name__}: {first})"}
        summary = zero_summary(reference(), counted)
        return {
            "source": summary.source_zeros,  # the reference's
            "artifact": summary.exported_zeros,
            "modules_missing": summary.modules_missing,
            "modules_losing_zeros": summary.modules_losing_zeros,
            "ok": not (summary.modules_missing or summary.modules_losing_zeros),
        }

    def check_integrity(
        self, reference: Callable[[], dict[str, dict[str, int]]] | None = None, progress: bool = False
    ) -> dict[str, Any]:
        """What verify checks before any number: the files (`check_files`), then, when they are the ones
        exported and a ``reference`` is given, the zeros (`check_zeros`)."""
        files = self.check_files(progress)
        zeros: dict[str, Any] = {"ok": True, "note": "not counted: no reference model"}
        if not files["ok"]:
            zeros = {"ok": True, "note": "not counted: the files are not the ones exported"}
        elif reference is not None:
            zeros = self.check_zeros(reference)
        return {"files": files, "zeros": zeros, "ok": files["ok"] and zeros["ok"]}

    def require_verified(self, trust_unverified: bool = False) -> None:
        """``eval``'s check before it runs the artifact: one line when a file differs from ``export.json``'s
        sha256, or when there is no valid sha256 to compare with (unless ``trust_unverified``: then a warning)."""
        files = self.check_files()
        if files["ok"]:
            return
        if not files["verified"]:
            if trust_unverified:
                log.warning("%s is %s; running it anyway (--trust-unverified)", self.path, files["note"])
                return
            raise SlimpackError(
                f"{str(self.path)!r} is {files['note']}; export it again, or pass --trust-unverified to run it anyway"
            )
        what = "; ".join(f"{k}: {', '.join(files[k])}" for k in ("changed", "missing", "unlisted") if files[k])
        raise SlimpackError(
            f"{str(self.path)!r} is not the artifact its {EXPORT_MANIFEST} records ({what}); export it again"
        )
