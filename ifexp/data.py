"""Chain-of-thought training data: where a dataset comes from (`DATASET_SOURCES`), the embedded
gsm_symbolic generator, deliberately flawed traces with ground-truth labels, and the
train/validation/test splits.

A user's trace (jsonl or hub) is trained on exactly as given: ifexp never edits it. Whether its
own final answer matches the gold `answer` is a per-example signal
(`ifexp.evaluate.grading.check_trace_answers`), read with the dataset's `answer_format`; a wrong
or missing final answer is counted and reported, never corrected. The prompt asks for a final
line `#### <answer>`, and the embedded generator's traces end with one (`examples.answer_line`).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from ifexp.examples import ANSWER_MARK, Example, answer_line, question_key, read_jsonl
from ifexp.registry import Registry
from ifexp.schema import DatasetConfig, IfexpError
from ifexp.tasks import distinct_items, generator_seed, leg_counting_splits

FLAW_KINDS = ("arithmetic_error", "wrong_final_answer", "skipped_step", "truncated", "mismatched_trace")

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Embedded data: reasoning-gym gsm_symbolic


def gsm_symbolic_examples(n: int, seed: int, id_prefix: str = "gsm") -> list[Example]:
    """n distinct GSM-style problems with their step-by-step solutions, deterministic per seed."""
    examples: list[Example] = []
    for index, question, item in distinct_items("gsm_symbolic", n, seed):
        answer = str(item["answer"]).strip()
        cot = _with_final_answer(item["metadata"]["answer_cot"], answer)
        examples.append(Example(f"{id_prefix}-{seed}-{index}", question, cot, answer))
    return examples


def _with_final_answer(cot: str, answer: str) -> str:
    """The generator's own trace with its final line written as the gold answer.

    reasoning-gym's answer_cot already ends in `#### N`, but sometimes as `#### 8.0` for the
    answer `8`: the trace we train on ends with the answer exactly as graded. Only for the
    embedded generator: a user's trace is never edited.
    """
    lines = cot.strip().splitlines()
    index = answer_line(lines)
    if index is not None:
        del lines[index]
    return "\n".join(lines).rstrip() + f"\n{ANSWER_MARK} {answer}"


# ---------------------------------------------------------------------------------------------
# Flawed traces: the mistakes a weak annotator or model makes, each with its label

_RESULT = re.compile(r"=\s*\$?(-?\d+(?:\.\d+)?)")


def _wrong_number(value: str, rng: random.Random) -> str:
    number = float(value)
    kind = rng.choice(["off_by", "digit_slip", "ten_times"])
    if kind == "off_by":
        wrong = number + rng.choice([-2, -1, 1, 2, 3])
    elif kind == "ten_times":
        wrong = number * 10 if abs(number) < 1000 else number / 10
    else:
        wrong = number + rng.choice([-10, 10, 9, -9])
    if wrong == number or (wrong < 0 <= number):  # a negative count would be an implausible slip
        wrong = number + 1
    return str(int(wrong)) if float(wrong).is_integer() else f"{wrong:g}"


def _reasoning_lines(cot: str) -> list[str]:
    """The trace without its `####` answer line (Markdown headings stay)."""
    lines = cot.splitlines()
    index = answer_line(lines)
    return lines if index is None else lines[:index] + lines[index + 1 :]


def corrupt(example: Example, kind: str, rng: random.Random, donor: Example | None = None) -> Example:
    """A realistic flawed version of the example's trace; the gold `answer` stays correct."""
    lines = _reasoning_lines(example.cot)
    answer = example.answer
    if kind == "arithmetic_error":
        # A miscalculated intermediate result that the rest of the trace carries to a wrong answer.
        candidates = [(i, m) for i, line in enumerate(lines) for m in _RESULT.finditer(line)]
        if not candidates:
            return corrupt(example, "wrong_final_answer", rng)
        line_index, match = rng.choice(candidates)
        wrong = _wrong_number(match.group(1), rng)
        line = lines[line_index]
        lines[line_index] = line[: match.start(1)] + wrong + line[match.end(1) :]
        delta = float(wrong) - float(match.group(1))
        try:
            new_answer = float(answer) + delta
            final = str(int(new_answer)) if new_answer.is_integer() else f"{new_answer:g}"
        except ValueError:
            final = wrong
        cot = "\n".join(lines) + f"\n{ANSWER_MARK} {final}"
    elif kind == "wrong_final_answer":
        # Correct reasoning, wrong number copied into the final answer.
        try:
            final = _wrong_number(answer, rng)
        except ValueError:
            final = answer + "0"
        cot = "\n".join(lines) + f"\n{ANSWER_MARK} {final}"
    elif kind == "skipped_step":
        # A leap: one computation step is missing, the answer is asserted anyway.
        steps = [i for i, line in enumerate(lines) if _RESULT.search(line)]
        if len(steps) < 2:
            return corrupt(example, "truncated", rng)
        del lines[rng.choice(steps[:-1])]
        cot = "\n".join(lines) + f"\n{ANSWER_MARK} {answer}"
    elif kind == "truncated":
        # Generation or annotation cut off: no conclusion, no final answer.
        keep = max(1, int(len(lines) * rng.uniform(0.3, 0.6)))
        cot = "\n".join(lines[:keep])
    elif kind == "mismatched_trace":
        # A pipeline misalignment: the trace belongs to another question.
        if donor is None or donor.id == example.id:
            return corrupt(example, "wrong_final_answer", rng)
        cot = donor.cot
    else:
        raise IfexpError(f"unknown flaw kind '{kind}' (known: {', '.join(FLAW_KINDS)})")
    if cot.strip() == example.cot.strip():
        return corrupt(example, "truncated", rng) if kind != "truncated" else example
    return Example(example.id, example.question, cot, example.answer, kind)


