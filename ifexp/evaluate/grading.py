"""Grading model answers, and the training traces' own answers, against gold answers with math-verify.

How a final answer is read from a text is the dataset's `answer_format`:
- `hash`: the text after `####` on the answer line (`data.answer_line`: the last `####` line that
  is not a Markdown heading such as `#### Step 1`);
- `boxed`: the last `\\boxed{...}`;
- `last_number`: the last number;
- `auto` (default): `hash` when the text has an answer line, else `boxed`, else `last_number`.

math-verify's timeouts use SIGALRM: call these functions in the main thread of a process (or in
worker processes), never from threads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ifexp.examples import ANSWER_MARK, Example, answer_line
from ifexp.schema import CHOICES, IfexpError

ANSWER_FORMATS = CHOICES["dataset.answer_format"]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_BOXED = re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_WORDS = {"yes", "no", "true", "false"}


def _after_mark(text: str) -> tuple[bool, str | None]:
    """(has an answer line, the answer on it): the text after the line's last `####`, or the
    next non-empty line where the mark stands alone."""
    lines = text.splitlines()
    index = answer_line(lines)
    if index is None:
        return False, None
    tail = "\n".join([lines[index].rsplit(ANSWER_MARK, 1)[1], *lines[index + 1 :]]).strip()
    return True, (tail.splitlines()[0].strip() if tail else None)


def _last_boxed(text: str) -> str | None:
    boxed = _BOXED.findall(text)
    return boxed[-1].strip() if boxed else None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def extract_answer(response: str, answer_format: str = "auto") -> str | None:
    """The final answer read with `answer_format` (module docstring); None when there is none."""
    if answer_format not in ANSWER_FORMATS:
        raise IfexpError(f"answer_format={answer_format!r}: expected one of {', '.join(ANSWER_FORMATS)}")
    if answer_format in ("hash", "auto"):
        has_line, answer = _after_mark(response)
        if has_line or answer_format == "hash":
            return answer
    if answer_format in ("boxed", "auto"):
        boxed = _last_boxed(response)
        if boxed is not None or answer_format == "boxed":
            return boxed
    return _last_number(response)


def _clean(text: str) -> str:
    text = text.strip().rstrip(".").replace("$", "").replace("\\%", "").replace("%", "")
    # "1,234" is a thousands separator, not a tuple
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text).strip()


def answers_match(predicted: str | None, gold: str) -> bool:
    """Does an extracted answer equal the gold answer (numerically or symbolically)?"""
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


def is_correct(response: str, gold: str, answer_format: str = "auto") -> bool:
    """Does the response's final answer (read with answer_format) equal the gold answer?"""
    return answers_match(extract_answer(response, answer_format), gold)


def pass_at_1(correct: list[list[bool]]) -> float:
    """Per question, the fraction of its samples graded correct; averaged over questions."""
    if not correct:
        return float("nan")
    return sum(sum(samples) / len(samples) for samples in correct) / len(correct)


# ---------------------------------------------------------------------------------------------
# The training traces' own final answers


@dataclass(frozen=True)
class TraceAnswers:
    """Each training trace's own final answer against its gold `answer`, one entry per example.

    A signal about the data, never a reason to edit it: the traces are trained on as given.
    """

    # (N,) bool: the trace's final answer equals the gold answer (False where it has none)
    correct: np.ndarray
    # (N,) bool: a final answer could be read from the trace at all (answer_format)
    has_answer: np.ndarray

    @property
    def n_wrong(self) -> int:
        """Traces whose final answer disagrees with the gold answer (ones without an answer not counted)."""
        return int((self.has_answer & ~self.correct).sum())

    @property
    def n_no_answer(self) -> int:
        """Traces from which no final answer can be read (a truncated trace, under hash or boxed)."""
        return int((~self.has_answer).sum())


def check_trace_answers(examples: Sequence[Example], answer_format: str = "auto") -> TraceAnswers:
    """Read each example's final answer from its `cot` with answer_format and grade it against
    its `answer` exactly as a generation is graded (`is_correct`)."""
    answers = [extract_answer(example.cot, answer_format) for example in examples]
    correct = [answers_match(answer, example.answer) for answer, example in zip(answers, examples, strict=True)]
    return TraceAnswers(
        correct=np.array(correct, dtype=bool), has_answer=np.array([a is not None for a in answers], dtype=bool)
    )


def trace_answer_correct(examples: Sequence[Example], answer_format: str = "auto") -> np.ndarray:
    """(N,) bool: does each trace's own final answer match its gold answer? (check_trace_answers)"""
    return check_trace_answers(examples, answer_format).correct
