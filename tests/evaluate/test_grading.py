import os
import signal
import subprocess
import sys
import threading
import time

import math_verify
import math_verify.grader
import math_verify.parser
import pytest
import sympy.core.cache

from ifexp.evaluate import grading
from ifexp.evaluate.grading import (
    GradingTimeout,
    check_trace_answers,
    extract_answer,
    is_correct,
    pass_at_1,
    trace_answer_correct,
)
from ifexp.examples import Example
from ifexp.schema import IfexpError


@pytest.mark.parametrize(
    "response, gold",
    [
        ("5+3=8\n#### 8", "8"),
        ("#### 8.0", "8"),
        ("#### 1,234", "1234"),
        ("The answer is 42 apples", "42"),
        ("#### 42 apples", "42"),
        # a number and its unit: math-verify reads "38 legs" as the product 38*E*g*l*s
        ("#### 38 legs", "38"),
        ("#### 12 cookies.", "12"),
        ("#### 18 dollars", "18"),
        ("#### 1,200 square feet", "1200"),
        ("\\boxed{\\frac{1}{2}}", "1/2"),
        ("#### 0.5", "1/2"),
        ("#### yes", "yes"),
        ("#### $12", "12"),
    ],
)
def test_is_correct(response, gold):
    assert is_correct(response, gold) is True


@pytest.mark.parametrize(
    "response, gold",
    [
        ("#### 7", "8"),
        ("I do not know", "8"),
        ("#### No.", "yes"),
        ("#### 8\nthen 9", "9"),
        ("#### 12 cookies", "13"),
        # a word that is mathematics is not a unit
        ("#### 2 pi", "2"),
        ("#### 3 sqrt 2", "3"),
        ("#### 2 i", "2"),
    ],
)
def test_is_not_correct(response, gold):
    assert is_correct(response, gold) is False


def test_extract_prefers_the_answer_mark():
    assert extract_answer("2 + 2 = 4, 5 more\n#### 9") == "9"
    assert extract_answer("nothing here") is None


def test_pass_at_1_averages_samples_then_questions():
    assert pass_at_1([[True], [False]]) == 0.5
    assert pass_at_1([[True, False, False, True], [True, True, True, True]]) == 0.75


HEADINGS = "#### Step 1\n6 * 7 = 42\n#### Step 2\n42 - 1 = 41\n#### 41"


@pytest.mark.parametrize(
    "text, answer_format, expected",
    [
        # hash: the last `####` line that is not a Markdown heading
        (HEADINGS, "hash", "41"),
        ("#### Step 1\n6 * 7 = 42", "hash", None),  # its only `####` is a heading: no answer
        ("#### Step 1\n6 * 7 = 42", "auto", "42"),  # ... so auto reads the last number
        ("6 * 7 = 42\n#### 42\n\nI hope this helps!", "hash", "42"),
        ("Is 42 even?\n#### yes", "hash", "yes"),
        ("We start with 20 apples.\nThen we", "hash", None),  # truncated
        ("We start with 20 apples.\nThen we", "boxed", None),
        ("so the answer is $\\boxed{42}$.", "boxed", "42"),
        ("#### 41\n\\boxed{42}", "boxed", "42"),
        ("#### 41\n\\boxed{42}", "auto", "41"),
        ("#### 41\n\\boxed{42}", "hash", "41"),
        ("#### 42", "boxed", None),
        ("x = 3 + 4 = 7, so 42 \\boxed{41}", "last_number", "41"),
        ("no numbers", "last_number", None),
        ("We have 5.\n####", "auto", None),  # an empty answer line: no answer, as before
        # choice: a letter A-D, from the answer line, else the last box, else the last line
        ("B) is out, 2 remain\n#### C", "choice", "C"),
        ("#### (c).", "choice", "C"),
        ("#### C) photon, not A", "choice", "C"),
        ("#### 42", "choice", None),
        ("A is out. \\boxed{D} it is", "choice", "D"),
        ("A is out, B too.\nSo the answer is D.", "choice", "D"),
        ("So the answer is D.\nAll good", "choice", None),
        ("A closer look: it is B", "choice", "B"),
        ("On closer look, A remains", "choice", "A"),
        ("a question", "choice", None),
        ("", "choice", None),
    ],
)
def test_answer_formats(text, answer_format, expected):
    assert extract_answer(text, answer_format) == expected


def test_default_format_skips_markdown_headings():
    assert extract_answer("#### Step 1\n6 * 7 = 42") == "42"
    assert is_correct(HEADINGS, "41") and not is_correct("#### Step 1\nso 6 * 7 = 42", "1")


def test_is_correct_reads_with_the_answer_format():
    assert is_correct("so \\boxed{42}", "42", answer_format="boxed")
    assert is_correct("#### 41\n\\boxed{42}", "42", answer_format="boxed")
    assert not is_correct("#### 41\n\\boxed{42}", "42", answer_format="auto")
    assert not is_correct("6 * 7 = 42", "42", answer_format="hash")
    with pytest.raises(
        IfexpError, match="answer_format='latex': expected one of auto, hash, boxed, last_number, choice"
    ):
        extract_answer("#### 1", "latex")


