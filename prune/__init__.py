"""prune/ — the ground floor: the shared core every other package builds on.

Holds: `models` (load/save, checkpoint kinds registry, architecture adapters), `lazy`, `stream` and `shards`
(the streamed path: a skeleton whose blocks are read from and written to shards), `data` (calibration and
evaluation text), `walker` (block-by-block calibration), `stats` (accumulators), `masks`, `obs` (the one OBS
sweep), `metrics/` and `methods/` (pure math + layer methods), `allocation/` (sparsity plans), `structured/`
(heads/channels), `eval` (perplexity), `spec` (the pruning / eval / job specs, declared once), `manifest` (the
typed ``slimpack.json``), `stage` (the one stage template), `api` (prune, plan, evaluate), `cli` (``main``, the
command registry and the shared argument groups), `report` and `plots`.
May import: nothing of slimpack's other packages. Higher packages register into its registries (commands,
checkpoint kinds, result tables); it never names them.
"""
