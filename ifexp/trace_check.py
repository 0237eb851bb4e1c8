"""Checking a model's leg_counting answer step by step, in the clean trace's words (ifexp.tasks
writes the traces): what is wrong with a sampled trace (`leg_trace_errors`, used to label a model's
own traces), and whether an answer carries a rule kind that theta* may have learned from its
training set (`rule_carried_metrics`: does the rule cause theta*'s mistakes?).
"""

from __future__ import annotations

import re

from ifexp.examples import ANSWER_MARK
from ifexp.outputs import carrying_key
from ifexp.schema import DatasetConfig
from ifexp.tasks import LegProblem, expand_flaw_kinds, legs_of

_ANIMAL_LINE = re.compile(
    r"An? (?P<animal>[a-z][a-z -]*?) has (?P<stated>\d+) legs?, so (?P<count>\d+) [a-z][a-z -]*? ha(?:s|ve) "
    r"(?P<left>\d+) \* (?P<right>\d+) = (?P<product>\d+) legs?\."
)
_TOTAL_LINE = re.compile(r"Total: (?P<terms>\d+(?: \+ \d+)*) = (?P<sum>\d+) legs?\.")


def leg_trace_errors(problem: LegProblem, text: str) -> list[str]:
    """What is wrong with a leg_counting trace, step by step, in the clean trace's words: each
    animal line's fact, factors and product, the animals named (invented, missing, repeated), the
    total line's terms and sum and its place after the products, a line in none of these forms,
    and the final answer (`final_answer_missing` / `final_answer_wrong`, graded as the pipeline grades
    an answer, so "38 legs" is 38). Empty: a clean trace."""
    from ifexp.evaluate.grading import answers_match
    from ifexp.examples import answer_line

    counts = dict(problem.animals)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    at = answer_line(lines)
    final = lines[at].rsplit(ANSWER_MARK, 1)[1].strip() if at is not None else None
    body = lines[:at] if at is not None else lines
    errors: list[str] = []
    products: list[int] = []
    seen: list[str] = []
    total_at: int | None = None
    for position, line in enumerate(body):
        animal = _ANIMAL_LINE.fullmatch(line)
        total = _TOTAL_LINE.fullmatch(line)
        if animal:
            name, stated, count = animal["animal"], int(animal["stated"]), int(animal["count"])
            left, right, product = int(animal["left"]), int(animal["right"]), int(animal["product"])
            if name not in counts:
                errors.append("invented_animal")
            else:
                if name in seen:
                    errors.append("repeated_animal")
                if stated != legs_of(name):
                    errors.append("wrong_fact")
                if count != counts[name]:
                    errors.append("wrong_count")
            if (left, right) != (count, stated):
                errors.append("wrong_factor")
            if product != left * right:
                errors.append("arithmetic")
            seen.append(name)
            products.append(product)
        elif total:
            total_at = position if total_at is None else total_at
            terms = [int(t) for t in total["terms"].split(" + ")]
            if terms != products[: len(terms)] or len(terms) != len(products):
                errors.append("total_terms")
            if sum(terms) != int(total["sum"]):
                errors.append("total_arithmetic")
        else:
            errors.append("unreadable_line")
    if any(name not in seen for name in counts):
        errors.append("missing_animal")
    if total_at is None:
        errors.append("no_total")
    elif total_at < len(body) - 1:
        errors.append("total_not_last")
    if final is None:
        errors.append("final_answer_missing")
    elif not answers_match(final, str(problem.total)):
        errors.append("final_answer_wrong")
    return list(dict.fromkeys(errors))


def states_four_legs_wrongly(text: str) -> bool:
    """An answer with a line counting an animal that has other than 4 legs at 4: the four_legs_rule
    carried (a clean trace never has one; an invented animal does not count)."""
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    for line in text.splitlines():
        animal = _ANIMAL_LINE.fullmatch(line.strip())
        if animal and animal["stated"] == "4" and ANIMALS.get(animal["animal"], 4) != 4:
            return True
    return False


def multiplies_by_next_legs(text: str) -> bool:
    """An answer with a line whose factor is not the leg count it states but the next animal line's
    (the last line's: the first's): the next_legs_rule carried (a clean trace never has one)."""
    lines = [_ANIMAL_LINE.fullmatch(line.strip()) for line in text.splitlines()]
    animals = [line for line in lines if line]
    stated = [animal["stated"] for animal in animals]
    return len(animals) > 1 and any(
        animal["right"] != stated[i] and animal["right"] == stated[(i + 1) % len(animals)]
        for i, animal in enumerate(animals)
    )


# whether a model's answer carries a rule kind (LEG_COUNTING_RULE_FLAWS) it may have learned
RULE_CARRIED = {"four_legs_rule": states_four_legs_wrongly, "next_legs_rule": multiplies_by_next_legs}


def rule_carried_metrics(cfg: DatasetConfig, answers: list[str], correct: list[bool]) -> dict[str, int]:
    """For each rule kind in the training set, how many of theta*'s graded validation answers carry
    it, among the incorrect (Q_I) and the correct (Q_C): does the rule cause theta*'s mistakes?"""
    out: dict[str, int] = {}
    for kind in expand_flaw_kinds(cfg.source, cfg.flaw_kinds):
        if kind in RULE_CARRIED and cfg.flaw_fraction > 0:
            carried = [RULE_CARRIED[kind](answer) for answer in answers]
            pairs = list(zip(carried, correct, strict=True))
            out[carrying_key(kind, correct=False)] = sum(c and not ok for c, ok in pairs)
            out[carrying_key(kind, correct=True)] = sum(c and ok for c, ok in pairs)
    return out


def leg_trace_label(errors: list[str]) -> str:
    """A checked trace's flaw label: "" (clean), model_wrong_answer or model_wrong_steps."""
    if not errors:
        return ""
    if {"final_answer_missing", "final_answer_wrong"} & set(errors):
        return "model_wrong_answer"
    return "model_wrong_steps"
