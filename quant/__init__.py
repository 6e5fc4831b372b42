"""quant/ — 4-bit (2–8) quantization on the core's walker, and the GPTQ checkpoint.

- `grid` integer grids with 0 exact; `pack` GPTQ bit packing; `methods` GPTQ (the core's OBS sweep) and RTN as
  layer methods, mask-aware and joint with any pruner; `checkpoint` writes the GPTQ format and reads it back
  (a checkpoint kind of `prune.checkpoint_kinds`, listed in pyproject.toml's entry points); `stage` the quantize stage and its GPTQ output; `api` ``quantize`` (the API); `cli` the ``slimpack quantize``
  and ``slimpack check`` commands; `report` the quantization table; `external/` the GPTQModel and AutoGPTQ
  cross-checks (``slimpack check``; each runtime in its own environment).
- May import: `prune` only. Its checkpoint kind is an entry point (pyproject.toml).
"""
