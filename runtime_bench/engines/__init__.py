"""Engines: the one way to run each exported artifact (see `runtime_bench.engines.base`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from export.artifact import Artifact
from prune.errors import SlimpackError
from prune.models import load_model
from runtime_bench.engines.base import ENGINES
from runtime_bench.engines.torch_engine import TorchEngine

# Engine constructor options for benchmarks: DeepSparse compiles only the graphs generation uses; onnxruntime
# prepacks its weights (its fastest setting, whatever the model's size).
BENCH_ENGINE_OPTIONS: dict[str, dict[str, Any]] = {"deepsparse": {"lazy": True}, "onnxruntime": {"weights": "packed"}}


def parse_engine_options(items: list[str]) -> dict[str, dict[str, Any]] | None:
    """``ENGINE.KEY=VALUE`` items (``--engine-option``) → ``{engine: {key: value}}``, values read as YAML scalars;
    None if there are none. A bad key or value is named when the engine is built (`prune.registry.Registry`)."""
    import yaml

    if not items:
        return None
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        engine, dot, name = key.partition(".")
        if not (sep and dot and engine and name):
            raise SlimpackError(
                f"--engine-option {item!r} is not ENGINE.KEY=VALUE, e.g. deepsparse.kv_cache=decode-only"
            )
        options.setdefault(engine, {})[name] = yaml.safe_load(value)
    return options


def open_artifact(
    artifact: Artifact, threads: int | None = None, options: dict[str, dict[str, Any]] | None = None
) -> Any:
    """The engine named by ``artifact``'s manifest, loaded with it (``threads``: the runtime's default if None;
    ``options``: constructor options per engine name, e.g. ``{"deepsparse": {"lazy": True}}``)."""
    kwargs = {**(options or {}).get(artifact.engine, {}), **({"threads": threads} if threads else {})}
    engine = ENGINES.build(artifact.engine, kwargs)
    engine.load(artifact)
    return engine


PATH_KINDS = "an artifact of `slimpack export`, a model directory or an ONNX model in optimum's layout"


def engine_of(path: Path) -> str:
    """The engine `open_engine` runs ``path`` in — an artifact: the one its ``export.json`` names; an ONNX model:
    onnxruntime; a model directory: torch — found without loading it; one line for a path it cannot run."""
    path = Path(path)
    if not path.exists():
        raise SlimpackError(f"{str(path)!r} does not exist; pass {PATH_KINDS}")
    if Artifact.exists(path):
        return Artifact.open(path).engine  # one line for a damaged export.json
    if (path if path.suffix == ".onnx" else path / "model.onnx").is_file():
        return "onnxruntime"
    if (path / "config.json").is_file():
        return "torch"
    raise SlimpackError(f"{str(path)!r} is neither an artifact, a model directory nor an ONNX model; pass {PATH_KINDS}")


def open_engine(path: Path, threads: int | None, options: dict[str, dict[str, Any]] | None = None) -> Any:
    """An engine for ``path`` (`engine_of`: an artifact, an optimum-layout ONNX model, or a model directory in
    torch eager; ``options``: as for `open_artifact`)."""
    path = Path(path)
    engine_name = engine_of(path)
    if Artifact.exists(path):
        return open_artifact(Artifact.open(path), threads, options)
    if engine_name == "onnxruntime":
        engine = ENGINES.build("onnxruntime", {"threads": threads} if threads else {})
        engine.load_file(path if path.suffix == ".onnx" else path / "model.onnx")
        return engine

    engine = TorchEngine.from_model(load_model(path).model)
    engine.threads = threads
    return engine


def unavailable(engine: str, timing: bool = False) -> str | None:
    """Why ``engine`` cannot run on this machine (its runtime is not installed) or, with ``timing``, cannot
    be timed meaningfully (2:4 kernels without CUDA); None when it can."""
    cls = ENGINES.get(engine)
    return cls.timing_unavailable() if timing else cls.unavailable()
