"""Grading model answers against gold answers with math-verify.

math-verify's timeouts use SIGALRM: call these functions in the main thread of a process (or in
worker processes), never from threads.
"""

from __future__ import annotations

import re

from ifexp.data import ANSWER_MARK

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_BOXED = re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_WORDS = {"yes", "no", "true", "false"}


def extract_answer(response: str) -> str | None:
    """The final answer: after the last `####`, else the last \\boxed{}, else the last number."""
    if ANSWER_MARK in response:
        tail = response.rsplit(ANSWER_MARK, 1)[1].strip()
        return tail.splitlines()[0].strip() if tail else None
    boxed = _BOXED.findall(response)
    if boxed:
        return boxed[-1].strip()
    numbers = _NUMBER.findall(response)
    return numbers[-1] if numbers else None


def _clean(text: str) -> str:
    text = text.strip().rstrip(".").replace("$", "").replace("\\%", "").replace("%", "")
    # "1,234" is a thousands separator, not a tuple
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text).strip()


def is_correct(response: str, gold: str) -> bool:
    """Does the response's final answer equal the gold answer (numerically or symbolically)?"""
    predicted = extract_answer(response)
    if predicted is None:
        return False
    predicted, gold = _clean(predicted), _clean(str(gold))
    if gold.lower() in _WORDS:
        return predicted.lower().strip(" .!") == gold.lower()
    if predicted == gold:
        return True
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$")
    predicted_parsed = parse(f"${predicted}$")
    if not gold_parsed or not predicted_parsed:
        # The answer line holds words around the number ("42 apples"): fall back to its last number.
        numbers = _NUMBER.findall(predicted)
        if not numbers or not gold_parsed:
            return False
        predicted_parsed = parse(f"${_clean(numbers[-1])}$")
    return bool(verify(gold_parsed, predicted_parsed))


def pass_at_1(correct: list[list[bool]]) -> float:
    """Per question, the fraction of its samples graded correct; averaged over questions."""
    if not correct:
        return float("nan")
    return sum(sum(samples) / len(samples) for samples in correct) / len(correct)
