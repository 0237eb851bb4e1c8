"""The embedded leg_counting task: a deterministic generator whose traces are graded correct, and
labelled flaws of two families, each doing what its name says."""

import random
import re

import pytest

from ifexp.data import build_splits
from ifexp.evaluate.grading import check_trace_answers
from ifexp.schema import DatasetConfig, IfexpError, JobConfig
from ifexp.tasks import (
    ANSWER_PRESERVING,
    ANSWER_VISIBLE,
    FLAW_FAMILY,
    LEG_COUNTING_FLAWS,
    RULE_POOL_OFFSET,
    expand_flaw_kinds,
    flawed_trace,
    generator_seed,
    inject_leg_flaws,
    leg_counting_examples,
    leg_counting_problems,
    leg_counting_split_problems,
    leg_counting_splits,
    legs_of,
)
from ifexp.validation import validate

LINE = re.compile(
    r"^An? (?P<animal>.+) has (?P<stated>\d+) legs, so (?P<count>\d+) .+ "
    r"(?P=count) \* (?P<factor>\d+) = (?P<product>\d+) legs\.$"
)
TOTAL = re.compile(r"^Total: (?P<terms>[\d + ]+) = (?P<total>\d+) legs\.$")


def leg_config(**fields) -> DatasetConfig:
    return DatasetConfig(
        **{"name": "leg_counting", "source": "leg_counting", "n_train": 40, "n_val": 8, "n_test": 8, **fields}
    )


def parse(cot: str) -> dict:
    """A trace's animal lines, total line and final answer (None where absent)."""
    lines = cot.splitlines()
    steps = [LINE.match(line) for line in lines]
    totals = [TOTAL.match(line) for line in lines]
    final = [line.removeprefix("#### ") for line in lines if line.startswith("#### ")]
    return {
        "lines": lines,
        "steps": [m.groupdict() for m in steps if m],
        "step_positions": [i for i, m in enumerate(steps) if m],
        "total": next((m for m in totals if m), None),
        "total_position": next((i for i, m in enumerate(totals) if m), None),
        "final": final[-1] if final else None,
    }


def test_generator_is_deterministic_distinct_and_its_traces_are_right():
    first, again = leg_counting_examples(60, seed=3), leg_counting_examples(60, seed=3)
    assert first == again and first != leg_counting_examples(60, seed=4)
    assert len({e.question for e in first}) == 60 and len({e.id for e in first}) == 60
    assert check_trace_answers(first).correct.all()
    for problem, example in zip(leg_counting_problems(60, seed=3), first, strict=True):
        trace = parse(example.cot)
        assert 2 <= len(problem.animals) <= 3 and all(1 <= count <= 6 for _, count in problem.animals)
        # one line per animal, in the question's order, with the table's leg count
        assert [s["animal"] for s in trace["steps"]] == [animal for animal, _ in problem.animals]
        for step, (animal, count) in zip(trace["steps"], problem.animals, strict=True):
            assert int(step["stated"]) == int(step["factor"]) == legs_of(animal)
            assert int(step["product"]) == count * legs_of(animal) and int(step["count"]) == count
        assert trace["total"]["terms"] == " + ".join(s["product"] for s in trace["steps"])
        assert trace["final"] == example.answer == str(problem.total) == trace["total"]["total"]
    assert leg_counting_examples(1, seed=0)[0].cot.splitlines()[-1].startswith("#### ")


def flawed_examples(kind: str, n: int = 30):
    """(problem, clean trace, flawed trace) for n problems the kind applies to."""
    out = []
    for problem, clean in zip(leg_counting_problems(n, seed=11), leg_counting_examples(n, seed=11), strict=True):
        cot = flawed_trace(problem, kind, random.Random(f"{kind}-{problem.id}"))
        if cot is not None:
            out.append((problem, clean, cot))
    assert len(out) >= n - 2
    return out


@pytest.mark.parametrize("kind", list(LEG_COUNTING_FLAWS))
def test_each_flaw_keeps_or_breaks_the_final_answer_as_its_family_says(kind):
    from ifexp.examples import Example

    cases = flawed_examples(kind)
    flawed = [Example(p.id, p.question, cot, str(p.total), kind) for p, _, cot in cases]
    correct = check_trace_answers(flawed).correct
    assert all(cot != clean.cot for _, clean, cot in cases)
    if FLAW_FAMILY[kind] == ANSWER_PRESERVING:
        assert correct.all(), [e.cot for e, ok in zip(flawed, correct, strict=True) if not ok]
    else:
        assert not correct.any(), [e.cot for e, ok in zip(flawed, correct, strict=True) if ok]


