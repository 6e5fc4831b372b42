"""``slimpack check gptqmodel | autogptq``: a GPTQ checkpoint of ours loaded by another runtime, in its own
environment, and its logits and dequantized weights compared with ours.

- `gptqmodel_check` (the shared machinery: `Runtime`, `compare_in`, `RuntimeCheck`) and `autogptq_check` run in
  slimpack's environment and may import `prune` and `quant`;
- ``gptqmodel_probe.py`` and ``autogptq_probe.py`` are run by the runtime's own interpreter (``.venv-gptqmodel``,
  ``.venv-autogptq``) and import nothing of slimpack's (`tests/unit/test_layers.py` checks both rules).
"""
