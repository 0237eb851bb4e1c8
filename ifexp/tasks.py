"""Embedded task families with step-by-step traces, and their labelled flaws of two families.

`leg_counting` (reasoning-gym): "how many legs are there in total if you have 3 spiders, 3
dogs?" with 2-3 kinds of animal and 1-6 of each. reasoning-gym gives the question, the gold
total and the animals; the trace is written here from that metadata, one line per animal, a
total line and the final answer line:

    A spider has 8 legs, so 3 spiders have 3 * 8 = 24 legs.
    A dog has 4 legs, so 3 dogs have 3 * 4 = 12 legs.
    Total: 24 + 12 = 36 legs.
    #### 36

SmolLM2-135M goes from pass@1 0.005 to 0.645 on 200 held-out problems after LoRA fine-tuning
on 256 such traces (../shared/FACTS.md): a competent regime, where theta*'s validation answers
fill both Q_C and Q_I.

Flaws (`dataset.flaw_fraction` of the training traces, `dataset.flaw_kinds`), each labelled with
its kind in `flaw`; every kind belongs to one of two families (`FLAW_FAMILY`):
- answer_visible: the trace's own final answer is wrong or missing, so checking it against the
  gold answer (`pruning=answer_check`) finds it;
- answer_preserving: the final answer is right and the reasoning is not; no answer check sees it.
They are the mistakes annotators and models make (a misremembered fact, a slip, a skipped or
repeated step, an invented entity, the conclusion written first), never noise tokens. The gold
`answer` always stays correct.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ifexp.examples import ANSWER_MARK, Example
from ifexp.schema import DatasetConfig, IfexpError

ANSWER_VISIBLE = "answer_visible"
ANSWER_PRESERVING = "answer_preserving"
FAMILIES = (ANSWER_VISIBLE, ANSWER_PRESERVING)

# leg_counting's flaw kinds, in the order dataset.flaw_kinds cycles through them by default
LEG_COUNTING_FLAWS = {
    # a misremembered leg count (a spider with 6 legs) carried into the product and the total
    "wrong_leg_count": ANSWER_VISIBLE,
    # a miscalculated product carried into the total
    "arithmetic_error": ANSWER_VISIBLE,
    # every line right, a wrong number copied into the final answer
    "wrong_final_answer": ANSWER_VISIBLE,
    # cut off before the end: no final answer
    "truncated": ANSWER_VISIBLE,
    # a wrong leg count stated, the product computed with the right one
    "wrong_fact_not_carried": ANSWER_PRESERVING,
    # a miscalculated product that the total line does not use
    "slip_not_carried": ANSWER_PRESERVING,
    # two wrong products whose errors cancel in the total
    "cancelling_errors": ANSWER_PRESERVING,
    # one animal's line missing, its product summed anyway
    "skipped_step": ANSWER_PRESERVING,
    # the total line written before the products it sums
    "steps_out_of_order": ANSWER_PRESERVING,
    # the total line first, the products that make it after: an answer, then its rationalisation
    # (the default set's flaw; a format a lexical classifier finds, docs/results.md; steps_out_of_order
    # with its total line moved to position 0 writes the same text)
    "total_first": ANSWER_PRESERVING,
    # a line for an animal the question does not mention (not summed)
    "invented_step": ANSWER_PRESERVING,
    # a line written twice, as in a generation loop (summed once)
    "repeated_step": ANSWER_PRESERVING,
}
# Kinds that are used only by name (never by a family name or dataset.flaw_kinds=[], so those keep
# their meaning): a rule that gives the right answer on its own problem and the wrong one on most
# others, written on problems drawn for it (`rule_problems`). It is the flaw that should *cause*
# theta*'s mistakes, where s_I (high_harm) should find it (issue 34).
LEG_COUNTING_RULE_FLAWS = {
    # every animal counted at 4 legs, on a problem whose animals' legs average 4 (1 spider and 2
    # birds: 3 * 4 = 12 = 8 + 2 * 2), so the total is right; elsewhere the rule is wrong
    "four_legs_rule": ANSWER_PRESERVING,
    # every animal's count multiplied by the *next* animal's leg count (the last by the first's),
    # each fact stated right, on a problem where that gives the right total (2 humans and 2 dogs:
    # 2 * 4 + 2 * 2 = 12). The mistake is a relation between a line's stated fact and its factor,
    # not a word or number of its own: a bag of n-grams finds it at ~0.69 (docs/results.md)
    "next_legs_rule": ANSWER_PRESERVING,
}
# every leg_counting kind dataset.flaw_kinds can name
NAMED_LEG_FLAWS = {**LEG_COUNTING_FLAWS, **LEG_COUNTING_RULE_FLAWS}
# Every flaw kind ifexp injects, with its family: leg_counting's and gsm_symbolic's
# (ifexp.data.FLAW_KINDS: its skipped_step drops a line and keeps the final answer).
FLAW_FAMILY = {
    **NAMED_LEG_FLAWS,
    "mismatched_trace": ANSWER_VISIBLE,
    # a model's own sampled leg_counting trace, labelled by `leg_trace_errors`: a wrong or missing
    # final answer, or the right answer through a wrong or unreadable step
    "model_wrong_answer": ANSWER_VISIBLE,
    "model_wrong_steps": ANSWER_PRESERVING,
}

# reasoning-gym's leg_counting generator settings of the embedded default
LEG_COUNTING_SETTINGS = {"min_animals": 2, "max_animals": 3, "min_instances": 1, "max_instances": 6}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def flaw_family(kind: str) -> str | None:
    """The family of a flaw label (None for a clean example or a kind ifexp does not know)."""
    return FLAW_FAMILY.get(kind)


def expand_flaw_kinds(source: str, kinds: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """dataset.flaw_kinds as kinds: a family name stands for all its kinds; empty: every kind."""
    if source != "leg_counting":
        if kinds:
            raise IfexpError(
                f"dataset.flaw_kinds is for dataset=leg_counting; dataset.source={source} has its own flaw kinds"
            )
        return ()
    if not kinds:
        return tuple(LEG_COUNTING_FLAWS)
    expanded: list[str] = []
    for kind in kinds:
        if kind in FAMILIES:
            members = [k for k, family in LEG_COUNTING_FLAWS.items() if family == kind]
        elif kind in NAMED_LEG_FLAWS:
            members = [kind]
        else:
            known = ", ".join([*FAMILIES, *NAMED_LEG_FLAWS])
            raise IfexpError(f"dataset.flaw_kinds: unknown kind '{kind}' (known: {known})")
        expanded += [k for k in members if k not in expanded]
    return tuple(expanded)


def validate_dataset(cfg: DatasetConfig) -> None:
    """What the schema cannot say about a generated task's dataset config (schema.validate)."""
    expand_flaw_kinds(cfg.source, cfg.flaw_kinds)
    if cfg.source == "leg_counting":
        for name in ("path", "val_path", "test_path"):
            if getattr(cfg, name, None):
                raise IfexpError(f"dataset.{name} is for jsonl and hub sets: leg_counting generates its splits")
        for name in ("n_train", "n_val", "n_test"):
            if getattr(cfg, name) < 0:
                raise IfexpError(f"dataset.{name}={getattr(cfg, name)}: leg_counting needs a number >= 0")