def inject_flaws(examples: list[Example], fraction: float, seed: int) -> list[Example]:
    """Corrupt round(fraction * n) examples, cycling through the flaw kinds."""
    if not 0.0 <= fraction < 1.0:
        raise IfexpError(f"dataset.flaw_fraction={fraction}: must be in [0, 1)")
    rng = random.Random(seed)
    n_flawed = round(fraction * len(examples))
    chosen = sorted(rng.sample(range(len(examples)), n_flawed))
    result = list(examples)
    for position, index in enumerate(chosen):
        kind = FLAW_KINDS[position % len(FLAW_KINDS)]
        donor = examples[(index + 1 + rng.randrange(len(examples) - 1)) % len(examples)]
        result[index] = corrupt(examples[index], kind, rng, donor)
    return result


# ---------------------------------------------------------------------------------------------
# Splits


# A jsonl or hub set's in-domain test split with dataset.n_test=-1 (auto): a fifth of the file's
# distinct questions, at most AUTO_TEST_MAX, when it has at least AUTO_TEST_MIN_QUESTIONS; none
# below that (a warning says so: a smaller held-out set resolves nothing, and the training set
# would lose a fifth of itself for it).
AUTO_TEST_MIN_QUESTIONS = 200
AUTO_TEST_MAX = 300


