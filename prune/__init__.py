"""prune/ — the ground floor: the shared core every other package builds on.

Holds: `models` (load/save, checkpoint kinds registry, architecture adapters), `lazy`, `stream` and `shards`
(the streamed path: a skeleton whose blocks are read from and written to shards), `data` (calibration and
evaluation text), `walker` (block-by-block calibration), `stats` (accumulators), `masks`, `obs` (the one OBS
sweep), `metrics/` and `methods/` (pure math + layer methods), `allocation/` (sparsity plans), `structured/`
(heads/channels), `eval` (perplexity), `spec` (the pruning / eval / job specs, declared once), `manifest` (the
typed ``slimpack.json``; `sparsity`: its measured-sparsity record), `store` (the resident and the streamed
store: the only code that knows which one a model is in), `stage` (the one stage template), `prepare` (what a walk
needs first: layer checks, calibration, the allocated plan), `unstructured` (the unstructured / N:M stage), `api`
(prune, plan, evaluate), `cli` (``main``, the command registry and the shared argument groups), `registry`,
`report` and `plots`.
May import: nothing of slimpack's other packages. Higher packages add to its registries (commands, checkpoint
kinds, result tables, output evaluations) through pyproject.toml's entry points; it never imports them.
"""