# ---------------------------------------------------------------------------------------------
# leg_counting: problems and clean traces


@dataclass(frozen=True)
class LegProblem:
    id: str
    question: str
    # (animal, how many), in the question's order
    animals: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(count * legs_of(animal) for animal, count in self.animals)


def legs_of(animal: str) -> int:
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    return ANIMALS[animal]


# reasoning-gym draws item idx of a dataset made with seed s from Random(s + idx), so seeds s and s + 1
# give the same items shifted by one: consecutive data seeds would share all but one problem. A data
# seed therefore owns a block of SEED_BLOCK generator seeds; data seed 0 keeps the ones it always had.
SEED_BLOCK = 2**24
RULE_POOL_OFFSET = 7919  # where in its data seed's block a rule kind's problems are drawn (tasks._rule_problems)


def generator_seed(data_seed: int, offset: int = 0) -> int:
    """reasoning-gym's seed for the draw at `offset` in data seed `data_seed`'s block: two data seeds
    never share an item (distinct_items keeps every draw inside its block)."""
    if data_seed < 0:
        raise IfexpError(f"dataset.data_seed={data_seed}: must be >= 0")
    return data_seed * SEED_BLOCK + offset


def distinct_items(task: str, n: int, seed: int, **settings) -> list[tuple[int, str, dict]]:
    """(index, question, item) of the first n reasoning-gym `task` items with distinct questions,
    deterministic per seed (a generator seed: `generator_seed`). Oversampled: a few templates repeat
    a question for small seeds, and only the first of each is kept."""
    import reasoning_gym

    size = max(2 * n, n + 50)
    if seed % SEED_BLOCK + size > SEED_BLOCK:
        raise IfexpError(f"{task}: {size} items from generator seed {seed} run into the next data seed's block")
    items = reasoning_gym.create_dataset(task, seed=seed, size=size, **settings)
    chosen: list[tuple[int, str, dict]] = []
    seen_questions: set[str] = set()
    for index, item in enumerate(items):
        question = item["question"].strip()
        if question in seen_questions:
            continue
        seen_questions.add(question)
        chosen.append((index, question, item))
        if len(chosen) == n:
            return chosen
    raise IfexpError(f"{task}: could only generate {len(chosen)} distinct problems, asked for {n}")


