"""What each fine-tuned model's leg_counting answers get wrong, step by step: does a model trained
on flawed traces write their flaws? For every model a job graded (base, full, Random, pruned), the
step checker (ifexp.trace_check.leg_trace_errors) reads each greedy answer on the test split; a
right answer with a wrong step is an answer-preserving flaw the model imitated.

    .venv/bin/python scripts/step_errors.py outputs/sweeps/slips_pilot/oracle-p0.25-seed100 [JOB ...]

Prints one Markdown row per job and model: pass@1, the right answers with a wrong step, and how many
answers carry each error kind (a wrong final answer is not counted as a kind: pass@1 says it); where
the job's training set has a rule kind (`next_legs_rule`, `four_legs_rule`), how many answers carry
the rule itself (`carries <kind>`: a `wrong_factor` or `wrong_fact` line is any such mistake, the rule
one of them).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from ifexp import outputs
from ifexp.tasks import LegProblem, expand_flaw_kinds, leg_counting_split_problems
from ifexp.trace_check import RULE_CARRIED, leg_trace_errors

ANSWER_KINDS = {"final_answer_wrong", "final_answer_missing"}


def job_problems(job: Path) -> dict[str, LegProblem]:
    """The job's leg_counting problems by id, regenerated from its saved dataset settings (the
    generations carry the question, not the animals the checker needs)."""
    dataset = OmegaConf.load(outputs.saved_config_path(job)).dataset
    if dataset.source != "leg_counting":
        raise SystemExit(f"step_errors: {job} is a {dataset.source} job; the step checker reads leg_counting only")
    return {p.id: p for p in leg_counting_split_problems(dataset)}


def job_rules(job: Path) -> list[str]:
    """The rule kinds in the job's training set, whose carrying answers are counted by name."""
    dataset = OmegaConf.load(outputs.saved_config_path(job)).dataset
    if not dataset.get("flaw_fraction"):
        return []
    return [kind for kind in expand_flaw_kinds(dataset.source, dataset.flaw_kinds) if kind in RULE_CARRIED]


def step_errors(problems: dict[str, LegProblem], rows: list[dict], rules: Sequence[str] = ()) -> dict:
    """pass@1 of the first response per problem, right answers with a wrong step, error kinds, and
    the answers that carry each of `rules`."""
    kinds: Counter[str] = Counter()
    right = right_with_wrong_step = 0
    for row in rows:
        errors = set(leg_trace_errors(problems[row["id"]], row["responses"][0]))
        correct = bool(row["correct"][0])
        right += correct
        right_with_wrong_step += correct and bool(errors)
        kinds.update(errors - ANSWER_KINDS)
        kinds.update(f"carries {rule}" for rule in rules if RULE_CARRIED[rule](row["responses"][0]))
    return {"n": len(rows), "pass@1": right / len(rows), "right_with_wrong_step": right_with_wrong_step, "kinds": kinds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jobs", type=Path, nargs="+")
    args = parser.parse_args()
    print("| job | model | pass@1 | right with a wrong step | answers with each error |")
    print("|---|---|---|---|---|")
    for job in args.jobs:
        problems = job_problems(job)
        rules = job_rules(job)
        for model in outputs.ARMS:
            path = outputs.generations_path(job, model, "leg_counting")
            if not path.exists():
                continue
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            counts = step_errors(problems, rows, rules)
            kinds = ", ".join(f"{kind} {n}" for kind, n in counts["kinds"].most_common()) or "none"
            cells = [job.name, model, f"{counts['pass@1']:.3f}", str(counts["right_with_wrong_step"]), kinds]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
