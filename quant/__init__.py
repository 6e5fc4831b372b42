"""quant/ — 4-bit (2–8) quantization on the core's walker, and the GPTQ checkpoint.

- `grid` integer grids with 0 exact; `pack` GPTQ bit packing; `methods` GPTQ (the core's OBS sweep) and RTN as
  layer methods, mask-aware and joint with any pruner; `checkpoint` writes the GPTQ format and registers its
  loader as a checkpoint kind of `prune.models`; `api` the quantize stage; `cli` the ``slimpack quantize``
  and ``slimpack check`` commands; `report` the quantization table; `external/` the GPTQModel and AutoGPTQ
  cross-checks (``slimpack check``; each runtime in its own environment).
- May import: `prune` only. Importing `quant` registers the GPTQ checkpoint kind.
"""

from quant import checkpoint as _checkpoint  # noqa: F401  (registers the GPTQ checkpoint kind)