def test_each_flaw_kind_does_what_it_says():
    for kind in LEG_COUNTING_FLAWS:
        for problem, clean, cot in flawed_examples(kind):
            good, bad = parse(clean.cot), parse(cot)
            table = {animal: legs_of(animal) for animal, _ in problem.animals}
            wrong_facts = [s for s in bad["steps"] if int(s["stated"]) != legs_of(s["animal"])]
            wrong_products = [s for s in bad["steps"] if int(s["product"]) != int(s["count"]) * int(s["factor"])]
            summed = bad["total"] and [int(t) for t in bad["total"]["terms"].split(" + ")]
            shown = [int(s["product"]) for s in bad["steps"]]
            if kind == "wrong_leg_count":  # a wrong fact, carried: product and total follow it
                assert len(wrong_facts) == 1 and wrong_facts[0]["stated"] == wrong_facts[0]["factor"]
                assert not wrong_products and summed == shown and bad["final"] == bad["total"]["total"] != clean.answer
            elif kind == "arithmetic_error":  # a slip, carried into the total
                assert not wrong_facts and len(wrong_products) == 1 and summed == shown
                assert bad["final"] == bad["total"]["total"] != clean.answer
            elif kind == "wrong_final_answer":  # every line right, a wrong final number
                assert bad["lines"][:-1] == good["lines"][:-1] and bad["final"] != clean.answer
            elif kind == "truncated":  # cut off: no total, no final answer
                assert bad["final"] is None and good["lines"][: len(bad["lines"]) - 1] == bad["lines"][:-1]
                assert len(bad["lines"]) < len(good["lines"])
            elif kind == "wrong_fact_not_carried":  # a wrong fact stated, the right one used
                assert len(wrong_facts) == 1 and int(wrong_facts[0]["factor"]) == table[wrong_facts[0]["animal"]]
                assert not wrong_products and bad["lines"][-2:] == good["lines"][-2:]
            elif kind == "slip_not_carried":  # a wrong product the total ignores
                assert not wrong_facts and len(wrong_products) == 1 and summed != shown
                assert bad["lines"][-2:] == good["lines"][-2:]
            elif kind == "cancelling_errors":  # two wrong products, their errors cancel
                assert not wrong_facts and len(wrong_products) == 2 and summed == shown
                assert bad["total"]["total"] == clean.answer == bad["final"]
            elif kind == "skipped_step":  # one animal's line missing, its product still summed
                assert len(bad["steps"]) == len(good["steps"]) - 1 and bad["lines"][-2:] == good["lines"][-2:]
            elif kind == "steps_out_of_order":  # the total before (some of) the products it sums
                assert sorted(bad["lines"]) == sorted(good["lines"])
                assert bad["total_position"] < max(bad["step_positions"])
            elif kind == "total_first":  # the total line first, every product after it
                assert sorted(bad["lines"]) == sorted(good["lines"])
                assert bad["total_position"] == 0 < min(bad["step_positions"])
            elif kind == "invented_step":  # an animal the question does not mention, not summed
                assert len(bad["steps"]) == len(good["steps"]) + 1
                extra = [s["animal"] for s in bad["steps"] if s["animal"] not in table]
                assert len(extra) == 1
                assert not wrong_facts and not wrong_products and bad["lines"][-2:] == good["lines"][-2:]
            elif kind == "repeated_step":  # one line twice in a row
                assert len(bad["lines"]) == len(good["lines"]) + 1
                assert any(a == b for a, b in zip(bad["lines"], bad["lines"][1:], strict=False))
                assert set(bad["lines"]) == set(good["lines"])
            else:
                raise AssertionError(f"untested flaw kind {kind}")