def leg_counting_problems(n: int, seed: int, id_prefix: str = "legs") -> list[LegProblem]:
    """n problems with distinct questions, deterministic per generator seed (`generator_seed`)."""
    problems: list[LegProblem] = []
    for index, question, item in distinct_items("leg_counting", n, seed, **LEG_COUNTING_SETTINGS):
        problem = LegProblem(f"{id_prefix}-{seed}-{index}", question, tuple(item["metadata"]["animals"].items()))
        if str(problem.total) != str(item["answer"]):  # the table and the generator must agree
            raise IfexpError(f"leg_counting: item {index} has answer {item['answer']}, the trace sums {problem.total}")
        problems.append(problem)
    return problems


def animal_line(
    animal: str, count: int, stated: int | None = None, factor: int | None = None, product: int | None = None
) -> str:
    """`A spider has 8 legs, so 3 spiders have 3 * 8 = 24 legs.`; a flaw may state a wrong leg
    count (`stated`), multiply by one (`factor`, default: the stated count) or miscalculate
    (`product`)."""
    stated = legs_of(animal) if stated is None else stated
    factor = stated if factor is None else factor
    product = count * factor if product is None else product
    article = "An" if animal[0] in "aeiou" else "A"
    # the question's own plural (reasoning-gym appends an s), so the trace repeats its words
    many = f"{count} {animal}{'s' if count > 1 else ''} {'have' if count > 1 else 'has'}"
    return f"{article} {animal} has {stated} legs, so {many} {count} * {factor} = {product} legs."


def total_line(products: list[int]) -> str:
    return f"Total: {' + '.join(map(str, products))} = {sum(products)} legs."


def clean_trace(problem: LegProblem) -> str:
    lines = [animal_line(animal, count) for animal, count in problem.animals]
    products = [count * legs_of(animal) for animal, count in problem.animals]
    return "\n".join([*lines, total_line(products), f"{ANSWER_MARK} {problem.total}"])


def leg_counting_examples(n: int, seed: int, id_prefix: str = "legs") -> list[Example]:
    """n leg_counting problems with their clean step-by-step traces."""
    return [Example(p.id, p.question, clean_trace(p), str(p.total)) for p in leg_counting_problems(n, seed, id_prefix)]


# ---------------------------------------------------------------------------------------------
# leg_counting: flawed traces


def _wrong_legs(legs: int, rng: random.Random) -> int:
    """A leg count an annotator might confuse with the true one: a neighbouring value of the table
    (a spider as an insect's 6, an insect as a spider's 8)."""
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    values = sorted(set(ANIMALS.values()))
    at = values.index(legs)
    return rng.choice([values[i] for i in (at - 1, at + 1) if 0 <= i < len(values)])


def _slip(value: int, rng: random.Random) -> int:
    """A miscalculated result near the true one (never negative, never equal)."""
    wrong = value + rng.choice([-2, -1, 1, 2, 10, -10])
    return wrong if wrong >= 0 and wrong != value else value + rng.choice([1, 2])


def four_legs_rule_holds(problem: LegProblem) -> bool:
    """Counting every animal at 4 legs gives this problem's total, and not by every animal having 4."""
    counted = sum(count for _, count in problem.animals)
    return problem.total == 4 * counted and any(legs_of(animal) != 4 for animal, _ in problem.animals)


def next_legs_factors(problem: LegProblem) -> list[int]:
    """Each animal's factor under the next_legs_rule: the leg count of the animal after it (cyclic)."""
    legs = [legs_of(animal) for animal, _ in problem.animals]
    return legs[1:] + legs[:1]


def next_legs_rule_holds(problem: LegProblem) -> bool:
    """Multiplying each count by the next animal's legs gives this problem's total, and some line's
    factor differs from its animal's legs (else the trace is the clean one)."""
    factors = next_legs_factors(problem)
    legs = [legs_of(animal) for animal, _ in problem.animals]
    counted = sum(count * factor for (_, count), factor in zip(problem.animals, factors, strict=True))
    return counted == problem.total and factors != legs


