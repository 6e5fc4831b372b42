"""Engines: the one way to run each exported artifact (see `runtime_bench.engines.base`)."""

from __future__ import annotations

from typing import Any


def load_engines() -> None:
    """Import every engine module so that each registers itself in ``ENGINES``."""
    from runtime_bench.engines import (  # noqa: F401
        deepsparse,
        ort,
        torch_engine,
    )


def open_artifact(artifact: Any, threads: int | None = None) -> Any:
    """The engine named by ``artifact``'s manifest, loaded with it (``threads``: the runtime's default if None)."""
    from runtime_bench.engines.base import ENGINES

    load_engines()
    engine = ENGINES.build(artifact.engine, {"threads": threads} if threads else {})
    engine.load(artifact)
    return engine
