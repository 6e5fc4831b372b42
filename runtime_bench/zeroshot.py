"""Zero-shot accuracy as the papers measure it — EleutherAI's lm-evaluation-harness (`lm-eval`, pinned) — through
the runtime an artifact deploys on (onnxruntime, DeepSparse, torch), or on a model directory in torch.

`runtime_bench.lm_eval_model.EngineLM` is an lm-eval model (`lm_eval.api.model.TemplateLM`) over a `LogitSource`: the next-token logits of
token sequences. The log-likelihood of a continuation ``c`` after a context ``x`` is
``Σ_t log softmax(z_{|x|+t−1})[c_t]`` over the logits ``z: [|x|+|c|−1, vocab]`` of ``(x + c)[:−1]``, and it is
greedy when every ``c_t`` is the arg-max (lm-eval's ``loglikelihood`` contract; a context longer than the
model's window keeps its last tokens, as lm-eval's HF model does). Sources (`runtime_bench.logit_sources`):
- `EngineSource`: any slimpack engine (`runtime_bench.engines`), one forward per sequence (or right-padded
  batches: a causal model's logits before the padding do not see it).
- `ForwardSource`: a model directory's `prune.store.Forward`, resident or streamed (every request's sequence
  through block 0, then block 1, …)
  (one block in memory: a 7B's zero-shot run never holds the model).

Tasks are lm-eval's own configs (prompts, choices, metrics) by name. Their data comes from the Hugging Face hub as
lm-eval loads it (``--task-data hub``), or from local JSON Lines files in the datasets' schema (``local``: the
30-item files of `runtime_bench/zeroshot_tasks`, written by this project — not the papers' data; or a directory
of ``<task>.jsonl``): the config is lm-eval's with only the data source swapped. A local file is checked line by
line before any work (`runtime_bench.task_files`), and its data is cached under its content's sha256.

Every metric a task reports is kept, with its per-example values: accuracies, perplexities (wikitext's rolling
log-likelihoods), exact match under each of the task's filters (``exact_match,strict-match``: lm-eval's
``metric,filter`` key; a metric of the ``none`` filter by its name alone). The headline metric of a task is
``acc_norm`` where the task reports it (HellaSwag, ARC, OpenBookQA), else ``acc``, else its first exact match or
F1, else its first metric; the report's ``mean`` — the papers' "mean zero-shot accuracy" — averages the headline
metrics that are accuracies (`ACCURACIES`) and names those tasks (``mean_of``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.artifact import Artifact
from prune.errors import SlimpackError
from prune.io import from_known, read_json_record, sha256_file
from prune.model_config import read_config
from prune.models import resolve_model_path
from prune.ranks import Ranks
from prune.store import ModelStore, open_chosen
from runtime_bench.engines import open_artifact
from runtime_bench.logit_sources import EngineSource, ForwardSource, LogitSource
from runtime_bench.task_files import check_task_file

log = logging.getLogger(__name__)

LOCAL_TASKS = Path(__file__).with_name("zeroshot_tasks")
PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
SPLITS = ("training_split", "validation_split", "test_split", "fewshot_split")


# --- tasks --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskData:
    """Where the tasks' documents come from: ``hub`` (lm-eval's own loading), ``local`` (`LOCAL_TASKS`), or a
    directory of ``<task>.jsonl`` files in the datasets' schema."""

    source: str = "hub"

    @property
    def directory(self) -> Path | None:
        if self.source == "hub":
            return None
        return LOCAL_TASKS if self.source == "local" else Path(self.source)

    def check(self) -> None:
        directory = self.directory
        if directory is not None and not directory.is_dir():
            raise SlimpackError(
                f"--task-data {self.source!r} is not a directory; pass hub, local (slimpack's 30-item files) or a "
                "directory of <task>.jsonl files"
            )


def check_tasks(names: Sequence[str], limit: int | None, num_fewshot: int, batch_size: int = 1) -> None:
    """One line for an empty task list, a ``--limit`` below 1, a negative ``--num-fewshot`` or a ``--batch-size``
    below 1 (before any work)."""
    if not names or any(not n for n in names):
        raise SlimpackError(f"--tasks {','.join(names)!r} names no task; e.g. --tasks {','.join(PAPER_TASKS)}")
    if limit is not None and limit < 1:
        raise SlimpackError(f"--limit {limit}: evaluate at least 1 example per task (or leave --limit out: all)")
    if num_fewshot < 0:
        raise SlimpackError(f"--num-fewshot {num_fewshot}: give 0 (zero-shot, the papers') or more examples")
    if batch_size < 1:
        raise SlimpackError(f"--batch-size {batch_size}: give 1 or more sequences per forward")


