"""Recipes for ``slimpack run``: which stages run, with which parameters — validated whole before any work.

A recipe is YAML (see ``runtime_bench/pipeline/recipes/default.yaml``, the embedded default)::

    model: smollm2-135m            # model directory or alias
    out: runs/main                 # the run directory
    data: {dataset: offline, nsamples: 32, seqlen: 512, seed: 0}   # calibration (prune.data.DataSpec)
    eval: {dataset: offline, seqlen: 512, windows: 40}              # perplexity (prune.spec.EvalSpec)
    stages:                        # any subset, always run in this order
      prune:    {method: sparsegpt, sparsity: 0.5, allocation: dlp}  # prune.spec.PruneSpec: also pattern,
                                   # scope, options, allocation_options, plan, true_sequential, structured
      quantize: {method: gptq, bits: 4, group_size: 64, joint: true} # quant.spec.QuantizeSpec (+ joint)
      export:                      # artifact name → format and source model (dense | prune | quantize)
        onnx: {format: onnx, source: prune}
      verify:   {windows: 8, tokens: 16}
      zeroshot: {tasks: [boolq, rte], task_data: local, limit: 10, artifacts: [onnx]}   # lm-eval tasks on every
                                   # model (dense, prune, quantize) and the artifacts named (default: all)
      bench:    {threads: [2], prompt: 128, tokens: 32, rounds: 5}

Every mapping is read into a frozen dataclass by `parse`: an unknown key, a value of the wrong type, an unknown
method / allocation / format / source, or a stage that needs one that is absent is a `SlimpackError` naming
the recipe file and the dotted path of the bad entry.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, Union, get_type_hints

from export.base import EXPORTERS, streaming_formats
from prune.architecture import adapter_for
from prune.data import DataSpec
from prune.errors import SlimpackError
from prune.io import read_text_file
from prune.lazy import LazyCheckpoint
from prune.model_config import read_config
from prune.models import LoadedModel, checkpoint_kind
from prune.spec import EvalSpec, PruneSpec, StreamSpec
from prune.stream import refuse, stream_refusal
from prune.structured.api import StructuredPrune
from prune.unstructured import UnstructuredPrune
from quant.api import quantize_stream_refusal, recipe_stream
from quant.spec import QuantizeSpec
from quant.stage import Quantize
from runtime_bench.harness import BenchSpec
from runtime_bench.pipeline.targets import SOURCES, ArtifactSpec, engine_of, streams
from runtime_bench.verify import Tolerance, check_settings
from runtime_bench.zeroshot import PAPER_TASKS, TaskData, ZeroShotEvaluation, resolve_task_names

DEFAULT_RECIPE = Path(__file__).with_name("recipes") / "default.yaml"


@dataclass(frozen=True)
class QuantizeStage(QuantizeSpec):
    """`quant.spec.QuantizeSpec`, and ``joint``: prune in the same walk as ``stages.prune`` says (from the dense
    model), instead of quantizing the pruned model."""

    joint: bool = False


@dataclass(frozen=True)
class VerifyStage:
    windows: int = 8
    tolerance: float = 0.01
    token_match: float = 1.0
    prompt: int = 32
    tokens: int = 16
    threads: int | None = None


@dataclass(frozen=True)
class ZeroShotStage:
    """lm-evaluation-harness tasks (`runtime_bench.zeroshot`) on every model of the run (dense, prune, quantize:
    torch) and on the artifacts named in ``artifacts`` (None: every one) through their own runtimes."""

    tasks: list[str] = field(default_factory=lambda: list(PAPER_TASKS))
    task_data: str = "hub"  # hub | local (slimpack's 30-item files: not the papers' data) | DIR of <task>.jsonl
    num_fewshot: int = 0
    limit: int | None = None
    batch_size: int = 1
    threads: int | None = None
    artifacts: list[str] | None = None


@dataclass(frozen=True)
class BenchStage(BenchSpec):
    """`runtime_bench.harness.BenchSpec` (prompt, tokens, rounds, warmup, batch, seed) and the thread counts."""

    threads: list[int] = field(default_factory=lambda: [2])
    torch: bool = False  # also time the dense and pruned models in eager PyTorch


@dataclass(frozen=True)
class Stages:
    prune: PruneSpec | None = None
    quantize: QuantizeStage | None = None
    export: dict[str, ArtifactSpec] = field(default_factory=dict)
    verify: VerifyStage | None = None
    zeroshot: ZeroShotStage | None = None
    bench: BenchStage | None = None


@dataclass(frozen=True)
class Recipe:
    model: str = "smollm2-135m"
    out: str = "runs/main"
    data: DataSpec = field(default_factory=DataSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    stream: StreamSpec | None = None  # models larger than memory: evaluation, prune, quantize, export, verify streamed
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
        if value is False and type(None) in args and dataclasses.is_dataclass(inner[0]):  # `structured: false`
            return None
        return _coerce(value, inner[0], where, source)
    if dataclasses.is_dataclass(hint):
        return parse_section(hint, {} if value is True else value, where, source)  # `structured: true` = defaults
    if hint is Path:
        if not isinstance(value, str):
            raise SlimpackError(f"recipe {source}: {where} must be a path, not {value!r}")
        return Path(value)
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
    except SlimpackError as err:  # a value the dataclass itself refuses (e.g. bits 5 in a GPTQ checkpoint)
        raise SlimpackError(f"recipe {source}: {where}: {err}") from None


@contextmanager
def at(where: str) -> Iterator[None]:
    """Prefix a `SlimpackError` raised inside with the dotted key of the recipe entry it concerns."""
    try:
        yield
    except SlimpackError as err:
        raise SlimpackError(f"{where}: {err}") from None


def check_recipe(recipe: Recipe, source: str) -> None:
    """Semantic checks (names exist in their registries, sources are produced, values in range): every setting
    is resolved the way the run will resolve it, so nothing the recipe names can fail after the first step."""
    st = recipe.stages
    try:
        with at("data"):
            recipe.data.check()
        with at("eval"):
            recipe.eval.check()
        if recipe.stream is not None:
            with at("stream"):
                recipe.stream.check()
            whole = sorted(
                f"{name} ({item.format})" for name, item in st.export.items() if item.format and not streams(item)
            )
            if whole:
                raise SlimpackError(
                    f"stream: stages.export {', '.join(whole)} load the model whole; a streamed recipe exports "
                    f"{', '.join(streaming_formats())}"
                )
            if st.bench is not None and st.bench.torch:
                raise SlimpackError("stream: stages.bench.torch runs the model whole in torch; set torch: false")
        if st.prune is not None:
            with at("stages.prune"):
                resolved = st.prune.resolve()
                if recipe.stream is not None:
                    refuse(stream_refusal(resolved))
        if st.quantize is not None:
            if st.quantize.joint and st.prune is None:
                raise SlimpackError(
                    "stages.quantize.joint prunes as stages.prune says, and the recipe has no prune stage"
                )
            with at("stages.quantize"):
                quantize = Quantize(st.quantize, st.prune if st.quantize.joint else None)
                if recipe.stream is not None:
                    refuse(quantize_stream_refusal(quantize, recipe_stream(st.quantize, recipe.stream)))
        for name, item in st.export.items():
            if item.format is None:
                raise SlimpackError(f"stages.export.{name}.format must name an export format, e.g. onnx")
            engine_of(item)
            exporter = EXPORTERS.get(item.format)
            if (
                st.prune is not None
                and st.prune.structured is not None
                and item.source != "dense"
                and (not exporter.per_layer_shapes)
            ):
                raise SlimpackError(
                    f"stages.export.{name}: the {item.format} format takes one layer shape, and stages.prune is "
                    "structured (per-layer shapes); export it as onnx"
                )
            if item.source not in SOURCES:
                raise SlimpackError(f"stages.export.{name}.source {item.source!r} must be one of {', '.join(SOURCES)}")
            if item.source != "dense" and {"prune": st.prune, "quantize": st.quantize}[item.source] is None:
                raise SlimpackError(f"stages.export.{name} reads the {item.source} stage, which the recipe lacks")
        if st.bench is not None:
            st.bench.check()
            if not st.bench.threads or min(st.bench.threads) < 1:
                raise SlimpackError(f"stages.bench.threads {st.bench.threads} must be a list of counts ≥ 1")
            if not st.export and not st.bench.torch:
                raise SlimpackError("stages.bench has nothing to time: add stages.export or bench.torch: true")
        if st.zeroshot is not None:
            z = st.zeroshot
            with at("stages.zeroshot"):
                zeroshot_evaluation(z)  # the tasks resolved (an unknown one, a missing file: here, not after hours)
                unknown = [name for name in z.artifacts or [] if name not in st.export]
                if unknown:
                    raise SlimpackError(
                        f"artifacts {unknown} are not exported by stages.export ({', '.join(st.export) or 'none'})"
                    )
                if z.threads is not None and z.threads < 1:
                    raise SlimpackError(f"threads {z.threads} must be 1 or more (or left out: the runtime's)")
        if st.verify is not None:
            if not st.export:
                raise SlimpackError("stages.verify has nothing to check: add stages.export")
            v = st.verify
            with at("stages.verify"):
                spec = EvalSpec(recipe.eval.dataset, recipe.eval.seqlen, v.windows)
                check_settings(spec, Tolerance(v.tolerance, v.token_match), v.prompt, v.tokens, v.threads)
    except SlimpackError as err:
        raise SlimpackError(f"recipe {source}: {err}") from None


def zeroshot_evaluation(stage: ZeroShotStage) -> Any:
    """The `runtime_bench.zeroshot.ZeroShotEvaluation` of ``stage`` (its tasks checked and resolved)."""
    names = resolve_task_names(stage.tasks)
    return ZeroShotEvaluation.prepare(
        names, TaskData(stage.task_data), stage.num_fewshot, stage.limit, stage.batch_size
    )


def check_model_fits(recipe: Recipe, model: Path, source: str) -> None:
    """Each prunable linear of ``model`` (a meta-device skeleton and the shards' headers, no weights read)
    against the recipe's pattern and group size — the checks each stage makes when it starts, made before the
    first step. A quantize stage after a structured prune gets its shapes from that prune: checked when it starts."""
    st = recipe.stages
    codec = checkpoint_kind(model).codec(read_config(model))
    if codec is None:
        return  # a kind the streamed reader cannot open: its stages check it when they load it
    lazy = LazyCheckpoint.open(model, codec)  # the skeleton, and every tensor present and of its shape
    loaded = LoadedModel(lazy.model, None, str(model), model, adapter=adapter_for(lazy.model))
    try:
        if st.prune is not None:
            with at("stages.prune"):
                resolved = st.prune.resolve()
                prune_stage = StructuredPrune if st.prune.structured is not None else UnstructuredPrune
                prune_stage(resolved).check_model(loaded)
        if st.quantize is not None and (st.prune is None or st.prune.structured is None or st.quantize.joint):
            with at("stages.quantize"):
                Quantize(st.quantize, st.prune if st.quantize.joint else None).check_model(loaded)
    except SlimpackError as err:
        raise SlimpackError(f"recipe {source}: {err}") from None


def load_recipe(path: Path | None = None) -> Recipe:
    """Read, parse and check a recipe (``None``: the embedded default)."""
    import yaml

    path = Path(path) if path is not None else DEFAULT_RECIPE
    source = str(path)
    text = read_text_file(path, "recipe", "pass a YAML file, or nothing for the default")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SlimpackError(f"recipe {source} is not valid YAML{at}: {getattr(err, 'problem', err)}") from None
    recipe = parse_section(Recipe, data, "", source)
    check_recipe(recipe, source)
    return recipe
