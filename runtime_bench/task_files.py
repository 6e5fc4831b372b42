"""Local zero-shot task files (``--task-data local | DIR``) checked line by line before any work: one JSON object per
line, in the schema lm-eval 0.4.13's config of the task reads (`TASK_SCHEMAS`: the fields its prompt and choices
read, its gold label's field and the values it may take). `check_task_file` names the file, the line and the fault
in one line, quoting no content, and returns the file's sha256 (what its data is cached under,
`runtime_bench.zeroshot`)."""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prune.errors import SlimpackError
from prune.paths import regular_file


@dataclass(frozen=True)
class Field:
    """A record's field as a task's config uses it: what its JSON value must be (in words), and the check."""

    what: str
    ok: Callable[[Any], bool]


def strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


TEXT = Field("a string", lambda v: isinstance(v, str))
BLANK = Field('a string with a "_" for the blank', lambda v: isinstance(v, str) and "_" in v)
ENDINGS = Field("a non-empty list of strings", strings)
CHOICES = Field(
    '{"text": [strings], "label": [strings]} of one length',
    lambda v: isinstance(v, dict) and strings(v.get("text")) and strings(v.get("label"))
    and len(v["text"]) == len(v["label"]),
)  # fmt: skip


@dataclass(frozen=True)
class TaskSchema:
    """A record of a task (the papers' seven, PIQA, wikitext and GSM8K) as its lm-eval 0.4.13 config reads it
    (``zeroshot_tasks/README.md``): the fields its prompt and choices read, and its gold label's field with the
    values (JSON type included) it may take in that record."""

    fields: dict[str, Field]
    gold: str | None = None  # None: the task has no label to choose (a rolling or a generation task)
    golds: Callable[[dict[str, Any]], Sequence[Any]] = lambda doc: ()
    gold_what: str = ""

    def describe(self) -> str:
        gold = [f"{self.gold} ({self.gold_what})"] if self.gold else []
        return ", ".join([*(f"{k} ({f.what})" for k, f in self.fields.items()), *gold])

    def problem(self, doc: dict[str, Any]) -> str | None:
        """What is wrong with ``doc`` for this task, or None."""
        for key, field in {**self.fields, **({self.gold: None} if self.gold else {})}.items():
            if key not in doc:
                return f"has no field {key!r}"
            if field is not None and not field.ok(doc[key]):
                return f"has {key} {shown(doc[key])}, not {field.what}"
        if self.gold is None:
            return None
        value, allowed = doc[self.gold], self.golds(doc)
        if not any(type(value) is type(a) and value == a for a in allowed):
            return f"has {self.gold} {shown(value)}, not one of {', '.join(shown(a) for a in allowed)}"
        return None


def shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:39] + "…"


def choice_labels(doc: dict[str, Any]) -> list[str]:
    return doc["choices"]["label"]


ARC = TaskSchema({"question": TEXT, "choices": CHOICES}, "answerKey", choice_labels, "one of choices.label")
TASK_SCHEMAS: dict[str, TaskSchema] = {
    "boolq": TaskSchema({"question": TEXT, "passage": TEXT}, "label", lambda doc: (0, 1), "0 = no, 1 = yes"),
    "rte": TaskSchema({"sentence1": TEXT, "sentence2": TEXT}, "label", lambda doc: (0, 1),
                      "0 = entailment, 1 = not entailment"),
    "hellaswag": TaskSchema({"activity_label": TEXT, "ctx_a": TEXT, "ctx_b": TEXT, "endings": ENDINGS}, "label",
                            lambda doc: [str(i) for i in range(len(doc["endings"]))],
                            'the index of the right ending as a string, "0", "1", …'),
    "winogrande": TaskSchema({"sentence": BLANK, "option1": TEXT, "option2": TEXT}, "answer",
                             lambda doc: ("1", "2"), '"1" or "2"'),
    "arc_easy": ARC,
    "arc_challenge": ARC,
    "openbookqa": TaskSchema({"question_stem": TEXT, "choices": CHOICES}, "answerKey", choice_labels,
                             "one of choices.label"),
    "piqa": TaskSchema({"goal": TEXT, "sol1": TEXT, "sol2": TEXT}, "label", lambda doc: (0, 1), "0 = sol1, 1 = sol2"),
    "wikitext": TaskSchema({"page": Field("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))}),
    "gsm8k": TaskSchema({"question": TEXT, "answer": Field('a string ending in "#### <the number>"',
                                                           lambda v: isinstance(v, str) and "#### " in v)}),
}  # fmt: skip
JSON_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
              float: "a number", type(None): "null"}  # fmt: skip


def check_task_file(name: str, path: Path) -> str:
    """Every line of the local task file ``path`` checked as lm-eval's config of ``name`` reads it (`TASK_SCHEMAS`;
    another task: one JSON object per line), one line naming the file, the line and the fault if not; returns the
    file's sha256 (what its data is cached under)."""
    link = f" (a link to {str(path.resolve())!r})" if path.is_symlink() else ""
    schema = TASK_SCHEMAS.get(name)
    fix = (f"write each line of {name}.jsonl as one JSON object with "
           f"{schema.describe() if schema else 'the fields of the Hugging Face dataset'}")  # fmt: skip
    regular_file(path, f"task {name!r}: the task file", f"make it a regular file and {fix}")
    where = f"task file {str(path)!r}{link}"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SlimpackError(
            f"{where} cannot be read ({err.strerror}); make it readable, or pass another --task-data"
        ) from None
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0  # a BOM is read as `datasets` reads it
    try:
        lines = data[bom:].decode("utf-8").split("\n")
    except UnicodeDecodeError as err:
        at, row = bom + err.start, data.count(b"\n", 0, bom + err.start) + 1
        raise SlimpackError(
            f"{where} line {row} is not UTF-8 text (byte 0x{data[at]:02x} at offset {at}: a binary file?); {fix}"
        ) from None
    if lines[-1] == "":
        lines.pop()  # the last line's newline
    if not lines:
        raise SlimpackError(f"{where} is empty; {fix}")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            problem: str | None = "is blank (JSON Lines has one object on every line)"
        else:
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as err:
                problem = f"is not JSON ({err.msg} at column {err.colno})"
            else:
                problem = f"is {JSON_KINDS[type(doc)]}, not an object" if not isinstance(doc, dict) else None
                if problem is None and schema is not None:
                    problem = schema.problem(doc)
        if problem:
            raise SlimpackError(f"{where} line {number} {problem}; {fix}")
    return hashlib.sha256(data).hexdigest()
