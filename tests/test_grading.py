import pytest

from ifexp.evaluate.grading import extract_answer, is_correct, pass_at_1


@pytest.mark.parametrize(
    "response, gold, expected",
    [
        ("5+3=8\n#### 8", "8", True),
        ("#### 8.0", "8", True),
        ("#### 1,234", "1234", True),
        ("The answer is 42 apples", "42", True),
        ("#### 42 apples", "42", True),
        ("#### 7", "8", False),
        ("I do not know", "8", False),
        ("\\boxed{\\frac{1}{2}}", "1/2", True),
        ("#### 0.5", "1/2", True),
        ("#### yes", "yes", True),
        ("#### No.", "yes", False),
        ("#### $12", "12", True),
        ("#### 8\nthen 9", "9", False),
    ],
)
def test_is_correct(response, gold, expected):
    assert is_correct(response, gold) is expected


def test_extract_prefers_the_answer_mark():
    assert extract_answer("2 + 2 = 4, 5 more\n#### 9") == "9"
    assert extract_answer("nothing here") is None


def test_pass_at_1_averages_samples_then_questions():
    assert pass_at_1([[True], [False]]) == 0.5
    assert pass_at_1([[True, False, False, True], [True, True, True, True]]) == 0.75