def resolve_task_names(names: Sequence[str]) -> tuple[str, ...]:
    """``paper`` (alone) stands for the papers' seven tasks, `PAPER_TASKS`."""
    return PAPER_TASKS if tuple(names) == ("paper",) else tuple(names)


@functools.cache
def task_manager() -> Any:
    """lm-eval's index of its task configs. Building it reads all 13 123 of them (≈ 14 s here), and it is only
    read (names → configs), so a process builds it once."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def task_specs(names: Sequence[str], data: TaskData, manager: Any) -> list[Any]:
    """lm-eval task specs for ``names``: the registered name (hub data), or the registered config with its data
    swapped for ``<task>.jsonl`` of ``data``'s directory (every split the config names reads that file)."""
    from difflib import get_close_matches

    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    data.check()
    specs: list[Any] = []
    for name in names:
        entry = manager.task_index.get(name)
        if entry is None or entry.kind is not Kind.TASK or entry.yaml_path is None:
            close = get_close_matches(name, manager.all_subtasks, n=5, cutoff=0.6) or list(PAPER_TASKS)
            raise SlimpackError(
                f"unknown task {name!r}: lm-eval {lm_eval_version()} has no such task (a single task, not a group); "
                f"e.g. {', '.join(close)} "
                "(`python -m lm_eval ls tasks` lists them all)"
            )
        directory = data.directory
        if directory is None:
            specs.append(name)
            continue
        path = directory / f"{name}.jsonl"
        if not path.exists():
            raise SlimpackError(
                f"task {name!r}: no {path}; --task-data {data.source} has "
                f"{', '.join(sorted(p.stem for p in directory.glob('*.jsonl'))) or 'no task files'} "
                f"(write {name}.jsonl in the Hugging Face dataset's schema, or use --task-data hub)"
            )
        digest = check_task_file(name, path)
        config = load_yaml(entry.yaml_path, resolve_func=True)
        splits = {config[key] for key in SPLITS if config.get(key)}
        config.update(
            dataset_path="json",
            dataset_name=f"slimpack-{digest[:16]}",  # `datasets` caches by path and mtime: this keys it by content
            dataset_kwargs={"data_files": {split: str(path.resolve()) for split in splits}},
        )
        config.pop("tag", None)
        specs.append(config)
    return specs


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


ACCURACIES = ("acc_norm", "acc", "exact_match", "f1")  # headline metrics, in order of preference, that are averaged


def metric_key(key: str) -> str | None:
    """lm-eval's ``metric,filter`` result key as the report names it (``acc``; ``exact_match,strict-match``);
    None for its stderrs and aliases."""
    metric, _, filt = key.partition(",")
    if not filt or metric.endswith("_stderr"):
        return None
    return metric if filt == "none" else key


def headline(metrics: Sequence[str]) -> str:
    """The task's headline metric among ``metrics`` (report keys, lm-eval's order): the first of `ACCURACIES`
    it reports (any filter), else its first metric."""
    for name in ACCURACIES:
        for key in metrics:
            if key.partition(",")[0] == name:
                return key
    return metrics[0]


def example_value(value: Any) -> Any:
    """A per-example result as JSON: a number, or a rolling task's ``[log-likelihood, weight]``."""
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else float(value)


@dataclass(frozen=True)
class Tasks:
    """Tasks checked and resolved before any model is opened: names, their lm-eval specs and the manager."""

    names: tuple[str, ...]
    data: TaskData
    specs: list[Any]
    manager: Any

    @classmethod
    def prepare(cls, names: Sequence[str], data: TaskData) -> Tasks:
        """Resolve ``names``; hub data is loaded once here (from the cache, or the hub), so that data that is
        neither reachable nor cached fails before any model is opened or compressed."""
        manager = task_manager()
        specs = task_specs(names, data, manager)
        if data.directory is None:
            from lm_eval.tasks import get_task_dict

            try:
                get_task_dict(copy.deepcopy(specs), manager)
            except (ConnectionError, OSError, ValueError) as err:
                raise hub_data_error(names, err) from None
        return cls(tuple(names), data, specs, manager)