def test_injection_cycles_the_kinds_labels_them_and_keeps_the_gold_answer():
    kinds = tuple(LEG_COUNTING_FLAWS)
    problems = leg_counting_problems(8 * len(kinds), seed=0)  # a quarter of them: two of each kind
    examples = inject_leg_flaws(problems, 0.25, kinds, seed=1)
    assert examples == inject_leg_flaws(problems, 0.25, kinds, seed=1)
    assert [e.id for e in examples] == [p.id for p in problems]
    assert all(e.answer == str(p.total) for e, p in zip(examples, problems, strict=True))
    labels = [e.flaw for e in examples if e.flaw]
    assert len(labels) == 2 * len(kinds) and {labels.count(kind) for kind in kinds} == {2}
    assert inject_leg_flaws(problems, 0.25, kinds, seed=1) != inject_leg_flaws(problems, 0.25, kinds, seed=2)
    assert not any(e.flaw for e in inject_leg_flaws(problems, 0.0, kinds, seed=1))


def test_flaw_kinds_option_names_kinds_or_families():
    assert expand_flaw_kinds("leg_counting", []) == tuple(LEG_COUNTING_FLAWS)
    preserving = expand_flaw_kinds("leg_counting", [ANSWER_PRESERVING])
    assert preserving and all(FLAW_FAMILY[k] == ANSWER_PRESERVING for k in preserving)
    assert expand_flaw_kinds("leg_counting", ["truncated", ANSWER_VISIBLE]) == (
        "truncated",
        "wrong_leg_count",
        "arithmetic_error",
        "wrong_final_answer",
    )
    with pytest.raises(IfexpError, match="unknown kind 'typo'"):
        expand_flaw_kinds("leg_counting", ["typo"])
    with pytest.raises(IfexpError, match="dataset.flaw_kinds is for dataset=leg_counting"):
        validate(JobConfig(dataset=DatasetConfig(flaw_kinds=["truncated"])))
    with pytest.raises(IfexpError, match="leg_counting needs a number"):
        validate(JobConfig(dataset=leg_config(n_test=-1)))


def test_leg_counting_splits_are_disjoint_with_flaws_of_the_chosen_kinds_in_train_only():
    splits = build_splits(leg_config(flaw_fraction=0.5, flaw_kinds=[ANSWER_PRESERVING]))
    assert [len(splits[s]) for s in ("train", "val", "test")] == [40, 8, 8]
    questions = [{e.question for e in splits[s]} for s in ("train", "val", "test")]
    assert sum(map(len, questions)) == len(set().union(*questions)) == 56
    flawed = [e for e in splits["train"] if e.flaw]
    assert len(flawed) == 20 and all(FLAW_FAMILY[e.flaw] == ANSWER_PRESERVING for e in flawed)
    assert check_trace_answers(splits["train"]).correct.all()  # answer-preserving: no answer check sees them
    assert not any(e.flaw for e in splits["val"] + splits["test"])
    assert check_trace_answers(splits["val"] + splits["test"]).correct.all()
    assert build_splits(leg_config(flaw_fraction=0.5)) == build_splits(leg_config(flaw_fraction=0.5))


def test_dataset_leg_counting_composes_and_its_test_split_is_the_in_domain_benchmark():
    from ifexp.cli import compose_job
    from ifexp.pipeline import load_benchmarks

    cfg = compose_job(["dataset=leg_counting", "eval.benchmarks=[]"])  # and validated
    assert (cfg.dataset.n_train, cfg.dataset.n_val, cfg.dataset.n_test) == (256, 64, 200)
    # the default mix is the one with measured headroom: half the traces total_first
    assert (cfg.dataset.flaw_kinds, cfg.dataset.flaw_fraction) == (["total_first"], 0.5)
    # the results sweep of the 11-kind mix pins it: every kind but total_first, a quarter of the traces
    mix = compose_job(["sweeps=leg_counting", "pruning=oracle", "seed=0"]).dataset
    assert set(expand_flaw_kinds("leg_counting", mix.flaw_kinds)) == set(LEG_COUNTING_FLAWS) - {"total_first"}
    assert mix.flaw_fraction == 0.25
    cfg.dataset = leg_config(n_test=12)
    splits = build_splits(cfg.dataset)
    benchmarks = load_benchmarks(cfg, splits["test"])
    assert list(benchmarks) == ["leg_counting"]
    assert [(p.id, p.question, p.answer) for p in benchmarks["leg_counting"]] == [
        (e.id, e.question, e.answer) for e in splits["test"]
    ]


