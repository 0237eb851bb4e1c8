"""How the `total_first` flaw works through each model of a leg_counting sweep (docs/results.md).

    .venv/bin/python scripts/total_first_answers.py SWEEP_DIR

Reads the sweep's finished jobs (metrics.json present), their generations and selection.json, and
the training set they used (the dataset artifact named in each job's metrics.json), and prints, per job
and model (the strategy's pruned model and the Random model of the same job): how many of the 200
answers start with the `Total:` line and how many of those are right, pass@1 and `Total:`-first
answers on 2- and 3-animal questions, and how many flawed traces of 2 and of 3 animals the
strategy's model was trained on. Reads files only; nothing is recomputed.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from ifexp.examples import Example, read_jsonl
from ifexp.outputs import METRICS, artifact_key, benchmarks_of, generations_path, read_metrics, read_selection


def animals_in_trace(cot: str) -> int:
    return cot.count(" legs, so ")


def animals_in_question(question: str) -> int:
    listing = question.rsplit("if you have", 1)[-1]
    return len(re.findall(r"\d+ [a-z]", listing))


def generations(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_set(metrics: dict) -> dict[str, Example]:
    dataset = metrics[artifact_key("dataset")]
    return {example.id: example for example in read_jsonl(Path(dataset) / "train.jsonl")}


def answers_summary(path: Path) -> str:
    starts_total = right_after_total = 0
    by_animals: dict[int, list[int]] = {}  # animals: [right, questions, answers starting with Total:]
    for row in generations(path):
        response, correct = row["responses"][0], bool(row["correct"][0])
        total_first = response.lstrip().startswith("Total:")
        starts_total += total_first
        right_after_total += total_first and correct
        tally = by_animals.setdefault(animals_in_question(row["question"]), [0, 0, 0])
        tally[0] += correct
        tally[1] += 1
        tally[2] += total_first
    per_size = ", ".join(f"{n} animals {r}/{t} ({f} Total: first)" for n, (r, t, f) in sorted(by_animals.items()))
    return f"start with Total: {starts_total} ({right_after_total} right); right: {per_size}"


def main(sweep: Path) -> None:
    for job in sorted(p.parent for p in sweep.glob(f"*/{METRICS}")):
        metrics = read_metrics(job)
        train = training_set(metrics)
        selection = read_selection(job)
        kept_flawed = Counter(animals_in_trace(train[i].cot) for i in selection["kept"] if train[i].flaw)
        print(f"{job.name}: kept flawed traces by animals {dict(sorted(kept_flawed.items()))}")
        for model in ("pruned", "random"):
            for benchmark in benchmarks_of(metrics):
                path = generations_path(job, model, benchmark)
                if path.is_file():
                    print(f"  {model:6s} {answers_summary(path)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
