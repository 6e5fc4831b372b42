"""Engines: the one way to run each exported artifact (see `runtime_bench.engines.base`)."""

from __future__ import annotations


def load_engines() -> None:
    """Import every engine module so that each registers itself in ``ENGINES``."""
    from runtime_bench.engines import (  # noqa: F401
        deepsparse,  # noqa: F401
        ort,
        torch_engine,
    )
