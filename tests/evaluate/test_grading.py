import pytest

from ifexp.evaluate.grading import check_trace_answers, extract_answer, is_correct, pass_at_1, trace_answer_correct
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
        ("\\boxed{\\frac{1}{2}}", "1/2"),
        ("#### 0.5", "1/2"),
        ("#### yes", "yes"),
        ("#### $12", "12"),
    ],
)
def test_is_correct(response, gold):
    assert is_correct(response, gold) is True


@pytest.mark.parametrize(
    "response, gold", [("#### 7", "8"), ("I do not know", "8"), ("#### No.", "yes"), ("#### 8\nthen 9", "9")]
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
    with pytest.raises(IfexpError, match="answer_format='latex': expected one of auto, hash, boxed, last_number"):
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
