"""Tables of docs/results/zeroshot.md from the ``zs-*.json`` reports of scripts/zeroshot_smollm2.sh.

``python scripts/zeroshot_report.py runs/zeroshot`` prints markdown: accuracy per task (the headline metric:
acc_norm where the task has it, else acc) and the mean, one row per model or artifact; then, for each artifact,
how many examples differ from the torch model it was exported from.
"""

from __future__ import annotations

import sys
from pathlib import Path

from runtime_bench.zeroshot import PAPER_TASKS, ZeroShotReport

ROWS = [
    ("dense", "dense (torch)"),
    ("wanda-50", "Wanda 50 % (torch)"),
    ("sparsegpt-50", "SparseGPT 50 % (torch)"),
    ("sparsegpt-24", "SparseGPT 2:4 (torch)"),
    ("default-prune", "default run: SparseGPT + DLP 50 % (torch)"),
    ("art-onnx", "↳ its onnx export (onnxruntime)"),
    ("art-deepsparse", "↳ its deepsparse export (DeepSparse)"),
    ("default-quantize", "default run: + GPTQ 4-bit g64 act-order (torch, dequantized)"),
    ("art-onnx-int4", "↳ its onnx-int4 export (onnxruntime MatMulNBits)"),
]
PAIRS = [("art-onnx", "default-prune"), ("art-deepsparse", "default-prune"), ("art-onnx-int4", "default-quantize")]


def load(root: Path, name: str) -> ZeroShotReport | None:
    path = root / f"zs-{name}.json"
    return ZeroShotReport.read(path) if path.is_file() else None


def main(root: Path) -> None:
    head = ["model", *PAPER_TASKS, "mean"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, label in ROWS:
        r = load(root, name)
        if r is None:
            print(f"| {label} | " + " | ".join(["not run"] * (len(head) - 1)) + " |")
            continue
        cells = [f"{100 * r.accuracy(t):.1f}" for t in PAPER_TASKS]
        print(f"| {label} | " + " | ".join(cells) + f" | **{100 * r.mean:.2f}** |")
    print("\n| artifact | against | examples compared | examples that differ (acc / acc_norm) |\n|---|---|---|---|")
    for art, src in PAIRS:
        a, s = load(root, art), load(root, src)
        if a is None or s is None:
            continue
        equal, compared = a.equal_examples(s)
        differ = compared - equal
        print(f"| {art} ({a.runtime}) | {src} | {compared} | {differ} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/zeroshot"))