def auto_n_test(n_questions: int) -> int:
    """dataset.n_test=-1: how many of a file's n_questions distinct questions are held out."""
    return min(AUTO_TEST_MAX, n_questions // 5) if n_questions >= AUTO_TEST_MIN_QUESTIONS else 0


def build_splits(cfg: DatasetConfig) -> dict[str, list[Example]]:
    """Disjoint train / val / test splits; flaws only ever in train."""
    return split_dataset(cfg)[0]


Splits = tuple[list[Example], list[Example], list[Example]]


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset.source's (train, val, test) come from: `splits(cfg, report)` (report: what
    splitting did, for `split_metrics`); `generated`: ifexp generates the problems (its n_test is a
    number, there is no file); `own_flaws`: it labels its own flawed traces, else `inject_flaws`
    corrupts dataset.flaw_fraction of train."""

    splits: Callable[[DatasetConfig, dict[str, int | bool]], Splits]
    generated: bool = True
    own_flaws: bool = False


DATASET_SOURCES: Registry[DatasetSource] = Registry("dataset.source")


def split_dataset(cfg: DatasetConfig) -> tuple[dict[str, list[Example]], dict[str, int | bool]]:
    """The splits, and what splitting did (`split_metrics` reports it): sizes, whether n_test was
    chosen automatically, and the duplicate questions found across splits."""
    report: dict[str, int | bool] = {"n_test_auto": False, "n_duplicate_questions": 0}
    source = DATASET_SOURCES[cfg.source]
    train, val, test = source.splits(cfg, report)
    if not train:
        raise IfexpError(f"dataset '{cfg.name}': no training examples left after the validation/test split")
    if cfg.flaw_fraction > 0 and not source.own_flaws:
        train = inject_flaws(train, cfg.flaw_fraction, seed=cfg.data_seed + 1)
    train_questions = {question_key(e.question) for e in train}
    report.update(
        n_train=len(train),
        n_val=len(val),
        n_test=len(test),
        # reported, not removed: theta* answering a question it was trained on is still a query
        n_val_in_train=sum(question_key(e.question) in train_questions for e in val),
    )
    return {"train": train, "val": val, "test": test}, report


def _gsm_symbolic_splits(cfg: DatasetConfig, report: dict[str, int | bool]) -> Splits:
    # distinct questions; a generator seed of data_seed's own (tasks.generator_seed)
    pool = gsm_symbolic_examples(cfg.n_train + cfg.n_val + cfg.n_test, seed=generator_seed(cfg.data_seed))
    return pool[: cfg.n_train], pool[cfg.n_train : cfg.n_train + cfg.n_val], pool[cfg.n_train + cfg.n_val :]


def _user_splits(cfg: DatasetConfig, report: dict[str, int | bool]) -> Splits:
    # The user's traces exactly as given: a wrong or missing final answer is evidence, not a typo.
    examples = read_jsonl(cfg.path) if cfg.source == "jsonl" else hub_examples(cfg)
    train, val, test = _split_user_examples(cfg, examples, report)
    return (train[: cfg.n_train] if cfg.n_train >= 0 else train), val, test


def _split_user_examples(
    cfg: DatasetConfig, examples: list[Example], report: dict[str, int | bool]
) -> tuple[list[Example], list[Example], list[Example]]:
    """A jsonl or hub set's (train, val, test).

    val: dataset.val_path, or n_val examples drawn at random (seeded by data_seed). test: the
    problems of dataset.test_path whose question is neither a training nor a validation question
    (nor an earlier test problem's), or n_test (-1: `auto_n_test`) distinct questions drawn at
    random among those that are not validation questions, one problem each; the other traces of
    a held-out question are not trained on. Both removals are counted (n_duplicate_questions).
    """
    order = examples[:]
    random.Random(cfg.data_seed).shuffle(order)
    if cfg.val_path:
        val, rest, candidates = read_jsonl(cfg.val_path), examples, order
    else:
        val, rest = order[: cfg.n_val], order[cfg.n_val :]
        candidates = rest
    val_questions = {question_key(e.question) for e in val}
    if cfg.test_path:
        taken = val_questions | {question_key(e.question) for e in rest}
        test = []
        for example in read_jsonl(cfg.test_path):
            key = question_key(example.question)
            if key in taken:
                report["n_duplicate_questions"] += 1
                continue
            taken.add(key)
            test.append(example)
        return rest, val, test
    n_test = cfg.n_test
    if n_test < 0:
        n_questions = len({question_key(e.question) for e in examples})
        n_test = auto_n_test(n_questions)
        report.update(n_test_auto=True, n_questions=n_questions)
    test, held_out = [], set()
    for example in candidates:
        if len(test) == n_test:
            break
        key = question_key(example.question)
        if key not in val_questions and key not in held_out:
            held_out.add(key)
            test.append(example)
    if len(test) < n_test:
        raise IfexpError(
            f"dataset '{cfg.name}': dataset.n_test={n_test} takes every question that is not a validation "
            f"question ({len(test)}): no training examples left after the validation/test split"
        )
    test_ids = {e.id for e in test}
    train = [e for e in rest if e.id not in test_ids and question_key(e.question) not in held_out]
    report["n_duplicate_questions"] += len(rest) - len(train) - sum(e.id in test_ids for e in rest)
    return train, val, test


def split_metrics(cfg: DatasetConfig, report: dict[str, int | bool]) -> dict[str, int]:
    """The dataset stage's split report as metrics (`data/*`), with a warning for what a user
    should know: no in-domain test split, or duplicate questions across splits."""
    if report.get("n_test_auto") and report.get("n_test") == 0:
        log.warning(
            "dataset '%s': %d distinct questions (fewer than %d): no in-domain test split is held out "
            "(dataset.n_test=-1, auto); set dataset.n_test=N or dataset.test_path=FILE to evaluate on your own "
            "problems",
            cfg.name,
            report.get("n_questions", 0),
            AUTO_TEST_MIN_QUESTIONS,
        )
    if report.get("n_duplicate_questions"):
        log.warning(
            "dataset '%s': %d examples left out because their question (whitespace and case ignored) is also in "
            "another split: the in-domain test split shares no question with train or validation",
            cfg.name,
            report["n_duplicate_questions"],
        )
    if report.get("n_val_in_train"):
        log.warning(
            "dataset '%s': %d validation questions also have a training trace (theta* answers questions it was "
            "trained on)",
            cfg.name,
            report["n_val_in_train"],
        )
    return {
        f"data/{name}": int(report[name])
        for name in ("n_val", "n_test", "n_duplicate_questions", "n_val_in_train")
        if name in report
    }


def hub_examples(cfg: DatasetConfig) -> list[Example]:
    """A CoT set from a Hugging Face hub repository, read from `cfg.path`: its snapshot folder at
    the commit the pipeline resolved (ifexp.hub; needs the `datasets` package)."""
    try:
        import datasets
    except ImportError:
        raise IfexpError("dataset.source=hub needs the `datasets` package: pip install 'ifexp[hub]'") from None
    if not cfg.path:
        raise IfexpError(f"dataset '{cfg.name}': the hub snapshot folder was not resolved (ifexp.hub.hub_snapshot)")
    rows = datasets.load_dataset(cfg.path, split=cfg.hf_split)
    return [
        Example(f"{cfg.name}-{i}", str(r[cfg.question_field]), str(r[cfg.cot_field]), str(r[cfg.answer_field]))
        for i, r in enumerate(rows)
    ]


DATASET_SOURCES.register("gsm_symbolic", DatasetSource(_gsm_symbolic_splits))
DATASET_SOURCES.register("jsonl", DatasetSource(_user_splits, generated=False))
DATASET_SOURCES.register("hub", DatasetSource(_user_splits, generated=False))
# ifexp.tasks: a generated task with its own labelled flaws
DATASET_SOURCES.register("leg_counting", DatasetSource(lambda cfg, report: leg_counting_splits(cfg), own_flaws=True))