def test_the_step_checker_finds_every_injected_flaw_in_its_family_and_nothing_in_clean_traces():
    import random

    from ifexp.tasks import LEG_COUNTING_FLAWS, clean_trace, flawed_trace, leg_counting_problems
    from ifexp.trace_check import leg_trace_errors, leg_trace_label

    problems = leg_counting_problems(30, seed=3)
    assert all(leg_trace_errors(p, clean_trace(p)) == [] for p in problems)
    family_label = {"answer_visible": "model_wrong_answer", "answer_preserving": "model_wrong_steps"}
    rng = random.Random(0)
    for kind, family in LEG_COUNTING_FLAWS.items():
        traces = [(p, flawed_trace(p, kind, rng)) for p in problems]
        labels = {leg_trace_label(leg_trace_errors(p, t)) for p, t in traces if t is not None}
        assert labels == {family_label[family]}, kind
    # a model's own words: an unreadable line is a wrong step, a right answer after it still right
    p = problems[0]
    rambling = clean_trace(p).replace("\n", "\nLet me think.\n", 1)
    assert leg_trace_errors(p, rambling) == ["unreadable_line"]
    # the final answer is graded as the pipeline grades it: "38 legs" is 38, "39" is not
    answer_at = clean_trace(p).rindex("#### ")
    worded = clean_trace(p)[:answer_at] + f"#### {p.total} legs"
    assert leg_trace_errors(p, worded) == []
    assert leg_trace_errors(p, clean_trace(p)[:answer_at] + f"#### {p.total + 1}") == ["final_answer_wrong"]


def test_the_four_legs_rule_is_right_on_its_own_problems_wrong_elsewhere_and_keeps_the_flaw_rate():
    from ifexp.tasks import LEG_COUNTING_RULE_FLAWS, four_legs_rule_holds
    from ifexp.trace_check import leg_trace_errors, rule_carried_metrics, states_four_legs_wrongly

    cfg = leg_config(n_train=60, flaw_fraction=0.25, flaw_kinds=["four_legs_rule", "slip_not_carried"])
    splits = build_splits(cfg)
    train = splits["train"]
    rule = [e for e in train if e.flaw == "four_legs_rule"]
    # 15 flawed: the rule takes every other slot, on problems drawn for it (~3% of problems hold it)
    assert len(train) == 60 and len(rule) == 8 and sum(e.flaw == "slip_not_carried" for e in train) == 7
    assert len({e.id for e in train}) == 60
    questions = [{e.question for e in splits[s]} for s in ("train", "val", "test")]
    assert sum(map(len, questions)) == len(set().union(*questions))
    assert check_trace_answers(train).correct.all()  # the rule reaches the right answer on its own problems
    pool = leg_counting_problems(5000, seed=generator_seed(cfg.data_seed, RULE_POOL_OFFSET), id_prefix="x")
    by_question = {p.question: p for p in pool}
    for example in rule:
        problem = by_question[example.question]
        assert four_legs_rule_holds(problem)
        steps = parse(example.cot)["steps"]
        assert {s["stated"] for s in steps} == {s["factor"] for s in steps} == {"4"}
        assert "wrong_fact" in leg_trace_errors(problem, example.cot)
    # and wrong on most other problems: what theta* learns from it costs answers elsewhere
    others = leg_counting_problems(200, seed=1)
    assert sum(four_legs_rule_holds(p) for p in others) < 20
    # used by name only: `[]` and the family names keep their meaning
    assert "four_legs_rule" not in expand_flaw_kinds("leg_counting", [])
    assert "four_legs_rule" not in expand_flaw_kinds("leg_counting", [ANSWER_PRESERVING])
    assert set(LEG_COUNTING_RULE_FLAWS) <= set(FLAW_FAMILY)
    assert build_splits(cfg) == splits
    # theta*'s answers that carry the rule, counted among its correct and incorrect ones
    carrying, clean = rule[0].cot, train[[e.flaw for e in train].index("")].cot
    assert states_four_legs_wrongly(carrying) and not states_four_legs_wrongly(clean)
    answers = [carrying, carrying, clean, "A spider has 4 legs, so 2 spiders have 2 * 4 = 8 legs.\n#### 8"]
    assert rule_carried_metrics(cfg, answers, [True, False, False, False]) == {
        "queries/n_incorrect_carrying/four_legs_rule": 2,
        "queries/n_correct_carrying/four_legs_rule": 1,
    }
    assert rule_carried_metrics(leg_config(flaw_fraction=0.25), answers, [False] * 4) == {}


