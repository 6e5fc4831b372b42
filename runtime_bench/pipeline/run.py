"""``slimpack run [RECIPE.yaml]``: the main job — prune → quantize → export → verify → zero-shot → bench, one run
directory.

The recipe (`runtime_bench.pipeline.recipe`) is read and checked whole before any work. Each stage is made of
resumable steps (`runtime_bench.pipeline.steps.StepCache`): a step whose configuration — its parameters and the keys
of the steps it reads — matches its record, and whose outputs exist, is skipped; a killed run resumes at the
first step that did not finish. Layout of the run directory::

    eval-dense is recorded in state/; prune/ and quantize/ are model directories with their slimpack.json;
    export/<name>/ artifacts with export.json; verify/<name>.json; zeroshot/{model,artifact}-<name>.json;
    bench/bench.json;
    report.md (tables + plots), summary.json, run.json (recipe, steps, wall time), state/<step>.json

A stage whose runtime is missing here (DeepSparse's environment; CUDA for 2:4 kernels) is skipped for the
artifacts it concerns and the skip is written in the report. The run fails (exit 1) if a verify check fails.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prune.api import PruneConfig
from prune.errors import SlimpackError
from prune.io import directory_bytes, from_known, locked_dir, write_json_atomic, write_text_atomic
from prune.manifest import environment
from prune.model_config import check_context
from prune.models import resolve_model_path
from prune.paths import Output, check_writes
from prune.ranks import Ranks
from prune.spec import EvalSpec, Job, StreamSpec, section_stream
from quant.api import QuantizeConfig, recipe_stream
from runtime_bench.engines import unavailable
from runtime_bench.harness import BenchSpec, add_speedups, cpu_info, measure, vocab_size
from runtime_bench.pipeline.recipe import Recipe, check_model_fits, zeroshot_evaluation
from runtime_bench.pipeline.report import run_markdown, write_run_plots
from runtime_bench.pipeline.stages import artifact_step, eval_step, memory_step, prune_step, quantize_step
from runtime_bench.pipeline.steps import StepCache, StepResult, files_key, model_key, owned_by_steps
from runtime_bench.pipeline.summary import (
    ArtifactEntry,
    Measurement,
    ModelFigures,
    RunBench,
    RunSummary,
    RunZeroShot,
    Skipped,
    StepNote,
    ZeroShotEntry,
)
from runtime_bench.pipeline.targets import engine_of
from runtime_bench.verify import ReferenceRun, Tolerance, VerifyBrief, VerifyConfig, VerifyReport, verify
from runtime_bench.zeroshot import ZeroShotConfig, ZeroShotReport, zeroshot

log = logging.getLogger(__name__)


class Run:
    """One run directory: its step cache and the record of every step (for the report)."""

    def __init__(self, recipe: Recipe, out: Path, progress: bool, ranks: Ranks | None = None) -> None:
        self.recipe, self.out, self.progress = recipe, out, progress
        self.ranks = ranks if ranks is not None else Ranks()
        self.cache = StepCache(out, self.ranks)
        self.steps: list[StepNote] = []

    def note(self, stage: str, name: str, step: StepResult | None, status: str | None = None, detail: str = "") -> None:
        status = status or ("cached" if step is not None and step.cached else "ran")
        seconds = round(step.seconds, 1) if step is not None else 0.0
        self.steps.append(StepNote(stage, name, status, seconds, detail))
        log.info("[%s] %s: %s%s", stage, name, status, f" ({detail})" if detail else "")


def run_models(run: Run) -> tuple[dict[str, tuple[Path, str]], dict[str, ModelFigures]]:
    """Dense evaluation, prune, quantize: model directories (source → (path, step key)) and their figures."""
    recipe, st = run.recipe, run.recipe.stages
    dense = resolve_model_path(recipe.model)
    files = [p for p in recipe_inputs(recipe, dense, "") if p.is_file()]  # data text, a plan: their content too
    models = {"dense": (dense, f"{model_key(dense)}:{files_key(files)}")}
    stream = section_stream(recipe.stream)
    step = eval_step(run.cache, "eval-dense", dense, recipe.eval, models["dense"][1], run.progress, stream)
    run.note("eval", "dense", step)
    figures = {"dense": ModelFigures(step.result["perplexity"], 0.0, directory_bytes(dense))}

    def job(source: Path, out: Path, stream: StreamSpec | None = recipe.stream) -> Job:
        return Job(str(source), out, recipe.data, overwrite=True, evaluate=recipe.eval, progress=run.progress,
                   stream=stream, store="stream" if stream is not None else "auto", ranks=run.ranks)  # fmt: skip

    if st.prune is not None:
        out = run.out / "prune"
        step = prune_step(run.cache, "prune", PruneConfig(job(dense, out), st.prune), models["dense"][1])
        run.note("prune", st.prune.describe(), step)
        models["prune"] = (out, step.key)
        figures["prune"] = stage_figures(step)
    if st.quantize is not None:
        q = st.quantize
        joint = st.prune if q.joint else None
        source, key = models["dense"] if joint is not None else models.get("prune", models["dense"])
        out = run.out / "quantize"
        qstream = recipe_stream(q, recipe.stream) if recipe.stream is not None else None
        step = quantize_step(run.cache, "quantize", QuantizeConfig(job(source, out, qstream), q, joint), key)
        run.note("quantize", q.describe() + (f", joint with {joint.describe()}" if joint else ""), step)
        models["quantize"] = (out, step.key)
        figures["quantize"] = stage_figures(step)
    return models, figures


def stage_figures(step: StepResult) -> ModelFigures:
    """A stage step's figures (`runtime_bench.pipeline.stages.stage_step`'s result)."""
    return from_known(ModelFigures, step.result)


def run_exports(run: Run, models: dict[str, tuple[Path, str]]) -> dict[str, ArtifactEntry]:
    """Every artifact of ``stages.export``."""
    artifacts = {}
    for name, item in run.recipe.stages.export.items():
        source, key = models[item.source]
        out = run.out / "export" / name
        step = artifact_step(run.cache, f"export-{name}", item, source, key, out, section_stream(run.recipe.stream))
        run.note("export", name, step, detail=f"{item.format} from {item.source}")
        artifacts[name] = ArtifactEntry(step.result["path"], step.key, item.source, item.format, engine_of(item),
                                        step.result["bytes"])  # fmt: skip
    return artifacts


def run_verify(
    run: Run, models: dict[str, tuple[Path, str]], artifacts: dict[str, ArtifactEntry]
) -> dict[str, VerifyBrief | Skipped]:
    """Each artifact against the model it was exported from, in its own runtime (skipped where missing)."""
    v = run.recipe.stages.verify
    assert v is not None
    reports: dict[str, VerifyBrief | Skipped] = {}
    spec = EvalSpec(run.recipe.eval.dataset, run.recipe.eval.seqlen, v.windows)
    references: dict[tuple[Any, ...], ReferenceRun] = {}  # each source model's side, computed once
    for name, art in artifacts.items():
        reason = unavailable(art.engine)
        if reason:
            run.note("verify", name, None, "skipped", reason)
            reports[name] = Skipped(reason)
            continue
        reference = models[art.source][0]
        path = run.out / "verify" / f"{name}.json"
        config = VerifyConfig(Path(art.path), str(reference), spec, Tolerance(v.tolerance, v.token_match),
                              v.prompt, v.tokens, v.threads, run.progress, section_stream(run.recipe.stream))  # fmt: skip

        def check(config: VerifyConfig = config, path: Path = path) -> dict[str, Any]:
            key = ReferenceRun.key(config)
            if key not in references:
                references[key] = ReferenceRun.compute(config)
            report = verify(config, references[key]).to_dict()
            write_json_atomic(path, report)
            return {"outputs": [str(path)], **report}

        settings = {k: val for k, val in asdict(config).items() if k not in ("progress", "stream")}
        settings.update({"stream": True} if config.stream else {})
        step = run.cache.run(f"verify-{name}", {"verify": settings, "artifact": art.key}, check)
        brief = VerifyReport.from_dict(step.result).brief()
        run.note("verify", name, step, None if brief.passed else "FAILED")
        reports[name] = brief
    return reports


def run_zeroshot(run: Run, models: dict[str, tuple[Path, str]], artifacts: dict[str, ArtifactEntry]) -> RunZeroShot:
    """The recipe's zero-shot tasks on every model (torch; streamed in a streamed recipe) and on the artifacts
    it names (each in its own runtime; skipped where the runtime is missing). Each artifact's per-example results
    are compared with its source model's: ``equal_examples`` = [equal, compared]."""
    z = run.recipe.stages.zeroshot
    assert z is not None
    evaluation = zeroshot_evaluation(z)
    tasks = evaluation.tasks
    entries = [("model", name, path, key, "torch", None) for name, (path, key) in models.items()]
    entries += [("artifact", name, Path(a.path), a.key, a.engine, a.source) for name, a in artifacts.items()
                if z.artifacts is None or name in z.artifacts]  # fmt: skip
    stream = section_stream(run.recipe.stream)
    out = RunZeroShot(list(tasks.names), {}, tasks.data.source, z.limit, z.num_fewshot)
    full: dict[str, ZeroShotReport] = {}  # each model's report, for the artifacts' comparison
    for kind, name, path, key, engine, source in entries:
        section = out.model if kind == "model" else out.artifact
        reason = unavailable(engine)
        if reason:
            run.note("zeroshot", name, None, "skipped", reason)
            section[name] = Skipped(reason, source)
            continue
        config = ZeroShotConfig(str(path), tasks.names, tasks.data, z.num_fewshot, z.limit, z.batch_size, z.threads,
                                stream=stream and kind == "model", seed=evaluation.seed, progress=run.progress,
                                ranks=run.ranks)  # fmt: skip
        target = run.out / "zeroshot" / f"{kind}-{name}.json"

        def evaluate(config: ZeroShotConfig = config, target: Path = target) -> dict[str, Any]:
            report = zeroshot(config, tasks)  # under torchrun: every rank scores its share, rank 0 writes
            if run.ranks.writes:
                write_json_atomic(target, report.to_dict())
            return {"outputs": [str(target)], "path": str(target)}

        settings = {"zeroshot": evaluation.settings(), "threads": z.threads, "stream": bool(config.stream), "of": key}
        step = run.cache.run(f"zeroshot-{kind}-{name}", settings, evaluate, everywhere=True)
        report = ZeroShotReport.read(Path(step.result["path"]))
        if kind == "model":
            full[name] = report
            out.headline = out.headline or dict(report.headline)
        compared = full.get(source) if source else None
        section[name] = ZeroShotEntry(
            runtime=str(report.runtime), mean=report.mean, seconds=float(report.seconds or 0.0),
            accuracy={t: report.accuracy(t) for t in tasks.names}, source=source,
            equal_examples=list(report.equal_examples(compared)) if compared is not None else None,
        )  # fmt: skip
        run.note("zeroshot", name, step, detail=f"{report.runtime}, {report.brief()}")
    return out


