"""The orchestration of ``slimpack run`` and ``slimpack bench sweep``: `recipe` (the YAML, parsed into the specs
of `prune.spec` / `quant.spec` and checked whole), `targets` (`ArtifactSpec`: how an artifact is made), `steps`
(the resumable step cache), `stages` (the steps: evaluate, prune, quantize, export, memory), `run` (the main job)
and `sweep` (speedup vs sparsity). May import everything below it; nothing below imports it.
"""
