"""The external check that a slimpack GPTQ checkpoint loads in AutoGPTQ (PyPI ``auto-gptq`` 0.7.1, the last
release; CPU) in its own environment (``scripts/setup-autogptq.sh`` → ``.venv-autogptq``): its logits and
dequantized weights are compared with our loader's, as `quant.external.gptqmodel_check` does for GPTQModel.

AutoGPTQ 0.7.1 runs here on its torch fallback (no CPU kernel: ``quant/external/autogptq_probe.py`` says why).
`compare` refuses, in one line, a checkpoint AutoGPTQ 0.7.1 (with its transformers 4.38) would misread, rather
than report that as a mismatch of ours — each found on SmolLM2's checkpoint:
- ``checkpoint_format: gptq_v2``: it reads only v1, ignores ``checkpoint_format`` and adds 1 to every stored zero
  point (every weight one quantization step off);
- tied embeddings with no ``lm_head.weight`` stored (the HF convention): its accelerate load leaves the shared
  embedding / lm_head at zero (every logit 0);
- a ``rope_theta`` other than 10 000 kept only in transformers 5's ``rope_parameters``: transformers 4.38 reads
  the legacy top-level ``rope_theta`` and falls back to 10 000 (SmolLM2's is 100 000).
With the last two adjusted in a copy (``lm_head.weight`` stored, untied; ``rope_theta`` added), SmolLM2's
logits through AutoGPTQ equal ours exactly (docs/results/quant.md).

``slimpack check autogptq CHECKPOINT [--tokens N] [--dtype float32]`` prints the comparison;
``--copy-to DIR`` first writes `autogptq_copy` of the checkpoint there and compares AutoGPTQ on the copy with
ours on the checkpoint. The copy is written beside DIR and renamed to it only when the check succeeds: a check that
fails leaves nothing. ``--tokens``, the environment and the paths written are checked before any work
(`quant.external.gptqmodel_check.RuntimeCheck`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from prune.architecture import ADAPTERS
from prune.errors import SlimpackError
from prune.io import atomic_output_dir, external_python
from prune.lazy import INDEX_FILE, read_index
from prune.model_config import read_config
from quant.checkpoint import read_quantization_config
from quant.external.gptqmodel_check import Comparison, Runtime, RuntimeCheck, compare_in

PROBE = Path(__file__).with_name("autogptq_probe.py")


def autogptq_python() -> Path:
    """The interpreter of the AutoGPTQ environment: ``$SLIMPACK_AUTOGPTQ_PYTHON`` or ``.venv-autogptq``."""
    return external_python("AutoGPTQ", "SLIMPACK_AUTOGPTQ_PYTHON", ".venv-autogptq")


AUTOGPTQ = Runtime("AutoGPTQ", autogptq_python, PROBE)


def misreadings(checkpoint: Path) -> list[str]:
    """What AutoGPTQ 0.7.1 and its transformers 4.38 would misread in ``checkpoint`` (see the module docstring)."""
    config = read_config(Path(checkpoint))
    found = []
    fmt = (read_quantization_config(Path(checkpoint)) or {}).get("checkpoint_format", "gptq")
    if fmt != "gptq":
        found.append(f"it reads only checkpoint_format 'gptq' (v1) and would misread {fmt!r} (zero points off by one; "
                     "write it with --checkpoint-format gptq)")  # fmt: skip
    if config.get("tie_word_embeddings", True) and "lm_head.weight" not in read_index(Path(checkpoint))[0]:
        found.append("its CPU load leaves tied embeddings (no lm_head.weight stored) at zero: every logit would be 0")
    theta = (config.get("rope_parameters") or {}).get("rope_theta")
    if "rope_theta" not in config and theta is not None and float(theta) != 10000.0:
        found.append(f"transformers 4.38 reads no rope_parameters: it would use rope_theta 10000, not {theta:g}")
    return found


def compare(
    checkpoint: Path, input_ids: torch.Tensor, dtype: str = "float32", timeout: int = 900, reference: Path | None = None
) -> Comparison:
    """Logits and dequantized weights of AutoGPTQ on ``checkpoint`` vs `prune.models.load_model` on ``reference``
    (default: the checkpoint) on ``input_ids [1, T]``; a checkpoint it would misread is refused (`misreadings`)."""
    found = misreadings(checkpoint)
    if found:
        raise SlimpackError(
            f"{checkpoint}: AutoGPTQ 0.7.1 would misread it: {'; '.join(found)} (`--copy-to DIR` writes a copy with "
            "the embeddings untied and rope_theta set)"
        )
    try:
        return compare_in(AUTOGPTQ, checkpoint, input_ids, dtype, timeout, reference)
    except (RuntimeError, KeyError) as err:  # its logits or weights do not fit ours: no traceback, one line
        first = (str(err).splitlines() or [""])[0][:200]
        raise SlimpackError(
            f"AutoGPTQ's output for {checkpoint} does not match our model's ({type(err).__name__}: {first}); "
            "check the checkpoint with `slimpack inspect` and AutoGPTQ's environment (scripts/setup-autogptq.sh)"
        ) from None


def autogptq_copy(checkpoint: Path, out: Path) -> Path:
    """A copy of ``checkpoint`` that AutoGPTQ 0.7.1 reads right (same weights): tied embeddings stored as an
    untied ``lm_head.weight`` (in the single file, or a shard added to the index) and the legacy ``rope_theta``.
    Written atomically (an existing ``out`` is refused); the checkpoint is not modified. Its ``slimpack.json`` is
    left out: its file hashes would not describe the copy."""
    with atomic_output_dir(out, False, [checkpoint]) as tmp:
        write_copy(checkpoint, tmp)
    return Path(out)


def write_copy(checkpoint: Path, tmp: Path) -> Path:
    """Write `autogptq_copy` of ``checkpoint`` into ``tmp`` (an empty temporary directory); returns ``tmp``."""
    checkpoint = Path(checkpoint)
    config = read_config(checkpoint)  # not a model directory: one line
    names = read_index(checkpoint)[0]
    tie = config.get("tie_word_embeddings", True) and "lm_head.weight" not in names
    embedding_name = f"{ADAPTERS.get(config.get('model_type', '?')).embed_path}.weight"  # the one lm_head is tied to
    if tie and embedding_name not in names:
        raise SlimpackError(f"{checkpoint} ties lm_head to {embedding_name!r}, which it does not store")
    for file in checkpoint.iterdir():
        if file.is_file() and file.name != "slimpack.json":
            shutil.copy2(file, tmp / file.name)
    if tie:
        index = tmp / INDEX_FILE
        if index.is_file():
            with safe_open(str(names[embedding_name]), "pt") as fh:
                embedding = fh.get_tensor(embedding_name)
            save_file({"lm_head.weight": embedding}, str(tmp / "lm_head.safetensors"), metadata={"format": "pt"})
            data = json.loads(index.read_text())
            data["weight_map"]["lm_head.weight"] = "lm_head.safetensors"
            if "total_size" in data.get("metadata", {}):
                data["metadata"]["total_size"] += embedding.numel() * embedding.element_size()
            index.write_text(json.dumps(data, indent=2))
        else:
            single = tmp / names[embedding_name].name
            tensors = load_file(str(single))
            tensors["lm_head.weight"] = tensors[embedding_name].clone()
            save_file(tensors, str(single), metadata={"format": "pt"})
        config["tie_word_embeddings"] = False
    theta = (config.get("rope_parameters") or {}).get("rope_theta")
    if theta is not None and "rope_theta" not in config:
        config["rope_theta"] = theta
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    return tmp


AUTOGPTQ_CHECK = RuntimeCheck(
    "AutoGPTQ", "AutoGPTQ 0.7.1 (.venv-autogptq) loads a GPTQ checkpoint (v1 only): its logits and weights vs ours",
    compare, autogptq_python, copy=write_copy,
)  # fmt: skip
