"""The run-output contract (DESIGN.md "Per-run outputs"): what a run directory holds, by name.

Other people's scripts read these files, so every name, metrics key and column is spelled here
once; the pipeline writes through these helpers, and the report and the run-directory guard read
through them.

    <run dir>/
      .hydra/            config.yaml, hydra.yaml, overrides.yaml (written by ifexp.job_identity)
      run.log            the job's log; a crash keeps its traceback here
      metrics.json       flat JSON (keys below)
      selection.json     strategy, fraction, seed, options, kept and removed example ids
      scores.csv         one row per training example (SCORES_CSV_COLUMNS, + optional columns)
      removal_scores.csv one row per training example: the strategy's removal score (its ranking)
      generations/       <arm>_<benchmark>.jsonl: each evaluated model's graded answers
      figures/           the run's figures
      wandb/             the W&B run (offline by default)

Models of a job ("arms"): `pruned` (the strategy's selection: its keys have no prefix), `random`
(Random pruning of the same size and seed), `base` (the base model), `full` (all of D).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HYDRA_DIR = ".hydra"
SAVED_CONFIG = "config.yaml"  # in HYDRA_DIR: the job's config as Hydra composed it
HYDRA_CONFIG = "hydra.yaml"  # in HYDRA_DIR: Hydra's own settings for the job
OVERRIDES = "overrides.yaml"  # in HYDRA_DIR: the job's command-line overrides
RUN_LOG = "run.log"
METRICS = "metrics.json"
SELECTION = "selection.json"
SCORES = "scores.csv"
REMOVAL_SCORES = "removal_scores.csv"
GENERATIONS = "generations"
FIGURES = "figures"

# metrics.json keys that are not per benchmark
DIGEST_KEY = "config_digest"  # the job's config digest (ifexp.job_identity)
STRATEGY_KEY = "strategy"
SEED_KEY = "seed"
# which draw of the data, of theta* and of its answers a job belongs to (DESIGN.md "Evidence
# standards": the replicate is the unit of evidence; seeds under one replicate are not)
REPLICATE_KEY = "replicate"
# The keys that describe the job, and the config value each holds (`scorer`: the model's where
# there is no scorer): how a reader without the job's saved config tells jobs apart.
DESCRIPTION_KEYS = {
    "model": "model.name",
    "scorer": "scorer.name",
    "dataset": "dataset.name",
    "estimator": "estimator.name",
    STRATEGY_KEY: "pruning.strategy",
    "fraction": "pruning.fraction",
    SEED_KEY: "seed",
}

ARMS = ("pruned", "random", "base", "full")
PASS = "pass@1"
DELTA_VS_RANDOM = "delta_vs_random"
GAIN_VS_BASE = "gain_vs_base"

# scores.csv: the contract columns, then optional ones (flaw where the dataset has labels,
# trace_answer_correct and self_influence where computed)
SCORE_COLUMNS = ("s_correct", "s_incorrect", "rank_correct", "rank_incorrect", "rank_score")
SCORES_CSV_COLUMNS = ("example_id", *SCORE_COLUMNS, "perplexity", "kept")
OPTIONAL_SCORES_CSV_COLUMNS = ("flaw", "trace_answer_correct", "self_influence")


def arm_prefix(arm: str) -> str:
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}: expected one of {', '.join(ARMS)}")
    return "" if arm == "pruned" else f"{arm}_"


def pass_key(benchmark: str, arm: str = "pruned") -> str:
    """metrics.json key of an arm's pass@1 on a benchmark: pass@1/<b>, random_pass@1/<b>, ..."""
    return f"{arm_prefix(arm)}{PASS}/{benchmark}"


def delta_key(benchmark: str) -> str:
    """pass@1 of the strategy's model minus Random's of the same size and seed."""
    return f"{DELTA_VS_RANDOM}/{benchmark}"


def gain_key(benchmark: str) -> str:
    """pass@1 of the strategy's model minus the base model's."""
    return f"{GAIN_VS_BASE}/{benchmark}"


def length_capped_key(benchmark: str, arm: str = "pruned") -> str:
    return f"{arm_prefix(arm)}eval/{benchmark}/n_length_capped"


def timing_key(stage: str) -> str:
    return f"time/{stage}_s"


def flaw_key(measure: str) -> str:
    """How well the removal found the flawed training examples (ifexp.selection.flaws): flaw/auroc, ..."""
    return f"flaw/{measure}"


# how many of the strategy's removed examples Random's selection of the same size and seed also
# removed: a strategy whose ranking is mostly ties broken by the seed's random order (difficulty
# where the model solves almost nothing) is Random's selection, and its delta is training noise
SHARED_WITH_RANDOM = "selection/n_removed_shared_with_random"


def carrying_key(kind: str, correct: bool) -> str:
    """How many of theta*'s graded validation answers, right or wrong, carry a rule kind's error
    (ifexp.trace_check.rule_carried_metrics): queries/n_incorrect_carrying/<kind>, ..."""
    return f"queries/n_{'correct' if correct else 'incorrect'}_carrying/{kind}"


def artifact_key(name: str) -> str:
    return f"artifact/{name}"


def artifact_paths(metrics: Mapping[str, Any]) -> dict[str, str]:
    """{artifact name: its folder in the cache} of every cached artifact a job used."""
    prefix = artifact_key("")
    return {key[len(prefix) :]: str(value) for key, value in metrics.items() if key.startswith(prefix)}