def hub_data_error(names: Sequence[str], err: Exception) -> SlimpackError:
    """The one line for hub data that could not be loaded: where it looked, how to provide it."""
    return SlimpackError(
        f"task data for {', '.join(names)} could not be loaded from the hub or the Hugging Face cache "
        f"({os.environ.get('HF_DATASETS_CACHE') or Path.home() / '.cache/huggingface/datasets'}): "
        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} — run once with network access, or "
        "pass --task-data local (slimpack's 30-item files, not the papers' data) or --task-data DIR"
    )


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """lm-eval's run with nothing on the console: its log records below ERROR dropped, and `sys.stderr` and the
    process's file descriptor 2 sent to a temporary file — `datasets`' and lm-eval's progress bars, Python
    warnings, and the ``fatal: not a git repository`` of the ``git describe`` that lm-eval runs for its report's
    commit. slimpack's own warnings written meanwhile go there too (its handler writes to the same descriptor):
    what went to the file comes back, whole, only if the run fails."""
    lm_eval_log = logging.getLogger("lm_eval")
    level = lm_eval_log.level
    lm_eval_log.setLevel(logging.ERROR)
    sys.stderr.flush()
    console = os.dup(2)
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as sink:
        os.dup2(sink.fileno(), 2)
        failed = True
        try:
            with contextlib.redirect_stderr(sink):
                yield
            failed = False
        finally:
            sink.flush()
            os.dup2(console, 2)
            os.close(console)
            lm_eval_log.setLevel(level)
            if failed:
                sink.seek(0)
                sys.stderr.write(sink.read())


@dataclass
class TaskResult:
    """One task's result: every metric lm-eval reported (``metrics``: ``acc``, ``acc_stderr``, ``acc_norm``, …),
    the per-example results of each (``examples``: metric → one value per document, in document order), and the
    number of documents. JSON: the metrics, then ``examples`` and ``n``, at one level."""

    metrics: dict[str, float]
    examples: dict[str, list[float]] = field(default_factory=dict)
    n: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "examples": self.examples, "n": self.n}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResult:
        metrics = {k: v for k, v in data.items() if k not in ("examples", "n")}
        return cls(metrics, dict(data.get("examples", {})), int(data.get("n", 0)))

    def reported(self) -> list[str]:
        """The task's metrics, without their stderrs."""
        return [m for m in self.metrics if "_stderr" not in m.partition(",")[0]]

    def stderr(self, metric: str) -> float | None:
        name, comma, filt = metric.partition(",")
        value = self.metrics.get(f"{name}_stderr{comma}{filt}")
        return value if isinstance(value, (int, float)) else None


