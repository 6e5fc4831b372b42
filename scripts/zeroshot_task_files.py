"""Write runtime_bench/zeroshot_tasks/wikitext.jsonl and gsm8k.jsonl: slimpack's own 30 items each (issue #29's
rolling and generation tasks, offline). wikitext: 30 pages of CPython's ``pydoc_data.topics`` (600–2500 characters,
in sorted key order) as ``{"page": …}``; gsm8k: 30 one-step arithmetic word problems from three templates, with
GSM8K's ``"… #### N"`` answers. Not the datasets' data.

    .venv/bin/python scripts/zeroshot_task_files.py
"""
import json
from pathlib import Path
from pydoc_data.topics import topics

out = Path("runtime_bench/zeroshot_tasks")
pages = [topics[k].strip() for k in sorted(topics) if 600 <= len(topics[k]) <= 2500][:30]
assert len(pages) == 30
(out / "wikitext.jsonl").write_text("".join(json.dumps({"page": p}) + "\n" for p in pages))

names = ["Ana", "Ben", "Carla", "Dev", "Ema", "Farid", "Gia", "Hugo", "Ines", "Jon"]
things = ["apples", "pencils", "stamps", "marbles", "books", "cards", "shells", "coins", "stickers", "buttons"]
rows = []
for i in range(30):
    name, thing = names[i % 10], things[(3 * i) % 10]
    a, b, c = 3 + (7 * i) % 17, 2 + (5 * i) % 11, 2 + i % 4
    if i % 3 == 0:
        q = f"{name} has {a} {thing}. A friend gives {name} {b} more. How many {thing} does {name} have now?"
        ans = f"{name} has {a} + {b} = {a + b} {thing}.\n#### {a + b}"
    elif i % 3 == 1:
        q = f"{name} buys {c} boxes of {thing} with {a} {thing} in each box. How many {thing} is that in all?"
        ans = f"That is {c} * {a} = {c * a} {thing}.\n#### {c * a}"
    else:
        total = a + b
        q = f"{name} had {total} {thing} and gave {b} of them away. How many {thing} are left?"
        ans = f"{name} has {total} - {b} = {a} {thing} left.\n#### {a}"
    rows.append({"question": q, "answer": ans})
(out / "gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
