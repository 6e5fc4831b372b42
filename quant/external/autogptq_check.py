"""The external check that a slimpack GPTQ checkpoint loads in AutoGPTQ (PyPI ``auto-gptq`` 0.7.1, the last
release; CPU) in its own environment (``scripts/setup-autogptq.sh`` → ``.venv-autogptq``): its logits and
dequantized weights are compared with our loader's, as `quant.external.gptqmodel_check` does for GPTQModel.

AutoGPTQ 0.7.1 runs here on its torch fallback (no CPU kernel: ``quant/external/autogptq_probe.py`` says why).
It reads only the v1 format (``checkpoint_format: gptq``): it ignores ``checkpoint_format`` and adds 1 to every
stored zero point, so a ``gptq_v2`` checkpoint would load with every weight one quantization step off —
`compare` refuses one rather than report that as a mismatch of ours.

``python -m quant.external.autogptq_check CHECKPOINT [--tokens N] [--dtype float32]`` prints the comparison.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prune.errors import SlimpackError
from prune.io import external_python
from quant.checkpoint import read_quantization_config
from quant.external.gptqmodel_check import Comparison, Runtime, check_main, compare_in

PROBE = Path(__file__).with_name("autogptq_probe.py")


def autogptq_python() -> Path:
    """The interpreter of the AutoGPTQ environment: ``$SLIMPACK_AUTOGPTQ_PYTHON`` or ``.venv-autogptq``."""
    return external_python("AutoGPTQ", "SLIMPACK_AUTOGPTQ_PYTHON", ".venv-autogptq")


AUTOGPTQ = Runtime("AutoGPTQ", autogptq_python, PROBE)


def compare(checkpoint: Path, input_ids: torch.Tensor, dtype: str = "float32", timeout: int = 900) -> Comparison:
    """Logits and dequantized weights of AutoGPTQ vs `prune.models.load_model` on ``input_ids [1, T]``."""
    fmt = (read_quantization_config(Path(checkpoint)) or {}).get("checkpoint_format", "gptq")
    if fmt != "gptq":
        raise SlimpackError(
            f"{checkpoint}: AutoGPTQ 0.7.1 reads only checkpoint_format 'gptq' (v1) and would misread {fmt!r} "
            "(zero points off by one); write it with --checkpoint-format gptq"
        )
    return compare_in(AUTOGPTQ, checkpoint, input_ids, dtype, timeout)


def main(argv: list[str] | None = None) -> int:
    return check_main(argv, "python -m quant.external.autogptq_check", __doc__, "AutoGPTQ", compare)


if __name__ == "__main__":
    raise SystemExit(main())