@dataclass(kw_only=True)
class ZeroShotReport:
    """A zero-shot run's result (``slimpack eval --tasks``' JSON; a stage's ``evaluation["zeroshot"]``; a run's
    ``zeroshot/*.json``): per task its `TaskResult` and headline metric (`headline`), the mean of the accuracies
    among them and the tasks it averages (``mean_of``; None: no task's headline is an accuracy), the protocol
    (few-shot count, limit, task data, lm-eval's version) and — where known — the model, the runtime that
    computed the logits, how it encoded requests (whether a BOS token was prepended, the window in tokens — the
    model's own, ``model_max_length``, unless the artifact's limit is lower —, the prefix token of rolling windows
    and empty contexts), the seconds, and a stage's one-line summary. Fields in
    the JSON's key order; those that default to None are left out of it while unknown."""

    model: str | None = None
    runtime: str | None = None
    tasks: dict[str, TaskResult]
    headline: dict[str, str]
    mean: float | None
    mean_of: list[str] | None = None
    num_fewshot: int
    limit: int | None
    task_data: str
    lm_eval: str
    bos: bool | None = None
    max_length: int | None = None
    model_max_length: int | None = None
    prefix_token_id: int | None = None
    seconds: float | None = None
    summary: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if not (f.default is None and getattr(self, f.name) is None)
        }
        return data | {"tasks": {name: t.to_dict() for name, t in self.tasks.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZeroShotReport:
        return from_known(cls, data, tasks={name: TaskResult.from_dict(t) for name, t in data["tasks"].items()})

    @classmethod
    def read(cls, path: Path) -> ZeroShotReport:
        """One line when ``path`` is not a zero-shot report."""
        return read_json_record(path, cls.from_dict, "a slimpack zero-shot report")

    def brief(self) -> str:
        """``mean 61.23 %``, or the headline metrics where none is an accuracy."""
        if self.mean is not None:
            return f"mean {100 * self.mean:.2f} %"
        return ", ".join(f"{t} {m} {self.tasks[t].metrics[m]:.4g}" for t, m in self.headline.items())

    def accuracy(self, task: str) -> float:
        """``task``'s headline metric."""
        return float(self.tasks[task].metrics[self.headline[task]])

    def equal_examples(self, source: ZeroShotReport) -> tuple[int, int]:
        """``(equal, compared)``: this report's per-example results (every metric) equal to ``source``'s."""
        equal = compared = 0
        for name, task in self.tasks.items():
            for metric, values in task.examples.items():
                theirs = source.tasks[name].examples[metric]
                equal += sum(a == b for a, b in zip(values, theirs))
                compared += len(values)
        return equal, compared

    def table(self) -> str:
        """Task, metric, value and stderr, one row per metric; then the mean of the headline accuracies."""
        lines = ["| task | metric | value | stderr | n |", "|---|---|---|---|---|"]
        for name, task in self.tasks.items():
            for metric in task.reported():
                mark = " (headline)" if self.headline[name] == metric else ""
                stderr = task.stderr(metric)
                lines.append(
                    f"| {name} | {metric}{mark} | {task.metrics[metric]:.4f} | "
                    f"{'—' if stderr is None else f'{stderr:.4f}'} | {task.n} |"
                )
        if self.mean is not None:
            of = ", ".join(f"{t} {self.headline[t]}" for t in self.mean_of or self.tasks)
            lines.append(f"| **mean** ({of}) | | {self.mean:.4f} | | |")
        return "\n".join(lines)


def run_tasks(
    lm: Any, tasks: Tasks, num_fewshot: int = 0, limit: int | None = None, seed: int = 0, quiet: bool = False
) -> ZeroShotReport:
    """Evaluate ``lm`` on ``tasks``. ``quiet`` (``-q``): lm-eval runs `silenced`."""
    import lm_eval

    names, data = tasks.names, tasks.data
    check_tasks(names, limit, num_fewshot)
    try:
        with silenced() if quiet else contextlib.nullcontext():
            out = lm_eval.simple_evaluate(
                model=lm, tasks=copy.deepcopy(tasks.specs), num_fewshot=num_fewshot, limit=limit,
                task_manager=tasks.manager, log_samples=True, random_seed=seed, numpy_random_seed=seed,
                torch_random_seed=seed, fewshot_random_seed=seed, bootstrap_iters=1000,
            )  # fmt: skip
    except (ConnectionError, OSError, ValueError) as err:
        if data.directory is not None:
            raise
        raise hub_data_error(names, err) from None
    if out is None:  # lm-eval reports on LOCAL_RANK 0 only: this torchrun rank scored its share; rank 0 reports
        return ZeroShotReport(tasks={}, headline={}, mean=None, num_fewshot=num_fewshot, limit=limit,
                              task_data=data.source, lm_eval=lm_eval_version())  # fmt: skip
    results = {name: task_result(out["results"][name], out["samples"][name]) for name in names}
    heads = {name: headline(results[name].reported()) for name in names}
    averaged = [n for n in names if heads[n].partition(",")[0] in ACCURACIES]
    return ZeroShotReport(
        tasks=results,
        headline=heads,
        mean=float(np.mean([results[n].metrics[heads[n]] for n in averaged])) if averaged else None,
        mean_of=averaged,
        num_fewshot=num_fewshot,
        limit=limit,
        task_data=data.source,
        lm_eval=lm_eval_version(),
    )


def task_result(metrics: dict[str, Any], samples: list[dict[str, Any]]) -> TaskResult:
    """One task's `TaskResult` from lm-eval's results and logged samples (one per document and filter)."""
    values: dict[str, float] = {}
    for key, value in metrics.items():
        name = metric_key(key) or (key.replace(",none", "") if "_stderr," in key else None)
        if name is not None and isinstance(value, (int, float)):
            values[name] = value
    examples: dict[str, list[Any]] = {}
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        for metric in values:
            name, _, filt = metric.partition(",")
            if "_stderr" not in name and (filt or "none") == sample.get("filter", "none") and name in sample:
                examples.setdefault(metric, []).append(example_value(sample[name]))
    return TaskResult(values, examples, len({s["doc_id"] for s in samples}))


# --- a model or an artifact, end to end ---------------------------------------------------------------------


@dataclass(frozen=True)
class ZeroShotConfig:
    model: str  # an exported artifact (its engine), a model directory or alias (torch), any checkpoint kind
    tasks: tuple[str, ...]
    data: TaskData = TaskData()
    num_fewshot: int = 0
    limit: int | None = None
    batch_size: int = 1
    threads: int | None = None
    engine_options: dict[str, dict[str, Any]] | None = None
    stream: bool | None = None  # a model directory read one block at a time (block-major over every request);
    # None: chosen from its size (`prune.store.choose_store`)
    seed: int = 0
    progress: bool = True
    add_bos_token: bool | None = None  # None: the tokenizer's default (lm-eval's HF model's ``add_bos_token``)
    device: str = "cpu"  # torch's, for a model directory (an artifact runs where its engine runs)
    trust_unverified: bool = False  # run an artifact whose export.json has no valid sha256 (a warning, not a refusal)
    ranks: Ranks = field(default_factory=Ranks, compare=False)  # under torchrun: the requests split across ranks

    def check(self) -> None:
        check_tasks(self.tasks, self.limit, self.num_fewshot, self.batch_size)
        self.data.check()


@dataclass
class Opened:
    source: LogitSource
    tokenizer: Any
    config: dict[str, Any]  # the model's config.json: its window (`runtime_bench.lm_eval_model.model_window`)
    runtime: str  # what computed the logits: the engine's name, "torch", or "torch, streamed"
    eos_ids: tuple[int, ...] = ()  # what ends a generation (`generation_eos`)
    limit: int | None = None  # the artifact's own window where it has one (`EngineBase.context_limit`)
    close: Any = None


def generation_eos(directory: Path) -> tuple[int, ...]:
    """The end-of-sequence ids of the model's ``generation_config.json`` (what Hugging Face's ``generate`` stops
    at); none without one (then the tokenizer's EOS)."""
    path = Path(directory) / "generation_config.json"
    if not path.is_file():
        return ()
    eos = read_json_record(path, lambda data: data.get("eos_token_id"), "a generation_config.json")
    return tuple(int(e) for e in (eos if isinstance(eos, list) else [eos] if eos is not None else []))


def open_source(config: ZeroShotConfig) -> Opened:
    """The logit source, tokenizer and context length of ``config.model``: an artifact through its own engine,
    a model directory through torch (whole, or streamed)."""
    from transformers import AutoTokenizer

    if Artifact.exists(config.model):
        if config.stream:
            raise SlimpackError(
                f"--stream reads a model directory one block at a time; {config.model!r} is an exported artifact, "
                "which runs in its own engine: leave --stream out"
            )
        artifact = Artifact.open(config.model)
        artifact.require_verified(config.trust_unverified)  # no accuracy can vouch for what was not exported
        engine = open_artifact(artifact, config.threads, config.engine_options)
        tokenizer = AutoTokenizer.from_pretrained(artifact.path, trust_remote_code=False)
        source: LogitSource = EngineSource(engine, config.batch_size, int(tokenizer.eos_token_id))
        return Opened(source, tokenizer, read_config(artifact.path), artifact.engine, generation_eos(artifact.path),
                      engine.context_limit(), engine.close)  # fmt: skip
    store = open_chosen(config.model, config.stream, config.device, config.progress)
    return torch_source(resolve_model_path(config.model), store, None, config.batch_size, config.threads)


def torch_source(path: Path, store: ModelStore, written: Path | None, batch_size: int = 1,
                 threads: int | None = None) -> Opened:  # fmt: skip
    """The model directory ``path`` in torch, as ``store`` holds it (`prune.store.ModelStore.forward`; after a
    stage: the model it wrote to ``written``)."""
    if threads:
        torch.set_num_threads(threads)
    forward = store.forward(written)
    source = ForwardSource(forward, batch_size, int(forward.tokenizer.eos_token_id))
    return Opened(source, forward.tokenizer, read_config(path), store.runtime, generation_eos(path))


def evaluate_opened(
    opened: Opened, tasks: Tasks, num_fewshot: int, limit: int | None, seed: int, progress: bool,
    add_bos_token: bool | None = None, ranks: Ranks | None = None,
) -> ZeroShotReport:  # fmt: skip
    """`run_tasks` through ``opened`` (closed afterwards), with the runtime, how requests were encoded and the
    seconds; ``ranks``: each scores its share of the requests (`runtime_bench.lm_eval_model.EngineLM`)."""
    import time

    start = time.perf_counter()
    log.info("zero-shot: %s through %s, task data %s", ", ".join(tasks.names), opened.runtime, tasks.data.source)
    try:
        lm, own = engine_lm(opened, progress, add_bos_token, ranks)
        report = run_tasks(lm, tasks, num_fewshot, limit, seed, quiet=not progress)
    finally:
        if opened.close is not None:
            opened.close()
    return replace(report, runtime=opened.runtime, bos=lm.adds_bos, max_length=lm.max_length, model_max_length=own,
                   prefix_token_id=lm.prefix_token_id, seconds=round(time.perf_counter() - start, 1))  # fmt: skip


def engine_lm(
    opened: Opened, progress: bool = True, add_bos_token: bool | None = None, ranks: Ranks | None = None
) -> tuple[Any, int]:
    """slimpack's lm-eval model over ``opened`` (`runtime_bench.lm_eval_model.EngineLM`), and the model's own window:
    the model runs in that one, or in the artifact's limit where it is lower (logged)."""
    from runtime_bench.lm_eval_model import EngineLM, model_window  # lazy: lm-eval, a heavy import, when tasks run

    own = model_window(opened.config, opened.tokenizer)
    window = own if opened.limit is None else min(own, opened.limit)
    if window < own:
        log.warning("zero-shot: %s runs %d tokens at most, below the model's %d: requests keep their last %d",
                    opened.runtime, window, own, window)  # fmt: skip
    lm = EngineLM(opened.source, opened.tokenizer, window, progress, add_bos_token, eos_ids=opened.eos_ids, ranks=ranks)
    return lm, own


@dataclass(frozen=True)
class ZeroShotEvaluation:
    """Zero-shot tasks as a stage's further evaluation (`prune.spec.Evaluation`): ``slimpack prune | quantize
    --tasks …`` records `run_tasks`' report in the manifest's ``evaluation["zeroshot"]``. Build it with
    `prepare` (the tasks are resolved then: an unknown task fails before any work)."""

    tasks: Tasks
    num_fewshot: int = 0
    limit: int | None = None
    batch_size: int = 1
    add_bos_token: bool | None = None
    seed: int = 0
    name: str = "zeroshot"

    @classmethod
    def prepare(
        cls, names: Sequence[str], data: TaskData, num_fewshot: int = 0, limit: int | None = None, batch_size: int = 1,
        add_bos_token: bool | None = None,
    ) -> ZeroShotEvaluation:  # fmt: skip
        check_tasks(names, limit, num_fewshot, batch_size)
        return cls(Tasks.prepare(names, data), num_fewshot, limit, batch_size, add_bos_token)

    def check(self) -> None:
        check_tasks(self.tasks.names, self.limit, self.num_fewshot, self.batch_size)

    def settings(self) -> dict[str, Any]:
        """The settings, lm-eval's version and, for local data, each task file's sha256 (an edited file is a
        different evaluation)."""
        directory = self.tasks.data.directory
        files = {n: sha256_file(directory / f"{n}.jsonl") for n in self.tasks.names} if directory is not None else None
        return {"tasks": list(self.tasks.names), "task_data": self.tasks.data.source, "num_fewshot": self.num_fewshot,
                "limit": self.limit, "batch_size": self.batch_size, "seed": self.seed, "lm_eval": lm_eval_version(),
                **({"add_bos_token": self.add_bos_token} if self.add_bos_token is not None else {}),
                **({"task_files": files} if files else {})}  # fmt: skip

    def run(self, store: ModelStore, written: Path) -> dict[str, Any]:
        opened = torch_source(written, store, written, self.batch_size)
        report = evaluate_opened(opened, self.tasks, self.num_fewshot, self.limit, self.seed, store.progress,
                                 self.add_bos_token)  # fmt: skip
        summary = f"zero-shot {report.brief()} ({len(self.tasks.names)} tasks)"
        return replace(report, summary=summary).to_dict()  # the manifest holds it as JSON (`ZeroShotReport.from_dict`)


def zeroshot(config: ZeroShotConfig, tasks: Tasks | None = None) -> ZeroShotReport:
    """Run ``config.tasks`` on ``config.model`` through its runtime; the report of `run_tasks` with the model,
    the runtime and the seconds. ``tasks``: ``config``'s, already prepared (a caller evaluating many models)."""
    config.check()
    if tasks is None:
        tasks = Tasks.prepare(config.tasks, config.data)  # unknown tasks and missing files: before the model opens
    opened = open_source(config)
    report = evaluate_opened(opened, tasks, config.num_fewshot, config.limit, config.seed, config.progress,
                             config.add_bos_token, config.ranks)  # fmt: skip
    return replace(report, model=str(config.model))
