"""runtime_bench/ — the top floor: runs and times artifacts, and orchestrates the whole job.

Two rooms, the lower never importing the upper:
- the benchmark proper: `engines/` (the one way to run each artifact, with declared limits), `kernels/`
  (slimpack's own CPU sparse kernels), `harness` (timing discipline, `BenchSpec`, `measure`), `latency` (the
  timing of chosen artifacts: ``slimpack bench ART|NAME=PATH``), `memory` (peak RSS in a fresh process), `verify` (an
  artifact in its own runtime against its reference), `zeroshot` / `lm_eval_model` / `logit_sources` (zero-shot
  tasks through lm-evaluation-harness on any engine), `report`, `paper`, and `shapes` (random-weight models with
  real shapes, for measurements at scale);
- `pipeline/`: ``slimpack run`` (recipe, run) and ``slimpack bench sweep`` (sweep), built from resumable steps
  (stages, steps) and one description of how an artifact is made (targets); their records (summary: `RunSummary`,
  `SweepReport`) and reports (report).
`cli` defines ``eval``, ``verify``, ``bench``, ``run`` and ``kernels`` and is the console script (every package's
commands are pyproject.toml's entry points).
`external/` holds scripts other runtimes' interpreters run; they import nothing of slimpack's.
May import: `prune`, `quant`, `export`.
"""