def run_bench(run: Run, models: dict[str, tuple[Path, str]], artifacts: dict[str, ArtifactEntry]) -> RunBench:
    """All artifacts (and the eager models with ``torch: true``) timed interleaved per thread count."""
    b = run.recipe.stages.bench
    assert b is not None
    spec = BenchSpec(b.prompt, b.tokens, b.rounds, b.warmup, b.batch, b.seed)
    entries = {n: {"path": a.path, "key": a.key, "source": a.source, "engine": a.engine, "bytes": a.bytes}
               for n, a in artifacts.items()}  # fmt: skip
    if b.torch:
        for source in ("dense", "prune"):
            if source in models:
                path, key = models[source]
                entries[f"torch-{source}"] = {
                    "path": str(path), "key": key, "source": source, "engine": "torch", "bytes": directory_bytes(path),
                    "model": source,  # the run's model itself, not an exported artifact
                }  # fmt: skip
    skipped = {n: reason for n, e in entries.items() if (reason := unavailable(e["engine"], timing=True))}
    for name, reason in skipped.items():
        run.note("bench", name, None, "skipped", reason)
    timed = {n: e for n, e in entries.items() if n not in skipped}
    vocab = vocab_size(models["dense"][0])
    bases = {
        n: base
        for n, e in timed.items()
        if (base := next((m for m, f in timed.items() if f["engine"] == e["engine"] and f["source"] == "dense"), None))
    }

    def bench() -> dict[str, Any]:
        memory = {
            n: memory_step(run.cache, f"memory-{n}", Path(e["path"]), e["key"], spec, vocab).result
            for n, e in timed.items()
        }
        measurements = []
        for threads in b.threads:
            results = measure({n: Path(e["path"]) for n, e in timed.items()}, threads, spec, vocab, "all")
            add_speedups(results, bases)
            measurements.append(asdict(Measurement(threads, results)))
        report = {"spec": asdict(spec), "threads": b.threads, "cpu": cpu_info().to_dict(), "entries": timed,
                  "bases": bases, "memory": memory, "measurements": measurements}  # fmt: skip
        path = run.out / "bench" / "bench.json"
        write_json_atomic(path, report)
        return {"outputs": [str(path)], **report}

    step = run.cache.run("bench", {"bench": asdict(b), "entries": {n: e["key"] for n, e in timed.items()}}, bench)
    run.note("bench", f"{len(timed)} engines × threads {b.threads}", step)
    return RunBench.from_dict({**step.result, "skipped": skipped})


