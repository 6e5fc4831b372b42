"""The package API behind ``slimpack export``: a model directory in, a runnable artifact directory out.

Every format is a registered `Exporter` (``EXPORTERS``). `export_model` checks the source before any work,
exports into a temporary directory beside ``--out`` and renames it into place only when it is complete,
then writes ``export.json``: format, the engine that runs it, source, export seconds, bytes on disk, and the
zeros of every prunable weight counted back from the artifact's own files beside the source's.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.artifact import EXPORT_MANIFEST, ExportRecord
from export.base import EXPORTERS, StreamingExporter, TensorwiseExporter, streaming_formats, zero_summary
from export.graph_cache import GraphCache
from prune.errors import SlimpackError
from prune.io import (
    atomic_output_dir,
    check_output_dir,
    directory_bytes,
    hash_files,
    write_json_atomic,
)
from prune.lazy import output_bytes
from prune.manifest import Manifest, environment, peak_rss_mib
from prune.model_config import drop_remote_code, read_config
from prune.spec import asked_store
from prune.store import choose_store, open_store

log = logging.getLogger(__name__)

# Files copied next to every artifact so that it is self-contained (tokenizer, config for optimum).
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


@dataclass(frozen=True)
class ExportConfig:
    model: str
    format: str
    out: Path
    overwrite: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    graph_cache: Path | None = None  # traced graphs reused across models of one shape (`export.graph_cache`)
    stream: bool | None = None  # True: never the whole model (traced on a skeleton, weights written tensor by
    # tensor); False: loaded whole; None: chosen from the model's size (`prune.store.choose_store`)
    progress: bool = True


def copy_side_files(model_dir: Path, out: Path) -> None:
    """`SIDE_FILES` of ``model_dir`` into ``out``; config.json and tokenizer_config.json without ``auto_map``
    (`drop_remote_code`: the code it names is not copied)."""
    import json

    for name in SIDE_FILES:
        if (model_dir / name).is_file() and not (out / name).exists():  # a format's own config.json is kept
            shutil.copy2(model_dir / name, out / name)
    for config in (out / "config.json", out / "tokenizer_config.json"):
        if config.is_file() and drop_remote_code(data := json.loads(config.read_text())):
            write_json_atomic(config, data)


def export_model(config: ExportConfig) -> ExportRecord:
    """Export ``config.model`` as ``config.format`` into ``config.out``; returns the record written there
    (``export.json``)."""
    exporter = EXPORTERS.build(config.format, config.options)
    model_dir = Path(config.model)
    read_config(model_dir)  # missing, damaged, a FIFO: one line
    # every format holds floats as fp32 at most, integer codes as stored; a tensorwise one (sparse, hf) as stored
    need = output_bytes(model_dir, None if isinstance(exporter, TensorwiseExporter) else 4)
    check_output_dir(config.out, config.overwrite, [model_dir], need, record=EXPORT_MANIFEST)
    refusal = None
    if not isinstance(exporter, StreamingExporter | TensorwiseExporter):
        refusal = (
            f"--format {config.format} loads the model whole; --stream writes {', '.join(streaming_formats())} "
            "(drop --stream)"
        )
    # a tensorwise format never loads the model: its store is always the streamed one (a skeleton)
    stream = True if isinstance(exporter, TensorwiseExporter) else config.stream
    choice = choose_store(model_dir, asked_store(stream), refusal=refusal)
    exporter.check_source(model_dir)
    store = open_store(model_dir, choice, progress=config.progress)
    before = store.zeros()
    with atomic_output_dir(config.out, config.overwrite, [model_dir], need, record=EXPORT_MANIFEST) as tmp:
        start = time.perf_counter()
        cache = GraphCache(config.graph_cache) if config.graph_cache is not None else None
        details = store.export(exporter, tmp, cache)
        seconds = time.perf_counter() - start
        copy_side_files(model_dir, tmp)
        zeros = zero_summary(before, exporter.count_zeros(tmp, details))
        lost = zeros.modules_losing_zeros
        if lost or zeros.modules_missing:
            raise SlimpackError(
                f"export to {config.format} lost zeros in {len(lost)} weights (e.g. {next(iter(lost), None)}) and "
                f"{len(zeros.modules_missing)} weights; nothing was written — please report this"
            )
        source_manifest = Manifest.read_if_any(model_dir)
        record = ExportRecord(
            format=config.format,
            engine=exporter.engine,
            source=str(model_dir),
            source_stage=source_manifest.stage if source_manifest else None,
            details=details,
            zeros=zeros,
            export_seconds=round(seconds, 2),
            bytes=directory_bytes(tmp),
            sha256=hash_files(tmp, exclude=(EXPORT_MANIFEST,), progress=config.progress),  # verify checks them
            peak_rss_mib=round(peak_rss_mib(), 1),
            environment=environment(),
        )
        record.write(tmp)
    log.info("%s export → %s (%.1f s, %.1f MiB)", config.format, config.out, seconds, record.bytes / 2**20)
    return record
