"""Chain-of-thought training data: the JSONL contract, the embedded gsm_symbolic generator,
deliberately flawed traces with ground-truth labels, and train/validation/test splits.

A user's trace (jsonl or hub) is trained on exactly as given: ifexp never edits it. Whether its
own final answer matches the gold `answer` is a per-example signal
(`ifexp.evaluate.grading.check_trace_answers`), read with the dataset's `answer_format`; a wrong
or missing final answer is counted and reported, never corrected. The prompt asks for a final
line `#### <answer>`, and the embedded generator's traces end with one; `answer_line` says which
line of a text that is (the last `####` line that is not a Markdown heading such as `#### Step 1`).
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ifexp.schema import DatasetConfig, IfexpError, expected_one_of

ANSWER_MARK = "####"
FLAW_KINDS = ("arithmetic_error", "wrong_final_answer", "skipped_step", "truncated", "mismatched_trace")
REQUIRED_FIELDS = ("id", "question", "cot", "answer")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    cot: str
    answer: str
    flaw: str = ""


def _is_heading(line: str) -> bool:
    """`#### Step 1`, `#### **Solution**`: a line that opens with the mark and then a word."""
    stripped = line.lstrip()
    if not stripped.startswith(ANSWER_MARK):
        return False
    text = stripped.lstrip("#").strip().lstrip("*_")
    return bool(text) and text[0].isalpha()


def answer_line(lines: list[str]) -> int | None:
    """Index of the `####` answer line among a text's lines, None when it has none.

    The answer line is the last line holding `####` that is not a Markdown heading. A heading is
    a line that opens with `####` and a word (`#### Step 1`, `#### Solution`) and has more text
    after it; as the last non-empty line, `#### yes` or `#### A` is an answer.
    """
    followed = False  # is there a non-empty line after the current one?
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if ANSWER_MARK in line and not (followed and _is_heading(line)):
            return index
        followed = followed or bool(line.strip())
    return None


# ---------------------------------------------------------------------------------------------
# JSONL contract


def read_jsonl(path: str | Path) -> list[Example]:
    """Read a CoT dataset; any bad line fails with the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise IfexpError(f"{path}: dataset file not found")
    examples: list[Example] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise IfexpError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise IfexpError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            for key in REQUIRED_FIELDS:
                value = record.get(key)
                if not isinstance(value, str | int | float) or isinstance(value, bool) or str(value) == "":
                    raise IfexpError(f"{path}:{line_no}: missing or empty field '{key}'")
            example_id = str(record["id"])
            if example_id in seen:
                raise IfexpError(f"{path}:{line_no}: duplicate id '{example_id}' (first on line {seen[example_id]})")
            seen[example_id] = line_no
            flaw = record.get("flaw") or ""
            examples.append(
                Example(example_id, str(record["question"]), str(record["cot"]), str(record["answer"]), str(flaw))
            )
    if not examples:
        raise IfexpError(f"{path}: dataset file is empty")
    return examples


def write_jsonl(path: str | Path, examples: list[Example]) -> None:
    with Path(path).open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(asdict(example)) + "\n")


# ---------------------------------------------------------------------------------------------
# Embedded data: reasoning-gym gsm_symbolic


def distinct_items(task: str, n: int, seed: int, **settings) -> list[tuple[int, str, dict]]:
    """(index, question, item) of the first n reasoning-gym `task` items with distinct questions,
    deterministic per seed. Oversampled: a few templates repeat a question for small seeds, and
    only the first of each is kept."""
    import reasoning_gym

    items = reasoning_gym.create_dataset(task, seed=seed, size=max(2 * n, n + 50), **settings)
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


def question_key(question: str) -> str:
    """A question's identity across splits: its text, whitespace and case ignored."""
    return " ".join(question.split()).casefold()


def build_splits(cfg: DatasetConfig) -> dict[str, list[Example]]:
    """Disjoint train / val / test splits; flaws only ever in train."""
    return split_dataset(cfg)[0]


def split_dataset(cfg: DatasetConfig) -> tuple[dict[str, list[Example]], dict[str, int | bool]]:
    """The splits, and what splitting did (`split_metrics` reports it): sizes, whether n_test was
    chosen automatically, and the duplicate questions found across splits."""
    report: dict[str, int | bool] = {"n_test_auto": False, "n_duplicate_questions": 0}
    if cfg.source == "gsm_symbolic":
        total = cfg.n_train + cfg.n_val + cfg.n_test
        pool = gsm_symbolic_examples(total, seed=cfg.data_seed)  # distinct questions
        train = pool[: cfg.n_train]
        val = pool[cfg.n_train : cfg.n_train + cfg.n_val]
        test = pool[cfg.n_train + cfg.n_val :]
    elif cfg.source in ("jsonl", "hub"):
        # The user's traces exactly as given: a wrong or missing final answer is evidence, not a typo.
        examples = read_jsonl(cfg.path) if cfg.source == "jsonl" else hub_examples(cfg)
        train, val, test = _split_user_examples(cfg, examples, report)
        if cfg.n_train >= 0:
            train = train[: cfg.n_train]
    elif cfg.source == "leg_counting":  # ifexp.tasks: a generated task with its own labelled flaws
        from ifexp.tasks import leg_counting_splits

        train, val, test = leg_counting_splits(cfg)
    else:
        raise IfexpError(expected_one_of("dataset.source", cfg.source))
    if not train:
        raise IfexpError(f"dataset '{cfg.name}': no training examples left after the validation/test split")
    if cfg.flaw_fraction > 0 and cfg.source != "leg_counting":
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