# what a problem must satisfy for a rule kind to apply to it
RULE_HOLDS = {"four_legs_rule": four_legs_rule_holds, "next_legs_rule": next_legs_rule_holds}


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def flawed_trace(problem: LegProblem, kind: str, rng: random.Random) -> str | None:
    """The problem's trace with one mistake of the given kind; None where the kind cannot apply
    (e.g. cancelling errors when every animal has 0 legs)."""
    animals = list(problem.animals)
    legs = [legs_of(animal) for animal, _ in animals]
    products = [count * n_legs for (_, count), n_legs in zip(animals, legs, strict=True)]
    lines = [animal_line(animal, count) for animal, count in animals]
    total = problem.total
    i = rng.randrange(len(animals))
    animal, count = animals[i]

    def trace(body: list[str], final: int | None = total) -> str:
        return "\n".join(body + ([] if final is None else [f"{ANSWER_MARK} {final}"]))

    if kind == "wrong_leg_count":
        wrong = _wrong_legs(legs[i], rng)
        lines[i] = animal_line(animal, count, stated=wrong)
        products[i] = count * wrong
        return trace([*lines, total_line(products)], sum(products))
    if kind == "arithmetic_error":
        products[i] = _slip(products[i], rng)
        lines[i] = animal_line(animal, count, product=products[i])
        return trace([*lines, total_line(products)], sum(products))
    if kind == "wrong_final_answer":
        copied = [p for p in products if p != total]  # an intermediate result copied, or a slip
        final = rng.choice(copied) if copied and rng.random() < 0.5 else _slip(total, rng)
        return trace([*lines, total_line(products)], final)
    if kind == "truncated":
        body = [*lines, total_line(products)]
        cuts = [body[:j] for j in range(1, len(lines) + 1)]
        cuts.append([*lines, total_line(products).rsplit(" = ", 1)[0]])  # cut inside the total line
        cuts = [cut for cut in cuts if _last_number("\n".join(cut)) != str(total)]
        return trace(rng.choice(cuts), None) if cuts else None
    if kind == "wrong_fact_not_carried":
        lines[i] = animal_line(animal, count, stated=_wrong_legs(legs[i], rng), factor=legs[i])
        return trace([*lines, total_line(products)])
    if kind == "slip_not_carried":
        lines[i] = animal_line(animal, count, product=_slip(products[i], rng))
        return trace([*lines, total_line(products)])
    if kind == "cancelling_errors":
        donors = [j for j in range(len(animals)) if products[j] > 0]
        if not donors:
            return None
        j = rng.choice(donors)
        k = rng.choice([other for other in range(len(animals)) if other != j])
        delta = rng.choice([d for d in (1, 2, 4) if d <= products[j]])
        shown = list(products)
        shown[j] -= delta
        shown[k] += delta
        for m in (j, k):
            lines[m] = animal_line(*animals[m], product=shown[m])
        return trace([*lines, total_line(shown)])  # sum(shown) == total
    if kind == "skipped_step":
        del lines[i]
        return trace([*lines, total_line(products)])
    if kind == "steps_out_of_order":
        lines.insert(rng.randrange(len(animals)), total_line(products))  # before at least one product
        return trace(lines)
    if kind == "total_first":
        return trace([total_line(products), *lines])
    if kind == "four_legs_rule":
        if not four_legs_rule_holds(problem):
            return None
        body = [animal_line(name, n, stated=4) for name, n in animals]
        return trace([*body, total_line([n * 4 for _, n in animals])])
    if kind == "next_legs_rule":
        if not next_legs_rule_holds(problem):
            return None
        factors = next_legs_factors(problem)
        body = [animal_line(name, n, factor=f) for (name, n), f in zip(animals, factors, strict=True)]
        return trace([*body, total_line([n * f for (_, n), f in zip(animals, factors, strict=True)])])
    if kind == "invented_step":
        from reasoning_gym.arithmetic.leg_counting import ANIMALS

        present = {name for name, _ in animals}
        extra = rng.choice([name for name in ANIMALS if name not in present])
        lines.insert(rng.randrange(len(lines) + 1), animal_line(extra, rng.randint(1, 6)))
        return trace([*lines, total_line(products)])
    if kind == "repeated_step":
        lines.insert(i + 1, lines[i])
        return trace([*lines, total_line(products)])
    raise IfexpError(f"unknown leg_counting flaw kind '{kind}' (known: {', '.join(NAMED_LEG_FLAWS)})")


