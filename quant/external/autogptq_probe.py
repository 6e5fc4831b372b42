"""Run inside .venv-autogptq: load a GPTQ checkpoint with AutoGPTQ 0.7.1 on the CPU, write its logits and the
weights its quantized modules dequantize to. Usage: python autogptq_probe.py CHECKPOINT IDS.safetensors
OUT.safetensors DTYPE

AutoGPTQ 0.7.1 has no CPU kernel here: its compiled extensions (CUDA, ExLlama v1/v2, Marlin) need CUDA, and
QiGen (its only CPU kernel) is neither in the PyPI wheel nor in the sdist. With exllama / exllamav2 / triton /
marlin / qigen off, ``dynamically_import_QuantLinear`` picks ``qlinear_cuda_old`` (``desc_act`` false) or
``qlinear_cuda`` (``desc_act`` true), whose forward off CUDA unpacks ``qweight`` / ``qzeros`` with torch ops and
runs ``x @ (scales[g_idx] · (q − (qzeros + 1)))`` in the model's dtype. Those modules have no dequantize method,
so the weights are read through that same forward: ``module(I) − bias`` is ``Wᵀ`` exactly (one non-zero term
per output). A JSON line on stdout names the QuantLinear class and the load settings.

Only torch, safetensors and auto_gptq are imported: this file is executed by another interpreter.
"""

from __future__ import annotations

import json
import sys

import torch
from auto_gptq import AutoGPTQForCausalLM
from auto_gptq.utils.import_utils import dynamically_import_QuantLinear
from safetensors.torch import load_file, save_file

LOAD = {
    "device": "cpu",
    "use_triton": False,
    "use_qigen": False,  # cQIGen is not built by the wheel nor the sdist
    "use_marlin": False,  # CUDA only
    "disable_exllama": True,
    "disable_exllamav2": True,
    "inject_fused_attention": False,
    "inject_fused_mlp": False,
}


def main(checkpoint: str, ids_path: str, out_path: str, dtype: str) -> None:
    torch_dtype = getattr(torch, dtype)
    model = AutoGPTQForCausalLM.from_quantized(checkpoint, torch_dtype=torch_dtype, **LOAD)
    config = model.quantize_config
    quant_linear = dynamically_import_QuantLinear(
        use_triton=False, desc_act=config.desc_act, group_size=config.group_size, bits=config.bits,
        disable_exllama=True, disable_exllamav2=True, use_qigen=False, disable_marlin=True,
    )  # fmt: skip
    tensors: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for name, module in model.model.named_modules():
            if isinstance(module, quant_linear):
                eye = torch.eye(module.infeatures, dtype=torch_dtype)
                w_t = module(eye) - (module.bias if module.bias is not None else 0)  # [in, out]
                tensors[f"weight:{name}"] = w_t.float().T.contiguous()
        ids = load_file(ids_path)["input_ids"]
        tensors["logits"] = model.model(input_ids=ids).logits.float().contiguous()
    kernel = f"{quant_linear.__module__.rpartition('.')[2]}.{quant_linear.__name__}"
    save_file(tensors, out_path, metadata={"kernels": kernel, "dtype": dtype})
    print(json.dumps({"kernels": kernel, "dtype": dtype, "quantized_modules": len(tensors) - 1, **LOAD}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
