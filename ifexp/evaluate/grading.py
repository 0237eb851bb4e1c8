"""Grading model answers, and the training traces' own answers, against gold answers with math-verify.

How a final answer is read from a text is the dataset's `answer_format`:
- `hash`: the text after `####` on the answer line (`data.answer_line`: the last `####` line that
  is not a Markdown heading such as `#### Step 1`);
- `boxed`: the last `\\boxed{...}`;
- `last_number`: the last number;
- `auto` (default): `hash` when the text has an answer line, else `boxed`, else `last_number`.

Each benchmark reads its answers in its own format (`benchmarks.answer_format_for`); one format is
for benchmarks only, not a dataset option:
- `choice`: a multiple-choice letter A-D (GPQA): the first letter standing alone on the answer
  line (`#### C`, `#### (C) photon`), else in the last `\\boxed{}`, else the last one on the
  text's last non-empty line ("So the answer is C."); graded by equality with the gold letter.

No clock decides a grade. math-verify's own timeouts (5 s SIGALRM alarms around `parse` and
`verify`) return "no match" when they fire, so on a loaded machine a correct answer could be graded
wrong, and the eval cache would keep that grade; they are off here. One generous limit per answer
(`GRADING_TIME_LIMIT_S`) guards against an expression that would never finish, and it raises
`GradingTimeout` (no grade, nothing cached) rather than returning False. The limit is a SIGALRM
timer: grade in the main thread of a process (or in worker processes), never from other threads.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ifexp.examples import ANSWER_MARK, Example, answer_line
from ifexp.schema import CHOICES, IfexpError

# how a dataset's traces and its models' answers may be read (dataset.answer_format) ...
DATASET_ANSWER_FORMATS = CHOICES["dataset.answer_format"]
# ... and the formats only a benchmark reads with (`Benchmark.answer_format`; no dataset option)
BENCHMARK_ONLY_ANSWER_FORMATS = ("choice",)
ANSWER_FORMATS = (*DATASET_ANSWER_FORMATS, *BENCHMARK_ONLY_ANSWER_FORMATS)

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_BOXED = re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_WORDS = {"yes", "no", "true", "false"}
# "38 legs", "12 cookies.": a number and its unit's words. math-verify reads such an answer as a
# product of symbols (38*E*g*l*s) and grades it wrong, so the number alone is graded when the words
# are none of mathematics' (a one-letter word may be a variable or i, and `2 pi` is not 2).
_NUMBER_AND_UNIT = re.compile(rf"(?P<number>{_NUMBER.pattern})\s+(?P<words>[A-Za-z][A-Za-z\s-]*?)\.?")
_MATH_WORDS = {"pi", "sqrt", "root", "roots", "log", "ln", "sin", "cos", "tan", "exp", "mod", "times", "over", "inf"}
# an option letter standing alone (the article "A" too: the prompt asks for a `####` line, and
# the last line is read only without one)
_CHOICE_LETTER = re.compile(r"(?<![A-Za-z])[A-D](?![A-Za-z])")

# The longest one answer's grading (math-verify's parses and comparison together) may take before
# GradingTimeout. Far above any real answer's time on a loaded machine: it only stops a pathological
# expression from hanging the job.
GRADING_TIME_LIMIT_S = 120.0


class GradingTimeout(IfexpError):
    """Grading one answer ran past GRADING_TIME_LIMIT_S: it gets no grade (and nothing is cached)."""


class _TimeUp(BaseException):
    """Raised by the grading alarm: a BaseException, so that the `except Exception` of math-verify
    and sympy cannot turn it into "no match"."""


class _NoTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once that its timeouts are off; here that is on purpose (GRADING_TIME_LIMIT_S)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _logger in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_logger).addFilter(_NoTimeoutDisabledWarning())


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


def _choice_letter(text: str | None, last: bool = False) -> str | None:
    """The option letter A-D a piece of text names: all of it when it is one letter ("c", "(C)."),
    else the first (or last) capital A-D standing alone ("C) photon", "the answer is C")."""
    if text is None:
        return None
    bare = text.strip().strip("()[]*:.").strip()
    if len(bare) == 1 and bare.upper() in "ABCD":
        return bare.upper()
    letters = _CHOICE_LETTER.findall(text)
    return (letters[-1] if last else letters[0]) if letters else None


def _choice(response: str) -> str | None:
    has_line, answer = _after_mark(response)
    if has_line:
        return _choice_letter(answer)
    boxed = _last_boxed(response)
    if boxed is not None:
        return _choice_letter(boxed)
    lines = [line for line in response.splitlines() if line.strip()]
    return _choice_letter(lines[-1], last=True) if lines else None


def extract_answer(response: str, answer_format: str = "auto") -> str | None:
    """The final answer read with `answer_format` (module docstring); None when there is none."""
    if answer_format not in ANSWER_FORMATS:
        raise IfexpError(f"answer_format={answer_format!r}: expected one of {', '.join(ANSWER_FORMATS)}")
    if answer_format == "choice":
        return _choice(response)
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


def _shortened(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _within_time_limit(grade: Callable[[], bool], predicted: str, gold: str) -> bool:
    """grade() if it finishes within GRADING_TIME_LIMIT_S (wall clock), else GradingTimeout, whatever
    grade() does with the alarm: a result computed after it fired is never a grade."""
    if threading.current_thread() is not threading.main_thread():
        raise IfexpError("grading must run in the main thread of a process (its time limit is a SIGALRM timer)")
    fired = False

    def alarm(signum, frame):
        nonlocal fired
        fired = True
        raise _TimeUp

    previous_handler = signal.signal(signal.SIGALRM, alarm)
    # and again every second after, so that code which swallows an alarm does not run on unbounded
    again = min(GRADING_TIME_LIMIT_S, 1.0)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, GRADING_TIME_LIMIT_S, again)
    started = time.monotonic()
    try:
        try:
            result = grade()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)  # (an alarm just before this lands in the except below)
    except _TimeUp:
        pass
    finally:
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay > 0:  # an outer timer (a test runner's) goes on with the time it had left
            remaining = max(previous_delay - (time.monotonic() - started), 1e-6)
            signal.setitimer(signal.ITIMER_REAL, remaining, previous_interval)
    if fired:
        raise GradingTimeout(
            f"grading the answer {_shortened(predicted)} against the gold answer {_shortened(gold)} took over "
            f"{GRADING_TIME_LIMIT_S:g} s: no grade is given (a timeout never means wrong); if the expression is "
            "legitimate, raise ifexp.evaluate.grading.GRADING_TIME_LIMIT_S"
        )
    return result


def answers_match(predicted: str | None, gold: str) -> bool:
    """Does an extracted answer equal the gold answer (numerically or symbolically)?

    GradingTimeout when math-verify runs past GRADING_TIME_LIMIT_S; main thread only (module docstring).
    """
    if predicted is None:
        return False
    predicted, gold = _clean(predicted), _clean(str(gold))
    if gold.lower() in _WORDS:
        return predicted.lower().strip(" .!") == gold.lower()
    if predicted == gold:
        return True
    if _within_time_limit(lambda: _math_verify_match(predicted, gold), predicted, gold):
        return True
    with_unit = _NUMBER_AND_UNIT.fullmatch(predicted)
    if with_unit is None:
        return False
    words = with_unit["words"].lower().replace("-", " ").split()
    if any(len(word) < 2 or word in _MATH_WORDS for word in words):
        return False
    return answers_match(with_unit["number"], gold)


def _math_verify_match(predicted: str, gold: str) -> bool:
    from math_verify import parse, verify

    # timeouts off: _grading_time_limit is the only one, and it raises rather than grading
    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    predicted_parsed = parse(f"${predicted}$", parsing_timeout=None)
    if not gold_parsed or not predicted_parsed:
        # The answer line holds words around the number ("42 apples"): fall back to its last number.
        numbers = _NUMBER.findall(predicted)
        if not numbers or not gold_parsed:
            return False
        predicted_parsed = parse(f"${_clean(numbers[-1])}$", parsing_timeout=None)
    return bool(verify(gold_parsed, predicted_parsed, timeout_seconds=None))


def grade(answer: str | None, gold: str, answer_format: str = "auto") -> bool:
    """Does an answer read with answer_format equal the gold answer? A letter (`choice`) must be
    the gold letter; anything else is compared by `answers_match`."""
    if answer_format == "choice":
        return answer is not None and answer == str(gold).strip().upper()
    return answers_match(answer, gold)


def is_correct(response: str, gold: str, answer_format: str = "auto") -> bool:
    """Does the response's final answer (read with answer_format) equal the gold answer?"""
    return grade(extract_answer(response, answer_format), gold, answer_format)


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
    correct = [grade(answer, example.answer, answer_format) for answer, example in zip(answers, examples, strict=True)]
    return TraceAnswers(
        correct=np.array(correct, dtype=bool), has_answer=np.array([a is not None for a in answers], dtype=bool)
    )


def trace_answer_correct(examples: Sequence[Example], answer_format: str = "auto") -> np.ndarray:
    """(N,) bool: does each trace's own final answer match its gold answer? (check_trace_answers)"""
    return check_trace_answers(examples, answer_format).correct
