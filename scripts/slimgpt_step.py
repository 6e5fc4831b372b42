"""Time SlimGPT's OBS step (`prune.structured.slimgpt`) on one linear at a real shape, with random data.

``python scripts/slimgpt_step.py --out 4096 --in 11008 --remove 4119`` times `prune_channels` on LLaMA-2-7B's
``down_proj`` (4119 of 11008 channels: the 30 % run of docs/results/scale.md); ``--heads N --head-dim D
--kv-heads K`` times `prune_heads` on an ``o_proj`` instead. The values do not matter for the time.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from prune.structured.slimgpt import damped_inverse, prune_channels, prune_heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=int, default=4096, help="output features of the linear")
    parser.add_argument("--in", dest="inputs", type=int, default=11008, help="input features (columns)")
    parser.add_argument("--remove", type=int, default=4119, help="columns (channels) or heads to remove")
    parser.add_argument("--heads", action="store_true", help="remove heads of --head-dim columns (o_proj)")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=2048, help="calibration tokens of the Hessian")
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(args.tokens, args.inputs, generator=gen)
    H = 2 * X.T @ X / args.tokens
    W = torch.randn(args.out, args.inputs, generator=gen)
    start = time.perf_counter()
    damped_inverse(H, 0.01)
    inverse = time.perf_counter() - start
    start = time.perf_counter()
    if args.heads:
        prune_heads(W, H, args.remove, args.head_dim, args.kv_heads)
    else:
        prune_channels(W, H, args.remove)
    total = time.perf_counter() - start
    print(json.dumps({"shape": [args.out, args.inputs], "removed": args.remove, "heads": args.heads,
                      "inverse_seconds": round(inverse, 2), "seconds": round(total, 2),
                      "threads": torch.get_num_threads()}))  # fmt: skip


if __name__ == "__main__":
    main()
