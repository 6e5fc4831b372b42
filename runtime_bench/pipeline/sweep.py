"""``slimpack bench sweep``: prune one model at many sparsities, export each for every engine, and measure
speed against the dense model — the CPU speedup-vs-sparsity table of DLP (`001_0da1aa919c7f675c.txt`,
Table 5) for any model on any machine.

Steps (each resumable through `runtime_bench.pipeline.steps.StepCache`, so a rerun only measures):

1. ``prune-<s>``: prune at sparsity s (default Wanda with DLP allocation), evaluated under the protocol;
   ``eval-dense``: the dense model's perplexity.
2. ``<target>-<label>``: the artifact of each bench target (`runtime_bench.pipeline.targets`) for dense and every s
   (``quantize-<label>`` first for int4 targets).
3. ``memory-<target>-<label>``: peak RSS of one generation in a fresh process (`runtime_bench.memory`).
4. Measurement (never cached): per thread count and target, every artifact (dense and all sparsities) is
   loaded and timed in interleaved rounds (`runtime_bench.harness.compare`); speedups are dense / sparse
   round by round.

Outputs in ``--out``: ``sweep.json`` (everything), ``sweep.md`` (Table 5 layout per engine and thread count,
then the full figures), ``sweep.png`` (speedup vs sparsity beside the paper's). A target whose runtime is not
installed (DeepSparse's environment) is skipped, and the skip is recorded in all three.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from prune.api import PruneConfig
from prune.data import DataSpec
from prune.errors import SlimpackError
from prune.io import write_json_atomic
from prune.model_config import read_config
from prune.models import resolve_model_path
from prune.spec import EvalSpec, Job, PruneSpec, StreamSpec, section_stream
from prune.stream import refuse, stream_refusal
from quant.api import QuantizeConfig
from quant.spec import QuantizeSpec
from runtime_bench.engines import unavailable
from runtime_bench.harness import BenchSpec, add_speedups, cpu_info, measure, vocab_size
from runtime_bench.memory import MemoryProbe
from runtime_bench.pipeline.report import write_sweep_report
from runtime_bench.pipeline.stages import artifact_step, eval_step, memory_step, prune_step, quantize_step
from runtime_bench.pipeline.steps import StepCache, claim_step_dir, files_key, model_key
from runtime_bench.pipeline.summary import Measurement, SweepArtifact, SweepQuality, SweepReport
from runtime_bench.pipeline.targets import TARGETS, ArtifactSpec, engine_of, streams

log = logging.getLogger(__name__)

DENSE = "dense"


@dataclass(frozen=True)
class SweepConfig:
    model: str = "smollm2-135m"
    out: Path = Path("runs/sweep")
    sparsities: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    engines: tuple[str, ...] = ("deepsparse", "onnxruntime")
    threads: tuple[int, ...] = (1, 2)
    prune: PruneSpec = field(default_factory=lambda: PruneSpec(method="wanda", allocation="dlp"))  # its sparsity varies
    quantize: QuantizeSpec = field(default_factory=lambda: QuantizeSpec(bits=4, group_size=64))  # int4 targets
    data: DataSpec = field(default_factory=DataSpec)
    evaluate: EvalSpec | None = field(default_factory=EvalSpec)
    bench: BenchSpec = field(default_factory=BenchSpec)
    progress: bool = True
    stream: StreamSpec | None = None  # a model larger than memory: evaluated, pruned and exported streamed

    def spec_at(self, sparsity: float) -> PruneSpec:
        return replace(self.prune, sparsity=sparsity)

    def check(self) -> list[tuple[str, ArtifactSpec]]:
        """Validate everything before any work; returns the targets."""
        if not self.sparsities:
            raise SlimpackError("no sparsities given; pass e.g. --sparsities 0.1,0.5,0.9")
        for s in self.sparsities:
            if not 0 < s < 1:
                raise SlimpackError(f"sparsity {s} is outside (0, 1); pass e.g. --sparsities 0.1,0.2,…,0.9")
        if len(set(self.sparsities)) != len(self.sparsities):
            raise SlimpackError(f"sparsities {list(self.sparsities)} repeat a value")
        for t in self.threads:
            if t < 1:
                raise SlimpackError(f"threads {t} must be ≥ 1; pass e.g. --threads 1,2")
        if not self.engines or not self.threads:
            raise SlimpackError("pass at least one engine (--engines) and one thread count (--threads)")
        self.bench.check()
        self.data.check()
        if self.prune.pattern != "unstructured" or self.prune.structured is not None:
            raise SlimpackError(
                f"the sweep varies unstructured sparsity, and --pattern {self.prune.pattern} fixes it; time N:M models "
                "with `slimpack run` (a semi24 export) or `slimpack bench ART …`"
            )
        resolved = self.spec_at(self.sparsities[0]).resolve()
        targets = [(name, TARGETS.get(name)) for name in self.engines]
        if self.stream is not None:
            self.stream.check()
            refuse(stream_refusal(resolved))
            whole = [name for name, target in targets if not streams(target)]
            if whole:
                raise SlimpackError(
                    f"--stream: the {', '.join(whole)} engine{'s load' if len(whole) > 1 else ' loads'} the model whole; "
                    f"streamed sweeps time {', '.join(n for n in TARGETS.names() if streams(TARGETS.get(n)))}"
                )
        return targets


SHAPE_KEYS = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "tie_word_embeddings")  # fmt: skip


def model_shape(model_dir: Path) -> dict[str, Any]:
    """What the speed depends on: the config's layer count and sizes (a sweep of a random-weight shape model
    says so in its report)."""
    config = read_config(model_dir)
    return {key: config.get(key) for key in SHAPE_KEYS}


def label(sparsity: float) -> str:
    return DENSE if sparsity == 0 else f"s{sparsity:.2f}"


# --- the sweep ----------------------------------------------------------------------------------------


SWEEP_ENTRIES = frozenset({"state", "models", "quantized", "artifacts", "sweep.json", "sweep.md", "sweep.png"})


def sweep(config: SweepConfig) -> SweepReport:
    """Run the sweep of the module docstring; returns what ``sweep.json`` holds."""
    targets = config.check()
    skipped = {name: reason for name, t in targets if (reason := unavailable(engine_of(t), timing=True))}
    for name, reason in skipped.items():
        log.warning("skipping %s: %s", name, reason)
    active = [(name, t) for name, t in targets if name not in skipped]
    dense = resolve_model_path(config.model)
    claim_step_dir(config.out, SWEEP_ENTRIES, "sweep directory")  # never another's folder (`--out .`)
    cache = StepCache(config.out)
    data = [Path(d) for d in (config.data.dataset, config.evaluate.dataset if config.evaluate else None) if d]
    dense_key = f"{model_key(dense)}:{files_key([p for p in data if p.is_file()])}"  # their content, not their names
    vocab = vocab_size(dense)
    spec = config.prune

    def job(source: Path, out: Path, evaluate: EvalSpec | None) -> Job:
        return Job(str(source), out, config.data, overwrite=True, evaluate=evaluate, progress=config.progress,
                   stream=config.stream, store="stream" if config.stream is not None else "auto")  # fmt: skip

    stream = section_stream(config.stream)

    models: dict[str, tuple[Path, str]] = {DENSE: (dense, dense_key)}
    quality = {DENSE: SweepQuality(0.0)}
    if config.evaluate is not None:
        quality[DENSE].perplexity = eval_step(
            cache, "eval-dense", dense, config.evaluate, dense_key, config.progress, stream
        ).result["perplexity"]
    for s in config.sparsities:
        lab = label(s)
        out = config.out / "models" / f"{spec.method_name}-{spec.allocation_name}-{lab}"
        step = prune_step(
            cache, f"prune-{lab}", PruneConfig(job(dense, out, config.evaluate), config.spec_at(s)), dense_key
        )
        models[lab] = (out, step.key)
        quality[lab] = SweepQuality(step.result["sparsity"], step.result["perplexity"], step.result["seconds"])

    artifacts: dict[str, dict[str, SweepArtifact]] = {}
    for name, target in active:
        artifacts[name] = {}
        for lab, (path, key) in models.items():
            if target.source == "quantize":  # the GPTQ checkpoint of this model first
                qout = config.out / "quantized" / lab
                q = quantize_step(cache, f"quantize-{lab}", QuantizeConfig(job(path, qout, None), config.quantize), key)
                path, key = Path(q.result["path"]), q.key
            out = config.out / "artifacts" / name / lab
            built = artifact_step(cache, f"{name}-{lab}", target, path, key, out, stream)
            mem = memory_step(cache, f"memory-{name}-{lab}", Path(built.result["path"]), built.key, config.bench, vocab)
            artifacts[name][lab] = SweepArtifact(built.result["path"], built.result["bytes"],
                                                 MemoryProbe.from_dict(mem.result))  # fmt: skip

    measurements: list[Measurement] = []
    for threads in config.threads:
        for name, target in active:
            paths = {lab: Path(a.path) for lab, a in artifacts[name].items()}
            results = measure(paths, threads, config.bench, vocab, name)
            add_speedups(results, {lab: DENSE for lab in results})
            measurements.append(Measurement(threads, results, name))
    report = SweepReport(
        config={**asdict(config), "out": str(config.out),
                "prune": {**spec.to_dict(), "method": spec.method_name, "allocation": spec.allocation_name}},
        model=str(dense),
        model_shape=model_shape(dense),
        cpu=cpu_info(),
        quality=quality,
        artifacts=artifacts,
        skipped=skipped,
        measurements=measurements,
    )  # fmt: skip
    write_json_atomic(config.out / "sweep.json", report.to_dict())
    write_sweep_report(report, config.out)
    return report
