"""Jobs composed from conf/ and sweeps/ as `ifexp` composes them, run in this process."""

import itertools
from pathlib import Path

import yaml

from helpers import REPO
from ifexp.cli import compose_job

# The columns every scores.csv starts with, as DESIGN.md's contract spells them (not read from the
# code, so that a renamed column fails); flaw, trace_answer_correct and self_influence follow
# where a job has them.
SCORES_CSV_COLUMNS = [
    "example_id",
    "s_correct",
    "s_incorrect",
    "rank_correct",
    "rank_incorrect",
    "rank_score",
    "perplexity",
    "kept",
]


def run(overrides: list[str], run_dir: Path) -> dict:
    """`ifexp OVERRIDES hydra.run.dir=RUN_DIR` without the subprocess: the job's metrics."""
    from ifexp.pipeline import run_job

    return run_job(compose_job(overrides), run_dir)


def expand_sweep(name: str) -> list[list[str]]:
    """The overrides of every job of a named sweep (its hydra.sweeper.params, expanded)."""
    params = yaml.safe_load((REPO / "sweeps" / f"{name}.yaml").read_text())["hydra"]["sweeper"]["params"]
    choices = [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()]
    return [list(job) for job in itertools.product(*choices)]
