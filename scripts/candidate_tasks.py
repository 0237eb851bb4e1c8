"""Candidate tasks for the competent regime (docs/results.md, "The competent regime": its table of
candidates): reasoning-gym arithmetic generators with a step-by-step trace written from each
problem's expression, as a JSONL file that `dataset=jsonl` reads (id, question, cot, answer).

    .venv/bin/python scripts/candidate_tasks.py TASK OUT.jsonl [N]

TASK: chain_sum (2-4 terms of 1-2 digits, added and subtracted left to right: one line per
operation) or basic_arithmetic (2-4 terms of 1-2 digits with +, - and * and parentheses, no
negation: the expression rewritten one operation at a time, innermost parentheses first, then *
before + and -, left to right). N problems (default 520: 256 train + 64 validation + 200 test).
Every trace is checked: its last line is reasoning-gym's answer. Then, for base and fine-tuned
pass@1 on the 200 held-out problems:

    .venv/bin/ifexp dataset=jsonl dataset.path=OUT.jsonl dataset.name=TASK_steps dataset.n_test=200 \
        dataset.max_new_tokens=160 pruning=none eval.eval_base=true logger=none
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import reasoning_gym

SETTINGS = {
    "chain_sum": {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 2},
    "basic_arithmetic": {
        "min_terms": 2,
        "max_terms": 4,
        "min_digits": 1,
        "max_digits": 2,
        "operators": ("+", "-", "*"),
        "allow_negation": False,
    },
}
_TOKEN = re.compile(r"\d+|[-+*()]")


def chain_sum_trace(expression: str) -> list[str]:
    """'57 + 87 - 70' -> ['57 + 87 = 144.', '144 - 70 = 74.']"""
    tokens = expression.split()
    value, lines = int(tokens[0]), []
    for operator, term in zip(tokens[1::2], tokens[2::2], strict=True):
        new = value + int(term) if operator == "+" else value - int(term)
        lines.append(f"{value} {operator} {term} = {new}.")
        value = new
    return lines


def _tokens(expression: str) -> list[str]:
    """Numbers (a '-' that follows an operator, '(' or nothing is a sign) and symbols."""
    out: list[str] = []
    for token in _TOKEN.findall(expression):
        if out and out[-1] == "-" and token.isdigit() and (len(out) == 1 or out[-2] in "+-*("):
            out[-1] = "-" + token
        else:
            out.append(token)
    return out


def _number(token: str) -> bool:
    return token.lstrip("-").isdigit()


def _reduce_once(tokens: list[str]) -> list[str]:
    """One operation: in the innermost parentheses (else the whole expression), the first * else
    the first + or -; a parenthesis around a single number is dropped."""
    start, end = 0, len(tokens)
    for i, token in enumerate(tokens):
        if token == "(":
            start = i + 1
        elif token == ")":
            end = i
            break
    if end - start == 1:  # "( 5 )" -> "5"
        return tokens[: start - 1] + [tokens[start]] + tokens[end + 1 :]
    group = tokens[start:end]
    ops = [i for i in range(1, len(group), 2) if group[i] == "*"] or [i for i in range(1, len(group), 2)]
    i = ops[0]
    a, op, b = int(group[i - 1]), group[i], int(group[i + 1])
    value = a * b if op == "*" else a + b if op == "+" else a - b
    group = group[: i - 1] + [str(value)] + group[i + 2 :]
    if start > 0 and len(group) == 1:
        return tokens[: start - 1] + group + tokens[end + 1 :]
    return tokens[:start] + group + tokens[end:]


def basic_arithmetic_trace(expression: str) -> list[str]:
    tokens, lines = _tokens(expression), []
    assert all(_number(t) or t in "+-*()" for t in tokens), expression
    while len(tokens) > 1:
        tokens = _reduce_once(tokens)
        lines.append("= " + " ".join(tokens))
    return [expression, *lines]


def examples(task: str, n: int, seed: int = 0) -> list[dict[str, str]]:
    data = reasoning_gym.create_dataset(task, size=n, seed=seed, **SETTINGS[task])
    writer = chain_sum_trace if task == "chain_sum" else basic_arithmetic_trace
    rows = []
    for index, item in enumerate(data):
        lines = writer(item["metadata"]["expression"])
        last = lines[-1].rstrip(".").split()[-1]
        if last != str(item["answer"]):
            raise AssertionError(f"{task} #{index}: trace ends at {last}, answer {item['answer']}: {lines}")
        cot = "\n".join([*lines, f"#### {item['answer']}"])
        rows.append({"id": f"{task}-{index}", "question": item["question"], "cot": cot, "answer": str(item["answer"])})
    return rows


def main() -> None:
    task, out = sys.argv[1], Path(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 520
    if task not in SETTINGS:
        sys.exit(f"candidate_tasks: unknown task {task!r}: expected one of {', '.join(SETTINGS)}")
    rows = examples(task, n)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{out}: {len(rows)} {task} problems; first trace:\n{rows[0]['question']}\n{rows[0]['cot']}")


if __name__ == "__main__":
    main()