REPORTS = ("summary.json", "report.md", "sparsity.png", "speed.png")  # what a finished run writes last


def run_pipeline(
    recipe: Recipe, out: Path | None = None, progress: bool = True, source: str = "default", ranks: Ranks | None = None
) -> RunSummary | None:
    """Run every stage of ``recipe`` into ``out`` (default: ``recipe.out``; locked while it runs, never the
    model's directory); returns its summary (``summary.json``). Under torchrun (``ranks``) rank 0 owns the run
    directory (lock, records, reports; it must be on a file system every rank reads) and every rank takes part
    in the stages and evaluations (`StepCache`); the other ranks return None."""
    out = Path(out or recipe.out)
    ranks = ranks if ranks is not None else Ranks()
    model = resolve_model_path(recipe.model)  # before any work: what the recipe asks of this model fits it
    check_writes(recipe_outputs(recipe, out), recipe_inputs(recipe, model, source))
    check_run_dir(out)
    check_context(model, {"data.seqlen": recipe.data.seqlen, "eval.seqlen": recipe.eval.seqlen})
    check_model_fits(recipe, model, source)
    ranks.barrier("the run's checks")  # every rank checked, before rank 0 writes
    if not ranks.writes:
        _run_pipeline(recipe, out, progress, source, ranks)
        return None
    with locked_dir(out):
        check_run_dir(out)  # again under the lock: another process may have written it meanwhile
        for name in REPORTS:  # a rerun's report is never the last run's: removed until this run writes its own,
            (out / name).unlink(missing_ok=True)  # before the record says unfinished (a report ⇒ a finished run)
        (out / "state").mkdir(exist_ok=True)
        write_json_atomic(out / RUN_RECORD, {**_run_record(recipe, source), "finished": False})  # ours from now on
        return _run_pipeline(recipe, out, progress, source, ranks)


