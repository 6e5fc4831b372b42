"""Run inside .venv-gptqmodel: load a GPTQ checkpoint with GPTQModel, write its logits and the weights its
quantized modules dequantize to. Usage: python gptqmodel_probe.py CHECKPOINT IDS.safetensors OUT.safetensors DTYPE

Only torch, safetensors and gptqmodel are imported: this file is executed by another interpreter.
"""

from __future__ import annotations

import sys

import torch
from gptqmodel import GPTQModel
from safetensors.torch import load_file, save_file


def main(checkpoint: str, ids_path: str, out_path: str, dtype: str) -> None:
    model = GPTQModel.load(checkpoint, device="cpu", dtype=getattr(torch, dtype))
    tensors: dict[str, torch.Tensor] = {}
    kernels = set()
    for name, module in model.model.named_modules():  # before the forward: the fused kernel repacks on first use
        if hasattr(module, "dequantize_weight") and hasattr(module, "qweight"):
            kernels.add(type(module).__name__)
            tensors[f"weight:{name}"] = module.dequantize_weight().float().T.contiguous()  # [in, out] → [out, in]
    ids = load_file(ids_path)["input_ids"]
    with torch.inference_mode():
        tensors["logits"] = model.model(input_ids=ids).logits.float().contiguous()
    save_file(tensors, out_path, metadata={"kernels": ",".join(sorted(kernels)), "dtype": dtype})


if __name__ == "__main__":
    main(*sys.argv[1:5])
