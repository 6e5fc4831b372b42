"""Build a random-weight model with a real model's shapes (bf16, sharded): `runtime_bench.shapes`.

.venv/bin/python scripts/shape_model.py llama2-7b shapes/llama2-7b [--layers 2]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from runtime_bench.shapes import SHAPES, build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int, default=None, help="fewer blocks than the real model")
    parser.add_argument("--shard-size", type=int, default=2048, metavar="MIB")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    build(args.shape, args.out, args.layers, shard_mib=args.shard_size, overwrite=args.overwrite)
    logging.info("%s → %s in %.0f s", args.shape, args.out, time.perf_counter() - start)


if __name__ == "__main__":
    main()