def flaw_slots(n: int, fraction: float, kinds: tuple[str, ...]) -> list[str]:
    """The kind of each flawed example of n: round(fraction * n) of them, cycling through kinds."""
    n_flawed = round(fraction * n) if kinds else 0
    return [kinds[slot % len(kinds)] for slot in range(n_flawed)]


def inject_leg_flaws(
    problems: list[LegProblem],
    fraction: float,
    kinds: tuple[str, ...],
    seed: int,
    rule_problems: dict[str, list[LegProblem]] | None = None,
) -> list[Example]:
    """The problems as examples, round(fraction * n) of them flawed, cycling through `kinds`.

    The flawed examples are drawn at random (seeded); a kind that cannot apply to the next one
    (rare) takes the following example instead, so every kind gets its share. A rule kind
    (`RULE_HOLDS`) applies to few problems: its slots replace the drawn example with the next of
    `rule_problems[kind]`, problems drawn for it, so the set keeps its size and its flaw rate.
    """
    if not 0.0 <= fraction < 1.0:
        raise IfexpError(f"dataset.flaw_fraction={fraction}: must be in [0, 1)")
    examples = [Example(p.id, p.question, clean_trace(p), str(p.total)) for p in problems]
    order = list(range(len(problems)))
    random.Random(seed).shuffle(order)
    free = order  # examples not yet flawed, in the order they are drawn
    stand_ins = {kind: list(found) for kind, found in (rule_problems or {}).items()}
    for kind in flaw_slots(len(problems), fraction, kinds):
        if kind in RULE_HOLDS:
            if not stand_ins.get(kind):
                raise IfexpError(f"leg_counting: no problem left that flaw kind '{kind}' applies to")
            index, free = free[0], free[1:]
            problem = stand_ins[kind].pop(0)
            cot = flawed_trace(problem, kind, random.Random(f"{seed}-{problem.id}-{kind}"))
            examples[index] = Example(problem.id, problem.question, cot, str(problem.total), kind)
            continue
        for index in free:
            problem = problems[index]
            cot = flawed_trace(problem, kind, random.Random(f"{seed}-{problem.id}-{kind}"))
            if cot is not None:
                examples[index] = Example(problem.id, problem.question, cot, str(problem.total), kind)
                free = [other for other in free if other != index]
                break
        else:
            raise IfexpError(f"leg_counting: no example left that flaw kind '{kind}' applies to")
    return examples


def leg_counting_split_problems(cfg: DatasetConfig) -> list[LegProblem]:
    """The problems of a leg_counting dataset's three splits, train then val then test: what the step
    checker needs to read a job's answers (its generations carry the question, not the animals)."""
    return leg_counting_problems(cfg.n_train + cfg.n_val + cfg.n_test, seed=generator_seed(cfg.data_seed))


def leg_counting_splits(cfg: DatasetConfig) -> tuple[list[Example], list[Example], list[Example]]:
    """(train, val, test): distinct problems; flaws (dataset.flaw_fraction, flaw_kinds) in train only."""
    problems = leg_counting_split_problems(cfg)
    kinds = expand_flaw_kinds(cfg.source, cfg.flaw_kinds)
    train = inject_leg_flaws(
        problems[: cfg.n_train],
        cfg.flaw_fraction,
        kinds,
        seed=cfg.data_seed + 1,
        rule_problems=_rule_problems(problems, cfg, kinds),
    )
    val, test = (
        [Example(p.id, p.question, clean_trace(p), str(p.total)) for p in part]
        for part in (problems[cfg.n_train : cfg.n_train + cfg.n_val], problems[cfg.n_train + cfg.n_val :])
    )
    return train, val, test


def _rule_problems(problems: list[LegProblem], cfg: DatasetConfig, kinds: tuple[str, ...]) -> dict:
    """For each rule kind in `kinds`, the problems it holds on, from a draw of their own (another
    seed stream) and none with a question of the splits: ~3% of problems hold the 4-legs rule."""
    found: dict[str, list[LegProblem]] = {}
    questions = {p.question for p in problems}
    for kind, holds in RULE_HOLDS.items():
        needed = flaw_slots(cfg.n_train, cfg.flaw_fraction, kinds).count(kind)
        if not needed:
            continue
        seed = generator_seed(cfg.data_seed, RULE_POOL_OFFSET)
        pool = leg_counting_problems(60 * needed + 200, seed=seed, id_prefix=f"legs-{kind}")
        found[kind] = [p for p in pool if holds(p) and p.question not in questions][:needed]
    return found
