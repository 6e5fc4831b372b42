"""Issue #29's parity table (docs/results/zeroshot.md): slimpack's zero-shot model over each runtime against
lm-eval's own Hugging Face model (``HFLM``, fp32, batch 1) on the model the artifact was exported from, both in
this process, one after the other for each row (slimpack first, then lm-eval), on the local task files.

Per row: per-example results equal (every metric of every document and filter), the largest difference of a
log-likelihood (nats), generated strings equal, the requests, and each side's seconds (``simple_evaluate`` alone:
loading the model or artifact is not counted) with their ratio.

    .venv/bin/python scripts/zeroshot_parity.py runs/parity [--limit N]   # after scripts/zeroshot_parity.sh

``runs/parity`` holds what ``scripts/zeroshot_parity.sh`` builds: ``dense`` (SmolLM2), ``dense-bos`` (its tokenizer
made to prepend BOS), ``default-prune``, ``default-quantize-hf`` (the GPTQ checkpoint's weights, dequantized) and
the artifacts ``art-onnx``, ``art-onnx-int4``, ``art-deepsparse``. Writes ``parity.json`` after each row (``--only``
measures some rows again, keeping the others) and prints the table of every row it holds.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import lm_eval
from lm_eval.models.huggingface import HFLM

from runtime_bench.engines import unavailable
from runtime_bench.zeroshot import PAPER_TASKS, TaskData, Tasks, ZeroShotConfig, engine_lm, example_value, open_source

ROWS = [  # label, what slimpack runs, the model lm-eval's HF model runs, tasks
    ("SmolLM2 dense (torch)", "dense", "dense", PAPER_TASKS),
    ("SmolLM2, a BOS-adding tokenizer (torch)", "dense-bos", "dense-bos", PAPER_TASKS),
    ("default prune → onnx (onnxruntime)", "art-onnx", "default-prune", PAPER_TASKS),
    ("default quantize → onnx-int4 (onnxruntime)", "art-onnx-int4", "default-quantize-hf", PAPER_TASKS),
    ("default prune → deepsparse (DeepSparse 1.8)", "art-deepsparse", "default-prune", PAPER_TASKS),
    ("SmolLM2 dense: wikitext (rolling)", "dense", "dense", ("wikitext",)),
    ("SmolLM2 dense: gsm8k (generation)", "dense", "dense", ("gsm8k",)),
]


def evaluate(lm: Any, tasks: Tasks, limit: int | None) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model=lm, tasks=copy.deepcopy(tasks.specs), num_fewshot=0, limit=limit, task_manager=tasks.manager,
        log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0,
        bootstrap_iters=0,
    )  # fmt: skip
    return out, time.perf_counter() - start


def numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in numbers(v)]
    return []


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in strings(v)]
    return []


def examples(out: dict[str, Any], names: tuple[str, ...]) -> dict[str, dict[str, list[Any]]]:
    """Per task and metric (``metric,filter`` for a filter other than none) the per-document results."""
    found: dict[str, dict[str, list[Any]]] = {}
    for task in names:
        for s in sorted(out["samples"][task], key=lambda s: (s["doc_id"], s["filter"])):
            for metric in s["metrics"]:
                key = metric if s["filter"] == "none" else f"{metric},{s['filter']}"
                found.setdefault(task, {}).setdefault(key, []).append(example_value(s[metric]))
    return found


def compare(ours: dict[str, Any], theirs: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    equal = compared = requests = 0
    max_ll, texts_equal, texts = 0.0, 0, 0
    for task in names:
        mine = sorted(ours["samples"][task], key=lambda s: (s["doc_id"], s["filter"]))
        ref = sorted(theirs["samples"][task], key=lambda s: (s["doc_id"], s["filter"]))
        for a, b in zip(mine, ref, strict=True):
            requests += len(b["arguments"]) if b["filter"] == ref[0]["filter"] else 0
            for metric in b["metrics"]:
                equal += example_value(a[metric]) == example_value(b[metric])
                compared += 1
            diffs = [abs(x - y) for x, y in zip(numbers(a["resps"]), numbers(b["resps"]), strict=True)]
            max_ll = max([max_ll, *diffs])
            got, want = strings(a["resps"]), strings(b["resps"])
            texts += len(want)
            texts_equal += sum(x == y for x, y in zip(got, want, strict=True))
    return {"equal": equal, "compared": compared, "max_abs_ll_diff": max_ll, "requests": requests,
            "strings_equal": texts_equal, "strings": texts}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="first N documents of each task (default all)")
    parser.add_argument("--only", nargs="+", default=None, help="rows whose label starts with one of these")
    args = parser.parse_args()
    out = args.root / "parity.json"
    rows: list[dict[str, Any]] = []

    def keep(row: dict[str, Any]) -> None:  # written after every row; a row measured again replaces its old one
        rows.append(row)
        old = [r for r in json.loads(out.read_text()) if r["row"] != row["row"]] if out.is_file() else []
        order = [label for label, *_ in ROWS]
        merged = sorted([*old, row], key=lambda r: order.index(r["row"]) if r["row"] in order else len(order))
        out.write_text(json.dumps(merged) + "\n")

    for label, target, reference, names in ROWS:
        if args.only and not any(label.startswith(o) for o in args.only):
            continue
        path = args.root / target
        if target == "art-deepsparse" and (reason := unavailable("deepsparse")):
            keep({"row": label, "skipped": reason})
            continue
        tasks = Tasks.prepare(names, TaskData("local"))
        opened = open_source(ZeroShotConfig(str(path), names, TaskData("local"), progress=False, threads=2))
        ours_lm, _ = engine_lm(opened, progress=False)
        window = ours_lm.max_length
        ours, ours_s = evaluate(ours_lm, tasks, args.limit)
        if opened.close is not None:
            opened.close()
        hf = HFLM(pretrained=str(args.root / reference), device="cpu", batch_size=1, dtype="float32")
        theirs, theirs_s = evaluate(hf, tasks, args.limit)
        del hf
        row = {"row": label, "tasks": list(names), "bos": ours_lm.adds_bos, "window": window,
               **compare(ours, theirs, names), "slimpack_s": round(ours_s, 1), "lm_eval_hf_s": round(theirs_s, 1)}  # fmt: skip
        row["ratio"] = round(ours_s / theirs_s, 3)
        row["examples"] = examples(ours, names)  # slimpack's, to set beside earlier reports
        keep(row)
        print(json.dumps({k: v for k, v in row.items() if k != "examples"}), flush=True)
    rows = json.loads(out.read_text()) if out.is_file() else []  # the table: every row measured so far
    print("\n| row | BOS | per-example results equal | max \\|Δ log-likelihood\\| (nats) | generated strings equal "
          "| requests | slimpack s | lm-eval hf s | slimpack / lm-eval |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for r in rows:
        if "skipped" in r:
            print(f"| {r['row']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        texts = f"{r['strings_equal']} / {r['strings']}" if r["strings"] else "—"
        print(f"| {r['row']} | {'yes' if r['bos'] else 'no'} | {r['equal']} / {r['compared']} | "
              f"{r['max_abs_ll_diff']:.1e} | {texts} | {r['requests']} | {r['slimpack_s']} | {r['lm_eval_hf_s']} | "
              f"{r['ratio']:.2f}× |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
