"""Recipes for ``slimpack run``: which stages run, with which parameters — validated whole before any work.

A recipe is YAML (see ``runtime_bench/recipes/default.yaml``, the embedded default)::

    model: smollm2-135m            # model directory or alias
    out: runs/main                 # the run directory
    data: {dataset: offline, nsamples: 32, seqlen: 512, seed: 0}   # calibration (prune.data.DataSpec)
    eval: {dataset: offline, seqlen: 512, windows: 40}              # perplexity (prune.api.EvalSpec)
    stages:                        # any subset, always run in this order
      prune:    {method: wanda, sparsity: 0.5, allocation: dlp}
      quantize: {method: gptq, bits: 4, group_size: 64}
      export:                      # artifact name → format and source model (dense | prune | quantize)
        onnx: {format: onnx, source: prune}
      verify:   {windows: 8, tokens: 16}
      bench:    {threads: [2], prompt: 128, tokens: 32, rounds: 5}

Every mapping is read into a frozen dataclass by `parse`: an unknown key, a value of the wrong type, an unknown
method / allocation / format / source, or a stage that needs one that is absent is a `SlimpackError` naming
the recipe file and the dotted path of the bad entry.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, Union, get_type_hints

from prune.api import EvalSpec
from prune.data import DataSpec
from prune.errors import SlimpackError
from runtime_bench.stages import BenchSpec

DEFAULT_RECIPE = Path(__file__).with_name("recipes") / "default.yaml"
SOURCES = ("dense", "prune", "quantize")


@dataclass(frozen=True)
class PruneStage:
    method: str = "wanda"
    sparsity: float = 0.5
    pattern: str = "unstructured"
    scope: str | None = None
    allocation: str = "uniform"
    options: dict[str, Any] = field(default_factory=dict)
    allocation_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QuantizeStage:
    method: str = "gptq"
    bits: int = 4
    group_size: int = 128
    sym: bool = True
    act_order: bool = False
    static_groups: bool = False
    checkpoint_format: str = "gptq"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportItem:
    format: str
    source: str = "prune"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifyStage:
    windows: int = 8
    tolerance: float = 0.01
    token_match: float = 1.0
    prompt: int = 32
    tokens: int = 16
    threads: int | None = None


@dataclass(frozen=True)
class BenchStage(BenchSpec):
    """`runtime_bench.stages.BenchSpec` (prompt, tokens, rounds, warmup, batch, seed) and the thread counts."""

    threads: list[int] = field(default_factory=lambda: [2])
    torch: bool = False  # also time the dense and pruned models in eager PyTorch


@dataclass(frozen=True)
class Stages:
    prune: PruneStage | None = None
    quantize: QuantizeStage | None = None
    export: dict[str, ExportItem] = field(default_factory=dict)
    verify: VerifyStage | None = None
    bench: BenchStage | None = None


@dataclass(frozen=True)
class Recipe:
    model: str = "smollm2-135m"
    out: str = "runs/main"
    data: DataSpec = field(default_factory=DataSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    stages: Stages = field(default_factory=Stages)


T = TypeVar("T")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def _coerce(value: Any, hint: Any, where: str, source: str) -> Any:
    """``value`` read as ``hint`` (dataclasses, optionals, lists, dicts, scalars), or a one-line error."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where, source)
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return parse_section(hint, value, where, source)
    if origin is list:
        if not isinstance(value, list):
            raise SlimpackError(f"recipe {source}: {where} must be a list, not {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SlimpackError(f"recipe {source}: {where} must be a mapping, not {value!r}")
        _, item = typing.get_args(hint)
        return {str(k): _coerce(v, item, f"{where}.{k}", source) for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise SlimpackError(f"recipe {source}: {where} must be {_type_name(hint)}, not {value!r}")
    return value


def parse_section(cls: type[T], data: Any, where: str, source: str) -> T:
    """A dataclass from a mapping; unknown keys are an error naming the known ones."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SlimpackError(f"recipe {source}: {where or 'the recipe'} must be a mapping, not {data!r}")
    hints = get_type_hints(cls)
    known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            path = f"{where}.{key}" if where else str(key)
            raise SlimpackError(
                f"recipe {source}: unknown {'stage' if where == 'stages' else 'parameter'} "
                f"{path!r}; known: {', '.join(known)}"
            )
    values = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k, source) for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as err:  # a required field is missing
        raise SlimpackError(f"recipe {source}: {where}: {err}") from None


def check_recipe(recipe: Recipe, source: str) -> None:
    """Semantic checks (names exist in their registries, sources are produced, values in range)."""
    import export.api  # noqa: F401  (registers the export formats)
    from export.base import EXPORTERS
    from quant.grid import QuantSpec
    from runtime_bench.stages import check_pruning

    st = recipe.stages
    try:
        if st.prune is not None:
            check_pruning(
                st.prune.method, st.prune.options, st.prune.allocation, st.prune.allocation_options, st.prune.pattern
            )
            if st.prune.pattern == "unstructured" and not 0 <= st.prune.sparsity < 1:
                raise SlimpackError(f"stages.prune.sparsity {st.prune.sparsity} must be in [0, 1)")
        if st.quantize is not None:
            QuantSpec(
                st.quantize.bits,
                st.quantize.group_size,
                st.quantize.sym,
                st.quantize.act_order,
                st.quantize.static_groups,
            )
        for name, item in st.export.items():
            EXPORTERS.get(item.format)
            if item.source not in SOURCES:
                raise SlimpackError(f"stages.export.{name}.source {item.source!r} must be one of {', '.join(SOURCES)}")
            if item.source != "dense" and getattr(st, item.source) is None:
                raise SlimpackError(f"stages.export.{name} reads the {item.source} stage, which the recipe lacks")
        if st.bench is not None:
            st.bench.check()
            if not st.bench.threads or min(st.bench.threads) < 1:
                raise SlimpackError(f"stages.bench.threads {st.bench.threads} must be a list of counts ≥ 1")
            if not st.export and not st.bench.torch:
                raise SlimpackError("stages.bench has nothing to time: add stages.export or bench.torch: true")
        if st.verify is not None and not st.export:
            raise SlimpackError("stages.verify has nothing to check: add stages.export")
    except SlimpackError as err:
        raise SlimpackError(f"recipe {source}: {err}") from None


def load_recipe(path: Path | None = None) -> Recipe:
    """Read, parse and check a recipe (``None``: the embedded default)."""
    import yaml

    path = Path(path) if path is not None else DEFAULT_RECIPE
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SlimpackError(f"recipe {source!r} does not exist; pass a YAML file or nothing for the default") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SlimpackError(f"recipe {source} is not valid YAML{at}: {getattr(err, 'problem', err)}") from None
    recipe = parse_section(Recipe, data, "", source)
    check_recipe(recipe, source)
    return recipe