RUN_RECORD = "run.json"


def _run_record(recipe: Recipe, source: str) -> dict[str, Any]:
    return {"recipe": asdict(recipe), "source": source}


def recipe_outputs(recipe: Recipe, out: Path) -> list[Output]:
    """What a run writes outside its run directory's own files: the run directory, and an offload directory."""
    outputs = [Output("recipe out" if out == Path(recipe.out) else "--out", out, "dir")]
    if recipe.stream is not None and recipe.stream.offload_dir is not None:
        outputs.append(Output("stream.offload_dir", Path(recipe.stream.offload_dir), "dir"))
    return outputs


def recipe_inputs(recipe: Recipe, model: Path, source: str) -> list[Path]:
    """Every file or directory a recipe reads: the model, the recipe itself, data files, a plan, task data."""
    named = [recipe.data.dataset, recipe.eval.dataset]
    if recipe.stages.prune is not None and recipe.stages.prune.plan is not None:
        named.append(str(recipe.stages.prune.plan))
    if recipe.stages.zeroshot is not None:
        named.append(recipe.stages.zeroshot.task_data)
    return [model, *([Path(source)] if Path(source).is_file() else []), *(Path(n) for n in named if Path(n).exists())]


RUN_ENTRIES = frozenset({"state", "prune", "quantize", "export", "verify", "zeroshot", "bench", RUN_RECORD, *REPORTS})