def test_trace_answer_check_counts_wrong_and_missing_answers():
    examples = [
        Example("ok", "q", "6 * 7 = 42\n#### 42", "42"),
        Example("wrong", "q", "6 * 7 = 41\n#### 41", "42"),
        Example("truncated", "q", "6 * 7 =", "42"),
        Example("boxed", "q", "6 * 7 = \\boxed{42}", "42"),
    ]
    check = check_trace_answers(examples, "hash")
    assert check.correct.tolist() == [True, False, False, False]
    assert check.has_answer.tolist() == [True, True, False, False]
    assert (check.n_wrong, check.n_no_answer) == (1, 2)
    assert trace_answer_correct(examples, "auto").tolist() == [True, False, False, True]
    assert trace_answer_correct(examples, "boxed").tolist() == [False, False, False, True]
    assert check_trace_answers(examples, "auto").n_no_answer == 0  # auto falls back to "the last number": 7


# ---------------------------------------------------------------------------------------------
# No clock decides a grade

SLOW_S = 3.0


def slow(real, swallowed: type[BaseException] | tuple[()], no_match):
    """A math-verify function that takes SLOW_S seconds more and, as math-verify does around its own
    alarm, turns what it catches into "no match" (swallowed: nothing, Exception or everything)."""

    def stand_in(*args, **kwargs):
        try:
            time.sleep(SLOW_S)
        except swallowed:
            return no_match
        return real(*args, **kwargs)

    return stand_in


@pytest.mark.parametrize("slow_function", ["parse", "verify"])
@pytest.mark.parametrize("swallowed", [(), Exception, BaseException], ids=["nothing", "Exception", "BaseException"])
def test_a_grading_timeout_raises_and_is_never_a_grade(monkeypatch, slow_function, swallowed):
    monkeypatch.setattr(grading, "GRADING_TIME_LIMIT_S", 0.2)
    no_match = [] if slow_function == "parse" else False
    monkeypatch.setattr(math_verify, slow_function, slow(getattr(math_verify, slow_function), swallowed, no_match))
    outer = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    with pytest.raises(GradingTimeout) as error:
        is_correct("so\n#### 2/4", "1/2")
    assert time.monotonic() - started < SLOW_S  # the limit stopped it, not the stand-in's end
    message = str(error.value)
    assert "'2/4'" in message and "'1/2'" in message and "0.2 s" in message and "\n" not in message
    assert isinstance(error.value, IfexpError)
    # the alarm is put back as it was
    assert signal.getsignal(signal.SIGALRM) is outer and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_math_verify_runs_without_its_own_timeouts(monkeypatch):
    """math-verify's alarms (5 s by default) return "no match" when they fire: none may be set."""
    asked = []
    for module in (math_verify.parser, math_verify.grader):
        real_timeout = module.timeout

        def recording(timeout_seconds=10, real_timeout=real_timeout):
            asked.append(timeout_seconds)
            return real_timeout(timeout_seconds)

        monkeypatch.setattr(module, "timeout", recording)
    assert is_correct("#### \\frac{2}{4}", "0.5") and not is_correct("#### 42 apples", "41")
    assert asked and all(seconds is None for seconds in asked)


def test_an_outer_timer_survives_grading():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        assert is_correct("#### \\frac{2}{4}", "0.5")
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 0.5
        time.sleep(0.7)
        assert fired == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_grading_outside_the_main_thread_is_one_clear_error():
    errors = []
    thread = threading.Thread(target=lambda: errors.append(_error_of(lambda: is_correct("#### 2/4", "1/2"))))
    thread.start()
    thread.join()
    assert "main thread" in str(errors[0]) and isinstance(errors[0], IfexpError)


def _error_of(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the test looks at it
        return error
    return None


# symbolic answers that math-verify must parse and compare (no string match), right and wrong
SYMBOLIC = [
    ("#### \\frac{1}{2}", "0.5", True),
    ("#### \\sqrt{2}/2", "1/\\sqrt{2}", True),
    ("#### (x+1)^2", "x^2+2x+1", True),
    ("#### 2\\pi", "6.283185307", True),
    ("#### \\frac{3}{4}", "0.7", False),
    ("#### x^2-1", "(x-1)(x+2)", False),
    ("\\boxed{\\frac{22}{7}}", "\\pi", False),
]


def grades_from_scratch() -> list[bool]:
    """The grades of SYMBOLIC with math-verify's and sympy's caches emptied first, so that each
    pass does the parsing and comparing again."""
    math_verify.parser.parse_latex_cached.cache_clear()
    math_verify.parser.parse_expr_cached.cache_clear()
    sympy.core.cache.clear_cache()
    return [is_correct(response, gold) for response, gold, _ in SYMBOLIC]


def test_grades_are_the_same_alone_and_on_a_loaded_machine():
    grades_from_scratch()  # sympy's and math-verify's lazy imports
    alone = grades_from_scratch()
    assert alone == [expected for _, _, expected in SYMBOLIC]
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        time.sleep(0.3)  # the spinners are running
        loaded = [grades_from_scratch() for _ in range(3)]
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert loaded == [alone] * 3
