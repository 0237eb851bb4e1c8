"""A chain-of-thought example and the JSONL contract (DESIGN.md "Inputs").

An `Example` is (id, question, cot, answer[, flaw]): the reasoning response `cot` is trained on
exactly as given. `answer_line` says which line of a trace or a generation holds its final
answer: the last `####` line that is not a Markdown heading such as `#### Step 1`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ifexp.cache import content_hash
from ifexp.schema import IfexpError

ANSWER_MARK = "####"
REQUIRED_FIELDS = ("id", "question", "cot", "answer")


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    cot: str
    answer: str
    flaw: str = ""


@dataclass(frozen=True)
class Problem:
    """A question with its gold final answer: what a benchmark holds and a model is graded on."""

    id: str
    question: str
    answer: str


def _is_heading(line: str) -> bool:
    """`#### Step 1`, `#### **Solution**`: a line that opens with the mark and then a word."""
    stripped = line.lstrip()
    if not stripped.startswith(ANSWER_MARK):
        return False
    text = stripped.lstrip("#").strip().lstrip("*_")
    return bool(text) and text[0].isalpha()


def answer_line(lines: list[str]) -> int | None:
    """Index of the `####` answer line among a text's lines, None when it has none.

    The answer line is the last line holding `####` that is not a Markdown heading. A heading is
    a line that opens with `####` and a word (`#### Step 1`, `#### Solution`) and has more text
    after it; as the last non-empty line, `#### yes` or `#### A` is an answer.
    """
    followed = False  # is there a non-empty line after the current one?
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if ANSWER_MARK in line and not (followed and _is_heading(line)):
            return index
        followed = followed or bool(line.strip())
    return None


# ---------------------------------------------------------------------------------------------
# JSONL contract


def read_jsonl(path: str | Path) -> list[Example]:
    """Read a CoT dataset; any bad line fails with the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise IfexpError(f"{path}: dataset file not found")
    examples: list[Example] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise IfexpError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise IfexpError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            for key in REQUIRED_FIELDS:
                value = record.get(key)
                if not isinstance(value, str | int | float) or isinstance(value, bool) or str(value) == "":
                    raise IfexpError(f"{path}:{line_no}: missing or empty field '{key}'")
            example_id = str(record["id"])
            if example_id in seen:
                raise IfexpError(f"{path}:{line_no}: duplicate id '{example_id}' (first on line {seen[example_id]})")
            seen[example_id] = line_no
            flaw = record.get("flaw") or ""
            examples.append(
                Example(example_id, str(record["question"]), str(record["cot"]), str(record["answer"]), str(flaw))
            )
    if not examples:
        raise IfexpError(f"{path}: dataset file is empty")
    return examples


def write_jsonl(path: str | Path, examples: list[Example]) -> None:
    with Path(path).open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(asdict(example)) + "\n")


def question_key(question: str) -> str:
    """A question's identity across splits: its text, whitespace and case ignored."""
    return " ".join(question.split()).casefold()


def examples_digest(examples: list[Example]) -> str:
    """The identity of a list of examples: the hash of their content, in order."""
    return content_hash([asdict(e) for e in examples])