def benchmarks_of(metrics: Mapping[str, Any]) -> list[str]:
    """The benchmarks a job reported the strategy's pass@1 on, sorted."""
    prefix = f"{PASS}/"
    return sorted(key[len(prefix) :] for key in metrics if key.startswith(prefix))


def saved_config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / HYDRA_DIR / SAVED_CONFIG


def generations_path(run_dir: str | Path, arm: str, benchmark: str) -> Path:
    arm_prefix(arm)  # an unknown arm is an error, not a missing file
    return Path(run_dir) / GENERATIONS / f"{arm}_{benchmark}.jsonl"


# ---------------------------------------------------------------------------------------------
# metrics.json and selection.json


def write_metrics(run_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    path = Path(run_dir) / METRICS
    path.write_text(json.dumps(dict(metrics), indent=2))
    return path


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / METRICS).read_text())


def write_selection(
    run_dir: str | Path,
    strategy: str,
    fraction: float,
    seed: int,
    options: Mapping[str, Any],
    ids: Sequence[str],
    kept: Sequence[bool],
) -> Path:
    """selection.json: the strategy, fraction, seed and options, and which ids were kept and removed."""
    flags = [bool(k) for k in kept]
    selection = {
        "strategy": strategy,
        "fraction": fraction,
        "seed": seed,
        "options": dict(options),
        "n_kept": sum(flags),
        "n_removed": len(flags) - sum(flags),
        "kept": [i for i, k in zip(ids, flags, strict=True) if k],
        "removed": [i for i, k in zip(ids, flags, strict=True) if not k],
    }
    path = Path(run_dir) / SELECTION
    path.write_text(json.dumps(selection, indent=2))
    return path


def read_selection(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / SELECTION).read_text())


# ---------------------------------------------------------------------------------------------
# scores.csv


def _number(value: float, digits: int) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}g}"


def write_scores_csv(
    path: str | Path,
    example_ids: Sequence[str],
    scores: Mapping[str, Sequence[float]],
    perplexity: Sequence[float] | None = None,
    kept: Sequence[bool] | None = None,
    flaw: Sequence[str] | None = None,
    trace_answer_correct: Sequence[bool] | None = None,
    self_influence: Sequence[float] | None = None,
) -> None:
    """scores.csv: one row per training example, the SCORES_CSV_COLUMNS (`scores` holds the
    SCORE_COLUMNS arrays), then `flaw` (where the dataset has labels), `trace_answer_correct`
    (1/0: does the trace's own final answer match the gold answer) and `self_influence` (I(d, d))
    where given. Unknown values are left empty."""
    optional = {"flaw": flaw, "trace_answer_correct": trace_answer_correct, "self_influence": self_influence}
    header = [*SCORES_CSV_COLUMNS, *(name for name, values in optional.items() if values is not None)]
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, example_id in enumerate(example_ids):
            row: list[Any] = [example_id, *(_number(float(scores[c][i]), 8) for c in SCORE_COLUMNS)]
            row.append("" if perplexity is None else _number(float(perplexity[i]), 6))
            row.append("" if kept is None else int(bool(kept[i])))
            if flaw is not None:
                row.append(flaw[i])
            if trace_answer_correct is not None:
                row.append(int(bool(trace_answer_correct[i])))
            if self_influence is not None:
                row.append(_number(float(self_influence[i]), 8))
            writer.writerow(row)


def read_scores_csv(path: str | Path) -> list[dict[str, str]]:
    """scores.csv's rows as {column: text}; refuses a file without the contract columns."""
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in SCORES_CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a scores.csv (missing columns {', '.join(missing)})")
        return list(reader)


# ---------------------------------------------------------------------------------------------
# removal_scores.csv: the strategy's ranking (what it removes first), for every job with a strategy

REMOVAL_SCORES_COLUMNS = ("example_id", "removal_score", "removed")  # then `flaw` where labelled


def write_removal_scores(
    run_dir: str | Path,
    example_ids: Sequence[str],
    removal_scores: Sequence[float],
    kept: Sequence[bool],
    flaw: Sequence[str] | None = None,
) -> Path:
    """removal_scores.csv: one row per training example, in dataset order: its removal score
    (higher = removed first; ties go in dataset order), whether it was removed (1/0), and its flaw
    label where the dataset has labels (empty: clean). The ranking a flaw-detection ROC is drawn from."""
    path = Path(run_dir) / REMOVAL_SCORES
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*REMOVAL_SCORES_COLUMNS, *(["flaw"] if flaw is not None else [])])
        for i, example_id in enumerate(example_ids):
            row = [example_id, repr(float(removal_scores[i])), 0 if kept[i] else 1]
            writer.writerow(row + ([flaw[i]] if flaw is not None else []))
    return path


def read_removal_scores(run_dir: str | Path) -> dict[str, list] | None:
    """{"example_id", "removal_score", "removed", "flaw" (None without labels)} of a job's
    removal_scores.csv, or None where it has none (strategy none, or a job from before the file)."""
    path = Path(run_dir) / REMOVAL_SCORES
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    labelled = bool(rows) and "flaw" in rows[0]
    return {
        "example_id": [r["example_id"] for r in rows],
        "removal_score": [float(r["removal_score"]) for r in rows],
        "removed": [r["removed"] == "1" for r in rows],
        "flaw": [r["flaw"] for r in rows] if labelled else None,
    }


def replicate_id(data_seed: int, scorer_seed: int) -> str:
    """A job's replicate: the data draw (dataset.data_seed) and theta*'s seed (scorer_seed, which
    also draws theta*'s sampled answers)."""
    return f"data_seed={data_seed},scorer_seed={scorer_seed}"
