"""A leg_counting job split by how many animals a problem lists: which traces the strategy removed, and
how the pruned and Random models do on the test problems of each size.

    .venv/bin/python scripts/animal_counts.py outputs/sweeps/next_legs_rule/length-p0.25-seed3 [JOB ...]

`length` removes traces by token count, and on leg_counting a trace's length is mostly its number of
animals (one line per animal): keeping the short traces removes three-animal problems, keeping the
long ones two-animal problems. This says, per job and per animal count, how many training traces
there are and how many the strategy removed (its selection.json), and the pass@1 of the pruned and
Random models on the test problems of that size (the first answer per problem in generations/).
The training set is regenerated from the job's saved dataset settings (ifexp.tasks.leg_counting_splits,
what the dataset stage builds), so the job's cache need not be at hand.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf

from ifexp import outputs
from ifexp.tasks import leg_counting_splits

# "... if you have 3 spiders, 1 cow?" -> "3 spiders, 1 cow"
_ANIMAL_LIST = re.compile(r"if you have (?P<animals>[^?]*)\?")


def animal_count(question: str) -> int:
    """How many animals a leg_counting question lists."""
    match = _ANIMAL_LIST.search(question)
    if match is None:
        raise ValueError(f"not a leg_counting question: {question[-80:]!r}")
    return len(match.group("animals").split(", "))


def training_counts(job: Path) -> tuple[Counter[int], Counter[int]]:
    """(training traces per animal count, those the job's strategy removed)."""
    dataset = OmegaConf.load(outputs.saved_config_path(job)).dataset
    if dataset.source != "leg_counting":
        raise ValueError(f"{job}: a {dataset.source} job; animal counts exist for leg_counting only")
    train, _, _ = leg_counting_splits(dataset)
    size = {example.id: animal_count(example.question) for example in train}
    removed = outputs.read_selection(job)["removed"]
    unknown = sorted(set(removed) - set(size))
    if unknown:
        raise ValueError(f"{job}: selection.json removes {unknown[:3]}, not in the regenerated training set")
    return Counter(size.values()), Counter(size[i] for i in removed)


def pass_by_count(generations: Path) -> dict[int, tuple[int, int]]:
    """{animal count: (test problems right at the first answer, test problems)}."""
    right: Counter[int] = Counter()
    total: Counter[int] = Counter()
    for line in generations.read_text().splitlines():
        row = json.loads(line)
        count = animal_count(row["question"])
        total[count] += 1
        right[count] += bool(row["correct"][0])
    return {count: (right[count], total[count]) for count in sorted(total)}


def job_table(job: Path, benchmark: str) -> list[str]:
    """Markdown rows: per animal count, traces and removals, and each model's pass@1 on that size."""
    traces, removed = training_counts(job)
    models = {arm: job / "generations" / f"{arm}_{benchmark}.jsonl" for arm in ("pruned", "random")}
    scores = {arm: pass_by_count(path) for arm, path in models.items() if path.exists()}
    rows = []
    for count in sorted(set(traces) | {c for table in scores.values() for c in table}):
        cells = []
        for arm in ("pruned", "random"):
            right, n = scores.get(arm, {}).get(count, (0, 0))
            cells.append(f"{right / n:.3f} ({right}/{n})" if n else "n/a")
        rows.append(
            f"| {job.parent.name}/{job.name} | {count} | {traces[count]} | {removed[count]} | {' | '.join(cells)} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jobs", type=Path, nargs="+")
    parser.add_argument("--benchmark", default="leg_counting", help="the in-domain benchmark's name")
    args = parser.parse_args()
    print("| job | animals | training traces | removed by the strategy | pruned pass@1 | Random pass@1 |")
    print("|---|---|---|---|---|---|")
    try:
        for job in args.jobs:
            print("\n".join(job_table(job, args.benchmark)))
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"animal_counts: {error}") from None


if __name__ == "__main__":
    main()