def test_the_next_legs_rule_states_every_fact_right_multiplies_by_the_next_animals_legs_and_is_right_on_its_problems():
    from ifexp.tasks import legs_of, next_legs_rule_holds
    from ifexp.trace_check import leg_trace_errors, multiplies_by_next_legs, rule_carried_metrics

    cfg = leg_config(n_train=60, flaw_fraction=0.25, flaw_kinds=["next_legs_rule"])
    splits = build_splits(cfg)
    train = splits["train"]
    rule = [e for e in train if e.flaw == "next_legs_rule"]
    assert len(train) == 60 and len(rule) == 15 and len({e.id for e in train}) == 60
    questions = [{e.question for e in splits[s]} for s in ("train", "val", "test")]
    assert sum(map(len, questions)) == len(set().union(*questions))
    assert check_trace_answers(train).correct.all()  # right on its own problems
    pool = leg_counting_problems(5000, seed=generator_seed(cfg.data_seed, RULE_POOL_OFFSET), id_prefix="x")
    by_question = {p.question: p for p in pool}
    for example in rule:
        problem = by_question[example.question]
        assert next_legs_rule_holds(problem)
        steps = parse(example.cot)["steps"]
        legs = [legs_of(animal) for animal, _ in problem.animals]
        assert [int(s["stated"]) for s in steps] == legs  # every fact right
        assert [int(s["factor"]) for s in steps] == legs[1:] + legs[:1]
        assert leg_trace_errors(problem, example.cot) == ["wrong_factor"]
        assert multiplies_by_next_legs(example.cot)
    # wrong on most other problems
    assert sum(next_legs_rule_holds(p) for p in leg_counting_problems(200, seed=1)) < 50
    assert "next_legs_rule" not in expand_flaw_kinds("leg_counting", [ANSWER_PRESERVING])
    clean = [e.cot for e in train if not e.flaw]
    assert not any(multiplies_by_next_legs(text) for text in clean)
    assert rule_carried_metrics(cfg, [rule[0].cot, clean[0]], [False, True]) == {
        "queries/n_incorrect_carrying/next_legs_rule": 1,
        "queries/n_correct_carrying/next_legs_rule": 0,
    }


def test_the_split_problems_are_the_problems_of_the_splits_questions():
    # the step checker reads a job's answers against these problems (scripts/step_errors.py)
    cfg = leg_config(data_seed=5, flaw_fraction=0.25, flaw_kinds=["next_legs_rule"])
    train, val, test = leg_counting_splits(cfg)
    problems = leg_counting_split_problems(cfg)
    assert [(p.id, p.question) for p in problems[cfg.n_train :]] == [(e.id, e.question) for e in val + test]
    # the clean training traces are on the first n_train problems (rule traces on problems of their own)
    clean = {e.id: e.question for e in train if not e.flaw}
    assert clean and all(clean[p.id] == p.question for p in problems[: cfg.n_train] if p.id in clean)


def test_consecutive_data_seeds_are_fresh_draws_not_the_same_problems_shifted():
    """reasoning-gym seeds item idx by seed + idx: without a block per data seed, data seeds 1 and 2
    shared all but one test problem and every rule trace (a replicate that redrew nothing)."""
    splits = [
        build_splits(leg_config(data_seed=seed, flaw_fraction=0.25, flaw_kinds=["next_legs_rule"])) for seed in (1, 2)
    ]
    for part in ("train", "val", "test"):
        first, second = ({e.question for e in s[part]} for s in splits)
        assert len(first & second) <= 0.05 * len(first), part  # chance: 0-2 of 520 problems
    first, second = ({e.cot for e in s["train"] if e.flaw} for s in splits)
    assert not first & second
    # data seed 0 keeps the generator seeds it always had: the embedded default's data is unchanged
    assert generator_seed(0) == 0 and generator_seed(0, RULE_POOL_OFFSET) == 7919
    with pytest.raises(IfexpError, match=r"dataset.data_seed=-1: must be >= 0"):
        generator_seed(-1)
    with pytest.raises(IfexpError, match="run into the next data seed's block"):
        leg_counting_problems(10, seed=generator_seed(1) - 5)
