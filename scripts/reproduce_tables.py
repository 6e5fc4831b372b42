"""Issue #14: the figures of docs/results/ beside the same rows rerun by ``scripts/reproduce_tables.sh DIR``.

``python scripts/reproduce_tables.py DIR`` prints one markdown row per figure: the page, the row, the value the
page shows (as printed there) and today's measurement to as many digits, and whether they agree."""

from __future__ import annotations

import sys
from pathlib import Path

from prune.manifest import Manifest
from runtime_bench.pipeline.summary import RunSummary
from runtime_bench.verify import VerifyReport

# page, row, value as the page prints it, where today's value is read (a run directory, or a verify JSON key)
ROWS = [
    ("pruning.md", "magnitude 50 % (layer)", "301.1", "magnitude-0.5"),
    ("pruning.md", "magnitude 2:4", "1229", "magnitude-2of4"),
    ("pruning.md", "sparsegpt 50 % (layer)", "15.74", "sparsegpt-0.5"),
    ("pruning.md", "sparsegpt 2:4", "23.34", "sparsegpt-2of4"),
    ("allocation.md", "wanda 2:4, DLP α = 0.15 (mixed N:M: N = 1, 2 × 28, 3)", "60.69", "wanda-nm-dlp-a0.15"),
    ("quant.md", "pgz 2:4", "22.93", "pgz-2of4"),
    ("export.md", "`onnx`: ppl torch", "15.735860", "onnx.verify.json:reference"),
    ("export.md", "`onnx`: ppl runtime", "15.735861", "onnx.verify.json:artifact"),
    ("allocation.md", "wanda dlp 50 %", "20.3", "wanda-dlp-0.5"),
    ("allocation.md", "sparsegpt dlp 50 % (plan file)", "15.84", "sparsegpt-dlp-plan-0.5"),
    ("bench.md", "default run (before #14): dense", "10.958", "earlier-default/summary.json:dense"),
    ("bench.md", "default run (before #14): prune (Wanda + DLP)", "20.298", "earlier-default/summary.json:prune"),
    (
        "bench.md",
        "default run (before #14): quantize (GPTQ 4-bit g64)",
        "26.122",
        "earlier-default/summary.json:quantize",
    ),
    ("bench.md", "the same quantize as `slimpack quantize` (its own process)", "26.122", "wanda-dlp-gptq"),
    ("quant.md", "dense, rtn 4-bit g64", "15.85", "rtn-g64"),
    ("structured.md", "SlimGPT log increase 20 %", "14.51", "slimgpt-log-0.2"),
]


def measured(root: Path, where: str) -> float | None:
    if ":" in where:
        file, key = where.split(":")
        path = root / file
        if not path.is_file():
            return None
        if file.endswith("summary.json"):
            return RunSummary.read(path).models[key].perplexity
        check = VerifyReport.read(path).perplexity
        return None if check is None else getattr(check, key).perplexity
    manifest = Manifest.read_if_any(root / where) if (root / where).is_dir() else None
    return manifest.perplexity if manifest else None


def as_printed(value: float, printed: str) -> str:
    """``value`` with the digits of ``printed`` (decimals, or significant digits of an integer)."""
    if "." in printed:
        return f"{value:.{len(printed.split('.')[1])}f}"
    return f"{value:.0f}"


def main(root: Path) -> int:
    print("| page | row | docs | today | same |\n|---|---|---|---|---|")
    same = 0
    for page, row, printed, where in ROWS:
        value = measured(root, where)
        today = as_printed(value, printed) if value is not None else "not run"
        same += today == printed
        print(f"| {page} | {row} | {printed} | {today} | {'yes' if today == printed else '**no**'} |")
    print(f"\n{same}/{len(ROWS)} figures the same")
    return 0 if same == len(ROWS) else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/reproduce")))
