"""runtime_bench/ — the top floor: runs and times artifacts, and orchestrates the whole job.

Two rooms, the lower never importing the upper:
- the benchmark proper: `engines/` (the one way to run each artifact, with declared limits), `harness` (timing
  discipline, `BenchSpec`, `measure`), `latency` (NAME=PATH comparisons), `memory` (peak RSS in a fresh
  process), `verify` (an artifact in its own runtime against its reference), `report`, `paper`, and `shapes`
  (random-weight models with real shapes, for measurements at scale);
- `pipeline/`: ``slimpack run`` (recipe, run) and ``slimpack bench sweep`` (sweep), built from resumable steps
  (stages, steps) and one description of how an artifact is made (targets).
`cli` registers ``verify``, ``bench`` and ``run`` and is the console script (it imports every package's commands).
May import: `prune`, `quant`, `export`.
"""