def check_run_dir(out: Path) -> None:
    """A run writes only into a directory that is new, empty, or its own run directory: ``state/`` and a
    ``run.json`` holding the recipe (every run writes both when it starts), or — a run of an older slimpack,
    killed before it wrote ``run.json`` at its end — only names a run writes and step records in ``state/``
    (`owned_by_steps`). Anything else is refused in one line."""
    if not out.is_dir():
        return  # new (a file there is refused by `check_writes`)
    entries = {p.name for p in out.iterdir()} - {".lock"}
    if not entries:
        return
    try:
        ours = (out / "state").is_dir() and isinstance(json.loads((out / RUN_RECORD).read_text())["recipe"], dict)
    except (OSError, ValueError, KeyError, TypeError):
        ours = owned_by_steps(out, entries, RUN_ENTRIES)
    if not ours:
        shown = ", ".join(repr(e) for e in sorted(entries)[:3]) + (", …" if len(entries) > 3 else "")
        raise SlimpackError(
            f"run directory {str(out)!r} is not empty ({shown}) and is not a slimpack run directory (no {RUN_RECORD} "
            "and state/); a run writes only into a new, empty or its own run directory — choose another --out"
        )


def _run_pipeline(recipe: Recipe, out: Path, progress: bool, source: str, ranks: Ranks) -> RunSummary | None:
    start = time.perf_counter()
    run = Run(recipe, out, progress, ranks)
    st = recipe.stages
    models, figures = run_models(run)
    artifacts = run_exports(run, models) if st.export else {}
    verified = run_verify(run, models, artifacts) if st.verify is not None else {}
    accuracy = run_zeroshot(run, models, artifacts) if st.zeroshot is not None else None
    bench = run_bench(run, models, artifacts) if st.bench is not None else None
    wall = time.perf_counter() - start
    failed = [n for n, r in verified.items() if isinstance(r, VerifyBrief) and not r.passed]
    if not ranks.writes:  # the run's records and reports are rank 0's
        return None
    summary = RunSummary(
        recipe=source,
        model=str(models["dense"][0]),
        models=figures,
        artifacts=artifacts,
        verify=verified,
        zeroshot=accuracy,
        bench=bench,
        steps=run.steps,
        wall_seconds=round(wall, 1),
        passed=not failed,
    )
    steps = [asdict(s) for s in run.steps]
    write_json_atomic(out / RUN_RECORD, {**_run_record(recipe, source), "finished": True, "steps": steps,
                                         "wall_seconds": round(wall, 1), "environment": environment()})  # fmt: skip
    plots = write_run_plots(summary, out)  # the reports after the record: a report exists only for a finished run
    write_text_atomic(out / "report.md", run_markdown(summary, plots))
    write_json_atomic(out / "summary.json", summary.to_dict())  # last: a run directory with summary.json is complete
    return summary
