"""``python -m runtime_bench.kernels``: build the sparse kernels (a no-op when up to date) and say where and which
ISA paths this CPU runs; one line and exit 2 if they cannot be built."""

from __future__ import annotations

import sys

from prune.errors import SlimpackError
from runtime_bench.kernels import build_dir, isas


def main() -> int:
    try:
        paths = isas()
    except SlimpackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"slimpack sparse kernels built in {build_dir()} (ISA paths: {', '.join(paths)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
