"""How many [n, n] fp32 matrices the OBS sweep's inverse-Hessian factor holds besides H: the high-water mark of a
fresh process per variant (``/proc/self/status`` VmHWM, reset before the work), in units of one matrix.

    .venv/bin/python scripts/obs_memory.py --n 6144

Variants: ``before`` (the damped H, L, H⁻¹ and U all held: the code before the fifth part of scale.md),
``out-row-major`` (H⁻¹ written into the row-major H: torch makes a temporary) and ``now``
(`prune.obs.inverse_hessian_factor`: H⁻¹ into H's column-major view, L freed before the second Cholesky).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

VARIANTS = ("before", "out-row-major", "now")


def measure(variant: str, n: int) -> float:
    import torch

    from runtime_bench.memory import status_mib

    H = torch.full((n, n), 0.1)
    H.diagonal().add_(n)  # symmetric, diagonally dominant: positive definite, built without temporaries
    base = status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from here
    if variant == "before":
        L = torch.linalg.cholesky(H)
        Hinv = torch.cholesky_inverse(L)
        U = torch.linalg.cholesky(Hinv, upper=True)
    elif variant == "out-row-major":
        L = torch.linalg.cholesky(H)
        torch.cholesky_inverse(L, out=H)
        U = torch.linalg.cholesky(H, upper=True, out=L)
    else:
        from prune.obs import inverse_hessian_factor

        U = inverse_hessian_factor(H, 0.0)
    peak = status_mib("VmHWM")
    assert torch.isfinite(U).all()
    return (peak - base) * 2**20 / (n * n * 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6144)
    parser.add_argument("--variant", choices=VARIANTS, default=None, help="(internal: one variant, this process)")
    args = parser.parse_args()
    if args.variant:
        print(f"{measure(args.variant, args.n):.2f}")
        return
    print("| variant | extra [n, n] matrices at the high-water mark |\n|---|---|")
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--n", str(args.n), "--variant", variant],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        print(f"| {variant} | {out} |")


if __name__ == "__main__":
    main()
