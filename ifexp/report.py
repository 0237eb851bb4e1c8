"""`ifexp-report DIR`: summarise a run or multirun directory into report.md and figures.

Reads every job under DIR (its `metrics.json`, its resolved `.hydra/config.yaml` and its
`generations/{pruned,random}_<benchmark>.jsonl`) and writes, beside them in DIR:
- report.md: one row per configuration (jobs grouped by every config value that differs
  between them except the seed and `EXCLUDED_FROM_GROUPING`; duplicates are refused), with
  pass@1 and Δ vs Random per benchmark, paired per problem and seed: mean Δ, a 95% paired
  bootstrap interval over problems × seeds, an exact sign-flip test over problems (the exact
  McNemar test with one seed and greedy answers), the per-seed values; flaw detection per
  strategy, and the compute per stage; with `--versus S`, every row's Δ against strategy S's
  model too (same pairing, on the seeds both rows have); with `--across KEY=VALUE` (sections
  that differ in a setting, e.g. train.mixed_precision), every row against the same row in the
  section where KEY=VALUE: its pass@1 and its Δ vs Random (ΔΔ), same pairing;
- delta_vs_random.png (Δ bars per benchmark and strategy, with the paired intervals) and
  flaw_detection.png (precision / recall / AUROC at removing flawed examples).

What each interval is over (`paired_estimate`):
- Unit of comparison: a (problem, seed) pair; d = mean(correct of the strategy's model) −
  mean(correct of Random's model of the same size and seed) over that problem's samples. Both
  models are trained and evaluated on the same problems in the same job.
- Interval: percentile bootstrap (10,000 resamples) of the mean of d, clustered by problem: a
  problem is the same problem in every seed, so problems are resampled with all their seeds.
  Seeds are resampled too (independently: a two-way bootstrap, conservative) only where a row
  has at least MIN_SEEDS_RESAMPLED seeds; with fewer the seeds are held fixed and the interval
  is conditional on those training runs, and the report says so. With fewer than
  MIN_PROBLEMS_FOR_INTERVAL problems (or without per-problem generations) no interval is
  called 95%: the report prints the min–max of the per-seed values and says so.
- Test: exact two-sided sign-flip (permutation) test of mean d = 0 over problems, each
  problem's d averaged over its seeds (the problem is the exchangeable unit; seeds of one
  problem are not independent). With one seed and greedy k=1 this is the exact McNemar test
  (binomial on the discordant problems). Beside it, the per-seed Δ and an exact sign-flip test
  over seeds (smallest possible p with n seeds: 2/2^n).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ifexp.job_identity import CANNOT_CHANGE_A_RESULT, DIGEST_KEY, config_digest, flatten, matches, read_config
from ifexp.schema import IfexpError, PruningConfig
from ifexp.selection.registry import STRATEGIES, option_names
from ifexp.tasks import FAMILIES

# The flaw-detection measures a job records (ifexp.selection.flaws.flaw_detection), as the report's
# columns call them: in all, then per flaw family (ifexp.tasks.FAMILIES).
FLAW_MEASURES = {
    "precision": "precision",
    "recall": "recall",
    "auroc": "AUROC",
    "precision_at_n": "precision at n",
    **{
        f"{measure}/{family}": f"{title} ({family.replace('_', '-')})"
        for family in FAMILIES
        for measure, title in (("auroc", "AUROC"), ("precision_at_n", "precision at n"))
    },
}

# Config values that never separate two jobs into different rows: the seed is the replicate a
# row pools over; the rest cannot change a result (ifexp.job_identity).
EXCLUDED_FROM_GROUPING = ("seed", *CANNOT_CHANGE_A_RESULT)
# Values that name a strategy and its own options (as the strategies declare them): a row within a
# section, not a section.
STRATEGY_KEYS = ("pruning.strategy", *(f"pruning.{option}" for option in option_names()))
# Shown in a row's label when not ifexp's default, even where every job has the same value: a report
# whose jobs all ran Combined with z-scores, or after answer_check, must not read as the default's.
_PRUNING_DEFAULTS = PruningConfig()
# Without .hydra/config.yaml a job is identified by these metrics only (said in the report).
METRICS_IDENTITY = {
    "model": "model.name",
    "scorer": "scorer.name",
    "dataset": "dataset.name",
    "estimator": "estimator.name",
    "strategy": "pruning.strategy",
    "fraction": "pruning.fraction",
}
MIN_PROBLEMS_FOR_INTERVAL = 20  # fewer problems: no bootstrap interval, the per-seed range instead
MIN_SEEDS_RESAMPLED = 5  # fewer seeds: held fixed in the bootstrap (the interval says so)
N_RESAMPLES = 10_000
EXACT_DP_LIMIT = 50_000_000  # largest (values x integer range) for the exact sign-flip distribution
ABSENT = "<absent>"


# ---------------------------------------------------------------------------------------------
# Statistics


def sign_flip_p_value(differences: list[float] | list[Fraction], n_monte_carlo: int = 100_000) -> float:
    """Two-sided paired permutation test of mean(differences) = 0 under random sign flips.

    Exact: over all 2^n flips (n <= 16), or, for rational differences (Fractions), from the
    exact distribution of the sum of ±|d| on a common integer grid, for any n. Otherwise a
    Monte-Carlo estimate over n_monte_carlo flips. With 3 seeds the smallest possible p is 0.25.
    """
    return _sign_flip(differences, n_monte_carlo)[0]


def _sign_flip(differences, n_monte_carlo: int) -> tuple[float, bool]:
    """(p, whether it is exact) of `sign_flip_p_value`."""
    values = [d for d in differences if d != 0]
    if not values:
        return 1.0, True
    if all(isinstance(d, Fraction | int) for d in values):
        scale = math.lcm(*(Fraction(d).denominator for d in values))
        steps = [abs(int(Fraction(d) * scale)) for d in values]
        observed = abs(sum(int(Fraction(d) * scale) for d in values))
        total = sum(steps)
        if len(steps) * total <= EXACT_DP_LIMIT:
            # distribution of sum(±step): index s + total
            dist = np.zeros(2 * total + 1)
            dist[total] = 1.0
            for step in steps:
                dist = 0.5 * (np.roll(dist, step) + np.roll(dist, -step))  # no wrap: |sum| <= total
            sums = np.abs(np.arange(-total, total + 1))
            return float(min(1.0, dist[sums >= observed].sum())), True
    data = np.asarray([float(d) for d in values])
    observed = abs(data.mean())
    if len(data) <= 16:
        signs = np.array(list(itertools.product([-1.0, 1.0], repeat=len(data))))
        exact = True
    else:
        signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(max(n_monte_carlo, 1), len(data)))
        exact = False
    return float(np.mean(np.abs((signs * data).mean(axis=1)) >= observed - 1e-12)), exact


def cluster_bootstrap(
    values: np.ndarray, resample_seeds: bool, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of a problems × seeds matrix (NaN: missing).

    Problems (rows) are resampled with replacement, each with all its seeds; seeds (columns)
    are resampled too, independently, when resample_seeds. A replicate is the mean over the
    chosen (problem, seed) cells.
    """
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    n_problems, n_seeds = values.shape
    rng = np.random.default_rng(seed)
    replicates = []
    for start in range(0, n_resamples, 2000):
        size = min(2000, n_resamples - start)
        rows = rng.integers(0, n_problems, size=(size, n_problems))  # problems drawn, with all their seeds
        if resample_seeds:  # how often each seed is drawn
            drawn = rng.integers(0, n_seeds, size=(size, n_seeds))
            w_seeds = (drawn[:, :, None] == np.arange(n_seeds)).sum(axis=1).astype(float)
            sums = (filled[rows].sum(axis=1) * w_seeds).sum(axis=1)
            counts = (present[rows].sum(axis=1) * w_seeds).sum(axis=1)
        else:
            sums = filled.sum(axis=1)[rows].sum(axis=1)
            counts = present.sum(axis=1)[rows].sum(axis=1).astype(float)
        replicates.append(sums[counts > 0] / counts[counts > 0])
    draws = np.concatenate(replicates)
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


@dataclass
class Estimate:
    """A row's value on one benchmark, and exactly what its interval and test are over."""

    mean: float
    per_seed: dict[int, float]
    low: float | None = None  # 95% interval, or the per-seed range when interval == "range"
    high: float | None = None
    interval: str = "none"  # "bootstrap" | "range" | "none"
    basis: str = ""  # what the brackets are over, in words
    p: float | None = None
    p_basis: str = ""
    n_nonzero: int | None = None  # problems whose Δ (averaged over seeds) is not 0: what p is decided by
    p_seeds: float | None = None
    n_problems: int = 0


def _seeds_text(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def problem_estimate(matrix: np.ndarray, seeds: list[int], paired: bool) -> tuple[float | None, float | None, str, str]:
    """(low, high, kind, basis) for a problems × seeds matrix of per-problem values."""
    n_problems, n_seeds = matrix.shape
    what = "paired bootstrap" if paired else "bootstrap"
    if n_problems < MIN_PROBLEMS_FOR_INTERVAL:
        if n_seeds >= 2:
            per_seed = np.nanmean(matrix, axis=0)
            return (
                float(per_seed.min()),
                float(per_seed.max()),
                "range",
                f"min–max over {n_seeds} seeds (not a confidence interval: {n_problems} problems, "
                f"fewer than {MIN_PROBLEMS_FOR_INTERVAL} for a bootstrap over problems)",
            )
        return None, None, "none", f"no interval: {n_problems} problems × 1 seed"
    if n_seeds >= MIN_SEEDS_RESAMPLED:
        low, high = cluster_bootstrap(matrix, resample_seeds=True)
        return (
            low,
            high,
            "bootstrap",
            f"95% {what} over {n_problems} problems × {n_seeds} seeds "
            "(problems and seeds resampled independently: a two-way bootstrap)",
        )
    low, high = cluster_bootstrap(matrix, resample_seeds=False)
    held = (
        "problems resampled; one seed"
        if n_seeds == 1
        else f"problems resampled, each with all its seeds; the {n_seeds} seeds held fixed, fewer than "
        f"{MIN_SEEDS_RESAMPLED} to resample: conditional on these training runs"
    )
    return low, high, "bootstrap", f"95% {what} over {n_problems} problems × {_seeds_text(n_seeds)} ({held})"


def paired_estimate(outcomes: dict[int, dict[str, tuple[Fraction, Fraction]]]) -> Estimate:
    """Δ of one arm against another (Random, or the strategy named by --versus) from per-(seed,
    problem) pass rates: {seed: {problem id: (ours, theirs)}}."""
    seeds = sorted(outcomes)
    problems = list(dict.fromkeys(pid for seed in seeds for pid in outcomes[seed]))
    matrix = np.full((len(problems), len(seeds)), np.nan)
    per_problem: dict[str, list[Fraction]] = defaultdict(list)
    per_seed: dict[int, Fraction] = {}
    row = {pid: i for i, pid in enumerate(problems)}
    for j, seed in enumerate(seeds):
        diffs = []
        for pid, (ours, random) in outcomes[seed].items():
            d = ours - random
            matrix[row[pid], j] = float(d)
            per_problem[pid].append(d)
            diffs.append(d)
        per_seed[seed] = sum(diffs, Fraction(0)) / len(diffs)
    low, high, kind, basis = problem_estimate(matrix, seeds, paired=True)
    problem_means = [sum(ds, Fraction(0)) / len(ds) for ds in per_problem.values()]
    p, exact = _sign_flip(problem_means, 100_000)
    discordant = sum(1 for m in problem_means if m != 0)
    p_basis = (
        f"{'exact' if exact else 'Monte-Carlo'} two-sided sign-flip test over {len(problems)} problems "
        "(each problem's Δ averaged over its seeds)"
    )
    if len(seeds) == 1 and all(abs(m) in (0, 1) for m in problem_means):
        p_basis += "; with one seed and one sample a problem, the exact McNemar test"
    if len(seeds) > 1:
        # Problems are the only random unit here: where training runs differ a lot (a run learns a
        # procedure or not), p can be small while the two-way interval, which resamples runs, holds 0.
        p_basis += (
            f"; conditional on these {len(seeds)} training runs (whether these models differ, not whether "
            "new training seeds would: for that, the interval and the p over seeds)"
        )
    return Estimate(
        mean=float(np.nanmean(matrix)),
        per_seed={seed: float(v) for seed, v in per_seed.items()},
        low=low,
        high=high,
        interval=kind,
        basis=basis,
        p=p,
        p_basis=p_basis,
        n_nonzero=discordant,
        p_seeds=sign_flip_p_value(list(per_seed.values())) if len(seeds) > 1 else None,
        n_problems=len(problems),
    )


def arm_estimate(outcomes: dict[int, dict[str, Fraction]]) -> Estimate:
    """pass@1 of one arm from per-(seed, problem) pass rates."""
    seeds = sorted(outcomes)
    problems = list(dict.fromkeys(pid for seed in seeds for pid in outcomes[seed]))
    row = {pid: i for i, pid in enumerate(problems)}
    matrix = np.full((len(problems), len(seeds)), np.nan)
    for j, seed in enumerate(seeds):
        for pid, value in outcomes[seed].items():
            matrix[row[pid], j] = float(value)
    low, high, kind, basis = problem_estimate(matrix, seeds, paired=False)
    per_seed = {seed: float(np.nanmean(matrix[:, j])) for j, seed in enumerate(seeds)}
    return Estimate(float(np.nanmean(matrix)), per_seed, low, high, kind, basis, n_problems=len(problems))


def seed_estimate(per_seed: dict[int, float], paired: bool) -> Estimate:
    """Only per-seed values (no per-problem generations): the mean and the min–max, never a 95% interval."""
    values = list(per_seed.values())
    estimate = Estimate(float(np.mean(values)), dict(per_seed))
    if len(values) >= 2:
        estimate.low, estimate.high, estimate.interval = min(values), max(values), "range"
        estimate.basis = (
            f"min–max over {len(values)} seeds (not a confidence interval; no per-problem generations to pair)"
        )
        if paired:
            estimate.p_seeds = sign_flip_p_value(values)
    else:
        estimate.basis = "no interval: 1 seed, no per-problem generations"
    return estimate


# ---------------------------------------------------------------------------------------------
# Jobs, their configs and their generations


def _in_submitit(path: Path) -> bool:
    """Under submitit's own folder: its files about a job (pickles, logs), not a job."""
    return ".submitit" in path.parts


def _paths_named(root: Path, *names: str) -> list[Path]:
    """Every file or folder under root with one of these names, following symlinked folders: a
    root that links to job folders of other sweeps (to report them together) must not lose them
    without a word, as Path.rglob would. Each real folder is walked once (no link cycles, no job
    counted twice because two links reach it)."""
    found, walked = [], set()
    for folder, subdirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in walked:
            subdirs[:] = []
            continue
        walked.add(real)
        subdirs.sort()  # the path that names a job two links reach must not depend on listing order
        found.extend(Path(folder) / name for name in (*subdirs, *files) if name in names)
    return sorted(found)


def load_runs(root: Path) -> list[dict[str, Any]]:
    runs = []
    for path in _paths_named(root, "metrics.json"):
        if _in_submitit(path):
            continue
        metrics = json.loads(path.read_text())
        if "strategy" in metrics:
            metrics["_dir"] = str(path.parent.relative_to(root)) or "."
            runs.append(metrics)
    return runs


def unfinished_jobs(root: Path) -> list[str]:
    """Job folders (a `run.log` or a `.hydra/`) without a metrics.json: crashed, killed or still running.
    The report names them, so a row pooled over fewer seeds than were launched says so."""
    folders = {path.parent for path in _paths_named(root, "run.log", ".hydra")}
    return sorted(
        str(folder.relative_to(root)) or "."
        for folder in folders
        if not _in_submitit(folder) and not (folder / "metrics.json").is_file()
    )


def job_config(job_dir: Path, metrics: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The job's config as {dotted key: value}, and whether it came from .hydra/config.yaml.
    Refuses a job whose saved config is not the one its metrics.json records it ran with."""
    saved = read_config(job_dir)
    if saved is None:
        return {key: metrics.get(name, ABSENT) for name, key in METRICS_IDENTITY.items()}, False
    recorded = metrics.get(DIGEST_KEY)
    if recorded and config_digest(saved) != recorded:
        raise IfexpError(
            f"{job_dir}: .hydra/config.yaml (config digest {config_digest(saved)}) is not the config its "
            f"metrics.json came from ({recorded}); this folder's results cannot be attributed"
        )
    return flatten(saved), True


def excluded(key: str) -> bool:
    return matches(key, EXCLUDED_FROM_GROUPING)


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def read_pass_rates(path: Path) -> dict[str, Fraction]:
    """{problem id: fraction of its samples graded correct} from a generations/*.jsonl file."""
    rates: dict[str, Fraction] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        correct = [bool(c) for c in record["correct"]]
        if str(record["id"]) in rates:
            raise IfexpError(f"{path}: problem {record['id']} appears twice")
        rates[str(record["id"])] = Fraction(sum(correct), len(correct)) if correct else Fraction(0)
    return rates


@dataclass
class Cell:
    """One row: the jobs (one per seed) of one configuration."""

    section: tuple
    row: tuple
    label: str
    strategy: str
    runs: list[dict[str, Any]]


def non_default_options(strategy: str, config: dict[str, Any]) -> dict[str, Any]:
    """The options a job's strategy reads (and pruning.prefilter, which every strategy obeys) whose
    value is not ifexp's default, as {dotted key: value}."""
    declared = option_names(strategy) if strategy in STRATEGIES else ()
    options = {}
    for option in (*declared, "prefilter"):
        value = config.get(f"pruning.{option}", ABSENT)
        if value is not ABSENT and value != getattr(_PRUNING_DEFAULTS, option):
            options[f"pruning.{option}"] = value
    return options


def group_runs(root: Path, runs: list[dict[str, Any]]) -> tuple[list[str], list[str], list[Cell], int]:
    """Cells by every differing config value but the seed; refuses two jobs of one cell and seed.

    Returns (section keys, row keys, cells, jobs without .hydra/config.yaml).
    """
    configs, n_without = [], 0
    for run in runs:
        config, from_hydra = job_config(root / run["_dir"], run)
        configs.append(config)
        n_without += not from_hydra
    keys = sorted(set().union(*configs))
    differing = [k for k in keys if not excluded(k) and len({json.dumps(c.get(k, ABSENT)) for c in configs}) > 1]
    section_keys = [k for k in differing if k not in STRATEGY_KEYS]
    row_keys = [k for k in differing if k in STRATEGY_KEYS and k != "pruning.strategy"]
    cells: dict[tuple, Cell] = {}
    # a row's label names the row keys its strategy reads; all of them where that would make two
    # rows of a section read the same (Random jobs of a sweep over pruning.combine, say)
    full_labels: dict[tuple, str] = {}
    for run, config in zip(runs, configs, strict=True):
        section = tuple(config.get(k, ABSENT) for k in section_keys)
        row = (run["strategy"], *(config.get(k, ABSENT) for k in row_keys))
        extra = [
            f"{key}={_show(value)}"
            for key, value in non_default_options(run["strategy"], config).items()
            if key not in row_keys and key not in section_keys
        ]
        read = (
            {f"pruning.{option}" for option in option_names(run["strategy"])}
            if run["strategy"] in STRATEGIES
            else set()
        )
        shown = [f"{k}={_show(v)}" for k, v in zip(row_keys, row[1:], strict=True) if k in read] + extra
        every = [f"{k}={_show(v)}" for k, v in zip(row_keys, row[1:], strict=True)] + extra
        label = run["strategy"] + (f" ({', '.join(shown)})" if shown else "")
        full_labels[(section, row)] = run["strategy"] + (f" ({', '.join(every)})" if every else "")
        cell = cells.setdefault((section, row), Cell(section, row, label, run["strategy"], []))
        for other in cell.runs:
            if other["seed"] == run["seed"]:
                raise IfexpError(
                    f"{other['_dir']} and {run['_dir']} have the same config and seed {run['seed']}: "
                    "refusing to average duplicates (remove one, or report them separately)"
                )
        cell.runs.append(run)
    ordered = sorted(cells.values(), key=lambda c: (tuple(map(str, c.section)), tuple(map(str, c.row))))
    shared = Counter((cell.section, cell.label) for cell in ordered)
    for cell in ordered:
        cell.runs.sort(key=lambda r: r["seed"])
        if shared[(cell.section, cell.label)] > 1:
            cell.label = full_labels[(cell.section, cell.row)]
    return section_keys, row_keys, ordered, n_without


def arm_rates(root: Path, cell: Cell, bench: str, arm: str = "pruned") -> dict[int, dict[str, Fraction]]:
    """{seed: {problem id: pass rate}} of one arm ("pruned": the strategy's model, or "random") of a
    row's jobs on one benchmark, for the seeds whose job kept its generations."""
    rates = {}
    for run in cell.runs:
        path = root / run["_dir"] / "generations" / f"{arm}_{bench}.jsonl"
        if path.is_file():
            rates[run["seed"]] = read_pass_rates(path)
    return rates


def pair_arms(
    ours: dict[int, dict[str, Fraction]], theirs: dict[int, dict[str, Fraction]], what: str
) -> dict[int, dict[str, tuple[Fraction, Fraction]]]:
    """{seed: {problem id: (ours, theirs)}} on the seeds both arms have; their problems must agree."""
    pairs = {}
    for seed in sorted(set(ours) & set(theirs)):
        if set(ours[seed]) != set(theirs[seed]):
            raise IfexpError(f"{what}, seed {seed}: the two models were evaluated on different problems")
        pairs[seed] = {pid: (ours[seed][pid], theirs[seed][pid]) for pid in theirs[seed]}
    return pairs


def cell_estimates(root: Path, cell: Cell, bench: str) -> tuple[Estimate | None, Estimate | None]:
    """(pass@1 of the strategy's model, Δ vs Random) on one benchmark, paired where generations allow."""
    arms = arm_rates(root, cell, bench)
    pairs = pair_arms(arms, arm_rates(root, cell, bench, "random"), f"{cell.label}: {bench}: strategy vs Random")
    seeds = [r["seed"] for r in cell.runs]
    if len(arms) == len(seeds):
        passes = arm_estimate(arms)
    else:
        per_seed = {r["seed"]: r[f"pass@1/{bench}"] for r in cell.runs if f"pass@1/{bench}" in r}
        passes = seed_estimate(per_seed, paired=False) if per_seed else None
    delta = None
    if cell.strategy != "random":
        if pairs and len(pairs) == len(seeds):
            delta = paired_estimate(pairs)
        else:
            key = f"delta_vs_random/{bench}"
            per_seed = {r["seed"]: r[key] for r in cell.runs if key in r}
            delta = seed_estimate(per_seed, paired=True) if per_seed else None
    return passes, delta


def find_row(rows: list[dict], name: str) -> dict | None:
    """The row a --versus name means: its label exactly, else the one row of that strategy."""
    for row in rows:
        if row["cell"].label == name:
            return row
    matches = [row for row in rows if row["cell"].strategy == name]
    if len(matches) > 1:
        labels = ", ".join(f"`{row['cell'].label}`" for row in matches)
        raise IfexpError(f"--versus {name}: {len(matches)} rows of that strategy ({labels}); name one by its label")
    return matches[0] if matches else None


def paired_on_common_seeds(
    ours: dict[int, dict[str, Fraction]], theirs: dict[int, dict[str, Fraction]], launched: set[int], what: str
) -> Estimate | None:
    """paired_estimate of ours − theirs on the seeds both have; the launched seeds it leaves out are named."""
    pairs = pair_arms(ours, theirs, what)
    if not pairs:
        return None
    estimate = paired_estimate(pairs)
    left_out = sorted(launched - set(pairs))
    if left_out:
        estimate.basis += (
            f"; on {'seed' if len(pairs) == 1 else 'seeds'} {', '.join(map(str, sorted(pairs)))} only, "
            f"the ones both rows have (left out: {', '.join(map(str, left_out))})"
        )
    return estimate


def versus_estimates(root: Path, rows: list[dict], baseline: dict, benchmarks: list[str]) -> list[dict]:
    """Every other row's Δ pass@1 against the baseline row's model, paired per problem on the seeds
    both rows have (per-problem generations needed; rows without them are left out)."""
    theirs = {bench: arm_rates(root, baseline["cell"], bench) for bench in benchmarks}
    compared = []
    for row in rows:
        if row is baseline:
            continue
        launched = set(row["seeds"]) | set(baseline["seeds"])
        deltas = {}
        for bench in benchmarks:
            what = f"{row['cell'].label} vs {baseline['cell'].label}: {bench}"
            estimate = paired_on_common_seeds(arm_rates(root, row["cell"], bench), theirs[bench], launched, what)
            if estimate is not None:
                deltas[bench] = estimate
        if deltas:
            seeds = sorted({seed for estimate in deltas.values() for seed in estimate.per_seed})
            compared.append({"cell": row["cell"], "seeds": seeds, "versus": deltas})
    return compared


def delta_rates(
    pruned: dict[int, dict[str, Fraction]], random: dict[int, dict[str, Fraction]], what: str
) -> dict[int, dict[str, Fraction]]:
    """{seed: {problem id: d}}, d = the strategy's model's pass rate − Random's in the same job."""
    pairs = pair_arms(pruned, random, what)
    return {seed: {pid: ours - theirs for pid, (ours, theirs) in by_seed.items()} for seed, by_seed in pairs.items()}


def across_estimates(root: Path, rows: list[dict], reference_rows: list[dict], benchmarks: list[str]) -> list[dict]:
    """Every row against the row of the same label in the reference section (the same strategy under
    the other setting), paired per problem and seed: its pass@1 ("pass") and, but for Random, its
    Δ vs Random ("delta": a difference of two paired Δs)."""
    compared = []
    for row in rows:
        reference = next((r for r in reference_rows if r["cell"].label == row["cell"].label), None)
        if reference is None:
            continue
        launched = set(row["seeds"]) | set(reference["seeds"])
        entry: dict[str, Any] = {"cell": row["cell"], "pass": {}, "delta": {}}
        for bench in benchmarks:
            what = f"{row['cell'].label}: {bench}: across sections"
            ours, theirs = arm_rates(root, row["cell"], bench), arm_rates(root, reference["cell"], bench)
            estimate = paired_on_common_seeds(ours, theirs, launched, what)
            if estimate is not None:
                entry["pass"][bench] = estimate
            if row["cell"].strategy != "random":
                # each job's pruned arm is read once, above; only the Random arms are read here
                our_deltas = delta_rates(ours, arm_rates(root, row["cell"], bench, "random"), what)
                their_deltas = delta_rates(theirs, arm_rates(root, reference["cell"], bench, "random"), what)
                estimate = paired_on_common_seeds(our_deltas, their_deltas, launched, what)
                if estimate is not None:
                    entry["delta"][bench] = estimate
        if entry["pass"]:
            entry["seeds"] = sorted({s for e in entry["pass"].values() for s in e.per_seed})
            compared.append(entry)
    return compared


def parse_across(text: str, section_keys: list[str]) -> tuple[str, str]:
    """`KEY=VALUE` of --across, KEY one of the config values the report's sections differ in."""
    key, sep, value = text.partition("=")
    if not sep or key not in section_keys:
        keys = ", ".join(f"`{k}`" for k in section_keys) or "none: all jobs are one section"
        raise IfexpError(f"--across {text}: expected KEY=VALUE with KEY a setting the sections differ in ({keys})")
    return key, value


def reference_section(section: tuple, sections: list[tuple], position: int, value: str) -> tuple | None:
    """The section equal to `section` but for its value at `position`, which is `value` there."""
    for other in sections:
        if _show(other[position]) == value and all(
            a == b for i, (a, b) in enumerate(zip(other, section, strict=True)) if i != position
        ):
            return other
    return None


def summarise(runs: list[dict[str, Any]], root: Path) -> dict[str, Any]:
    """Cells (rows) with per-benchmark pass@1 and Δ estimates, and the flaw-detection means."""
    benchmarks = sorted({k.split("/", 1)[1] for r in runs for k in r if k.startswith("pass@1/")})
    section_keys, row_keys, cells, n_without = group_runs(root, runs)
    rows = []
    for cell in cells:
        row: dict[str, Any] = {"cell": cell, "seeds": [r["seed"] for r in cell.runs], "pass": {}, "delta": {}}
        for bench in benchmarks:
            passes, delta = cell_estimates(root, cell, bench)
            if passes is not None:
                row["pass"][bench] = passes
            if delta is not None:
                row["delta"][bench] = delta
        for measure in FLAW_MEASURES:
            values = [r[f"flaw/{measure}"] for r in cell.runs if f"flaw/{measure}" in r]
            values = [v for v in values if v == v]  # drop NaN
            if values:
                row[f"flaw/{measure}"] = float(np.mean(values))
        rows.append(row)
    return {
        "benchmarks": benchmarks,
        "section_keys": section_keys,
        "row_keys": row_keys,
        "rows": rows,
        "n_without_config": n_without,
    }


def stage_times(runs: list[dict[str, Any]]) -> dict[str, tuple[int, float, float]]:
    """Per stage: (artifacts, total, slowest) seconds it took to build each artifact the runs used.

    Read from the cache manifests, each artifact counted once however many jobs reused it (a
    job's own `time/*` only shows what that job computed). Eval artifacts add their share of
    the engine call that generated them.
    """
    seconds: dict[str, tuple[str, float]] = {}
    for run in runs:
        for key, path in run.items():
            manifest = Path(str(path)) / "manifest.json"
            if key.startswith("artifact/") and path not in seconds and manifest.is_file():
                data = json.loads(manifest.read_text())
                seconds[path] = (data["stage"], float(data.get("seconds", 0)) + float(data.get("generation_s", 0)))
    per_stage: dict[str, list[float]] = defaultdict(list)
    for stage, value in seconds.values():
        per_stage[stage].append(value)
    return {stage: (len(v), float(sum(v)), float(max(v))) for stage, v in per_stage.items()}


# ---------------------------------------------------------------------------------------------
# report.md


def _num(value: float, signed: bool, digits: int = 3) -> str:
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text.replace("+0.000", "0.000").replace("-0.000", "0.000") if signed else text


def fmt(estimate: Estimate, signed: bool) -> str:
    """mean [95% interval], mean (min–max a, b) for a per-seed range, or the mean alone."""
    text = _num(estimate.mean, signed)
    if estimate.interval == "bootstrap":
        text += f" [{_num(estimate.low, signed)}, {_num(estimate.high, signed)}]"
    elif estimate.interval == "range":
        text += f" (min–max {_num(estimate.low, signed)}, {_num(estimate.high, signed)})"
    return text


def _legend(benchmarks: list[str], rows: list[dict], kind: str, what: str) -> list[str]:
    """One line per benchmark naming what the brackets (and p) of `kind` are over."""
    lines = []
    for bench in benchmarks:
        # text -> (row label, its count of non-zero problems); the count differs per row, so it is kept
        # out of the grouped text and rows that share a test share a line
        by_basis: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
        for row in rows:
            if bench in row[kind]:
                estimate = row[kind][bench]
                text = estimate.basis + (f"; p: {estimate.p_basis}" if estimate.p_basis else "")
                by_basis[text].append((row["cell"].label, estimate.n_nonzero))
        for text, members in by_basis.items():
            who = "" if len(by_basis) == 1 else f" ({', '.join(label for label, _ in members)})"
            counts = [f"{label} {n_nonzero}" for label, n_nonzero in members if n_nonzero is not None]
            if counts:
                text += f"; problems with a non-zero Δ: {', '.join(counts)}"
            lines.append(f"- {what} {bench}{who}: {text}.")
    return lines


def _table(
    rows: list[dict], benchmarks: list[str], kind: str, text: Callable[[Estimate], str], with_seeds: bool = False
) -> list[str]:
    """A markdown table, one line per row: its strategy (and number of seeds), then text(estimate)
    of `kind` per benchmark, empty where the row has none."""
    columns = ["strategy", *(["seeds"] if with_seeds else []), *benchmarks]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lead = [row["cell"].label, *([str(len(row["seeds"]))] if with_seeds else [])]
        values = [text(row[kind][b]) if b in row[kind] else "" for b in benchmarks]
        lines.append(f"| {' | '.join(lead)} | " + " | ".join(values) + " |")
    return lines


def _p_text(p: float, digits: int, name: str = "p") -> str:
    """p=0.040, or p<0.001 where it would round to zero: "p=0.000" reads as an impossible p of zero."""
    smallest = 10.0**-digits
    return f"{name}<{smallest:.{digits}f}" if p < smallest / 2 else f"{name}={p:.{digits}f}"


def _delta_text(estimate: Estimate) -> str:
    """Δ [interval] (p=...): the Δ table's cell."""
    text = fmt(estimate, signed=True)
    return text if estimate.p is None else f"{text} ({_p_text(estimate.p, 3)})"


def _per_seed_text(estimate: Estimate) -> str:
    """The per-seed Δ, wins, their min–max and the sign-flip p over seeds: the Δ-per-seed table's cell."""
    per_seed = estimate.per_seed
    text = ", ".join(f"s{s} {_num(v, True)}" for s, v in per_seed.items())
    wins = f"{sum(v > 0 for v in per_seed.values())}/{sum(v < 0 for v in per_seed.values())}/{len(per_seed)}"
    text += f" (wins {wins}"
    if len(per_seed) > 1:
        text += f"; min–max over {len(per_seed)} seeds {_num(min(per_seed.values()), True)}, "
        text += f"{_num(max(per_seed.values()), True)}"
    if estimate.p_seeds is not None:
        text += f"; {_p_text(estimate.p_seeds, 2, name='p over seeds')}"
    return text + ")"


def write_report(
    root: Path, versus: list[str] | tuple[str, ...] = (), across: list[str] | tuple[str, ...] = ()
) -> Path:
    """report.md (and figures) for the jobs under root; `versus`: rows (a strategy, or a row's label)
    every other row is also compared with, paired per problem and seed, beside the Δ vs Random;
    `across`: `KEY=VALUE` settings every other section's rows are compared with, row by row."""
    from ifexp import figures

    runs = load_runs(root)
    if not runs:
        raise IfexpError(f"no job metrics.json (with a strategy) under {root}")
    summary = summarise(runs, root)
    benchmarks, section_keys, rows = summary["benchmarks"], summary["section_keys"], summary["rows"]
    differing = section_keys + ["pruning.strategy"] + summary["row_keys"]
    references = [parse_across(text, section_keys) for text in across]
    any_bootstrap = any(
        e.interval == "bootstrap" for row in rows for kind in ("pass", "delta") for e in row[kind].values()
    )
    excluded_text = ", ".join(f"`{e}*`" if e.endswith(".") else f"`{e}`" for e in EXCLUDED_FROM_GROUPING)
    common = {
        name: runs[0].get(name)
        for name in ("model", "scorer", "dataset", "estimator", "fraction")
        if name in runs[0] and len({json.dumps(r.get(name)) for r in runs}) == 1
    }
    lines = [
        f"# ifexp report: {root.name}",
        "",
        f"{len(runs)} jobs read from `{root}`"
        + (f" ({', '.join(f'{k}={v}' for k, v in common.items())} in all)" if common else "")
        + ". One row per configuration: jobs are grouped by every value of their resolved config "
        f"(`.hydra/config.yaml`) that differs between them (here: {', '.join(f'`{k}`' for k in differing)}), "
        f"except {excluded_text}, which cannot change a result or, for the seed, are what a row pools over; "
        "two jobs with the same configuration and seed are refused, not averaged.",
        "",
        "Δ = pass@1(strategy) − pass@1(Random pruning of the same size and seed, trained and evaluated in the "
        "same job), paired per benchmark problem and seed: d = mean(correct, strategy) − mean(correct, Random) "
        "over the problem's samples; mean Δ is the mean of d over problems × seeds. "
        + ("`[a, b]` is a 95% bootstrap interval, " if any_bootstrap else "")
        + "`(min–max a, b)` is only the range of the per-seed values (not a confidence interval); what each "
        "bracket is over, and the test behind p, is listed under each table. "
        "The per-seed values are in the last table of each section.",
        "",
    ]
    unfinished = unfinished_jobs(root)
    if unfinished:
        lines += [
            f"**Not read: {len(unfinished)} job folders have no metrics.json** (crashed, killed or still running; "
            f"see each `run.log`): {', '.join(f'`{name}`' for name in unfinished)}.",
            "",
        ]
    if summary["n_without_config"]:
        lines += [
            f"{summary['n_without_config']} jobs have no `.hydra/config.yaml`: they are grouped by their metrics' "
            f"{', '.join(METRICS_IDENTITY)} only.",
            "",
        ]
    sections = list(dict.fromkeys(row["cell"].section for row in rows))
    delta_rows: dict[str, dict[str, tuple[float, float, float]]] = {}
    flaw_rows: dict[str, dict[str, float]] = {}
    for section in sections:
        in_section = [row for row in rows if row["cell"].section == section]
        label = ", ".join(f"{k}={_show(v)}" for k, v in zip(section_keys, section, strict=True)) or "all jobs"
        lines += [f"## {label}", "", "### pass@1", ""]
        lines += _table(in_section, benchmarks, "pass", lambda e: fmt(e, signed=False), with_seeds=True)
        lines += ["", *_legend(benchmarks, in_section, "pass", "pass@1")]
        with_delta = [row for row in in_section if row["delta"]]
        if with_delta:
            lines += ["", "### Δ pass@1 vs Random (paired per problem and seed)", ""]
            lines += _table(with_delta, benchmarks, "delta", _delta_text)
            for row in with_delta:
                key = row["cell"].label if len(sections) == 1 else f"{row['cell'].label} ({label})"
                delta_rows[key] = {
                    b: (e.mean, e.low, e.high) if e.interval == "bootstrap" else (e.mean, math.nan, math.nan)
                    for b, e in row["delta"].items()
                }
            lines += ["", *_legend(benchmarks, with_delta, "delta", "Δ")]
            seeds_here = sorted({s for row in with_delta for s in row["seeds"]})
            seeds_text = ("seed " if len(seeds_here) == 1 else "seeds ") + ", ".join(map(str, seeds_here))
            lines += [
                "",
                f"### Δ per seed ({seeds_text}; wins: seeds with Δ > 0 / Δ < 0 / all; "
                "p over seeds: exact sign-flip test over the per-seed Δ, smallest possible 2/2^n)",
                "",
                *_table(with_delta, benchmarks, "delta", _per_seed_text),
            ]
        for name in versus:
            baseline = find_row(in_section, name)
            if baseline is None:
                lines += ["", f"No row `{name}` in this section to compare with (--versus {name})."]
                continue
            compared = versus_estimates(root, in_section, baseline, benchmarks)
            title = f"Δ pass@1 vs {baseline['cell'].label} (paired per problem and seed)"
            if not compared:
                lines += ["", f"### {title}", "", "No row has per-problem generations on a seed both rows have."]
                continue
            lines += [
                "",
                f"### {title}",
                "",
                f"Δ = pass@1(row) − pass@1({baseline['cell'].label}'s model of the same seed), each model from "
                "its own job, on the same problems.",
                "",
            ]
            lines += _table(compared, benchmarks, "versus", _delta_text)
            lines += ["", *_legend(benchmarks, compared, "versus", "Δ")]
            lines += ["", "Per seed:", "", *_table(compared, benchmarks, "versus", _per_seed_text)]
        for key, value in references:
            position = section_keys.index(key)
            if _show(section[position]) == value:
                continue
            other = reference_section(section, sections, position, value)
            if other is None:
                lines += ["", f"No section with {key}={value} and the other settings of this one (--across)."]
                continue
            compared = across_estimates(root, in_section, [r for r in rows if r["cell"].section == other], benchmarks)
            lines += [
                "",
                f"### Against {key}={value} (the same row there, paired per problem and seed)",
                "",
                f"Δ pass@1 = pass@1(row here) − pass@1(the same row with {key}={value}), each model from its own job, "
                f"on the same problems and seeds; ΔΔ = its Δ vs Random here − its Δ vs Random there.",
                "",
            ]
            if not compared:
                lines += ["No row has per-problem generations on a seed both sections have."]
                continue
            lines += _table(compared, benchmarks, "pass", _delta_text)
            lines += ["", *_legend(benchmarks, compared, "pass", "Δ pass@1")]
            with_delta = [row for row in compared if row["delta"]]
            if with_delta:
                lines += ["", "ΔΔ (Δ vs Random here − there):", ""]
                lines += _table(with_delta, benchmarks, "delta", _delta_text)
                lines += ["", *_legend(benchmarks, with_delta, "delta", "ΔΔ")]
            lines += ["", "Δ pass@1 per seed:", "", *_table(compared, benchmarks, "pass", _per_seed_text)]
        with_flaws = [row for row in in_section if any(k.startswith("flaw/") for k in row)]
        if with_flaws:
            lines += [
                "",
                "### Finding the flawed training examples (mean over seeds)",
                "",
                "Precision and recall of the removed set; AUROC of the removal ranking and its precision at the "
                "flawed count (the first |flawed| examples it ranks), in all and per flaw family against the clean "
                "examples: answer-visible flaws (the trace's final answer is wrong or missing: an answer check "
                "sees them) and answer-preserving ones (it does not).",
                "",
            ]
            shown = [m for m in FLAW_MEASURES if any(f"flaw/{m}" in row for row in with_flaws)]
            lines += [
                "| strategy | " + " | ".join(FLAW_MEASURES[m] for m in shown) + " |",
                "|---|" + "---|" * len(shown),
            ]
            for row in with_flaws:
                cells_text = [f"{row[f'flaw/{m}']:.3f}" if f"flaw/{m}" in row else "" for m in shown]
                lines.append(f"| {row['cell'].label} | " + " | ".join(cells_text) + " |")
                key = row["cell"].label if len(sections) == 1 else f"{row['cell'].label} ({label})"
                flaw_rows[key] = {m: row[f"flaw/{m}"] for m in ("precision", "recall", "auroc") if f"flaw/{m}" in row}
        lines.append("")
    times = stage_times(runs)
    if times:
        lines += ["## Compute per stage", ""]
        lines += [
            "Build time of every cached artifact these jobs used, each counted once (from the cache manifests).",
            "",
        ]
        lines += ["| stage | artifacts | total (s) | slowest (s) |", "|---|---|---|---|"]
        lines += [
            f"| {stage} | {n} | {total:.0f} | {worst:.0f} |" for stage, (n, total, worst) in sorted(times.items())
        ]
        lines.append("")
    if delta_rows:
        with_bars = any(not math.isnan(v[1]) for per in delta_rows.values() for v in per.values())
        title = "Δ pass@1 vs Random (mean over problems × seeds"
        title += "; bars: 95% paired bootstrap, see report.md)" if with_bars else "; no 95% interval, see report.md)"
        figures.delta_bars(root / "delta_vs_random.png", delta_rows, title)
        lines += ["![delta vs random](delta_vs_random.png)", ""]
    if flaw_rows:
        figures.flaw_detection_bars(root / "flaw_detection.png", flaw_rows)
        lines += ["![flaw detection](flaw_detection.png)", ""]
    lines += ["## Jobs", "", "| dir | row | seed |", "|---|---|---|"]
    for row in rows:
        cell = row["cell"]
        section = ", ".join(f"{k}={_show(v)}" for k, v in zip(section_keys, cell.section, strict=True))
        name = cell.label + (f"; {section}" if section else "")
        lines += [f"| {r['_dir']} | {name} | {r['seed']} |" for r in cell.runs]
    report = root / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ifexp-report", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a run or multirun directory")
    parser.add_argument(
        "--versus",
        action="append",
        default=[],
        metavar="STRATEGY",
        help="also compare every row with this strategy's row (or a row label), paired per problem and seed; "
        "repeatable or comma-separated, e.g. --versus answer_check,perplexity",
    )
    parser.add_argument(
        "--across",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="compare each row with the same row in the section where KEY=VALUE (the other sections' "
        "settings equal), paired per problem and seed, e.g. --across train.mixed_precision=no",
    )
    args = parser.parse_args(argv)
    versus = [name.strip() for names in args.versus for name in names.split(",") if name.strip()]
    if not args.dir.is_dir():
        print(f"ifexp-report: error: {args.dir}: not a directory", file=sys.stderr)
        sys.exit(2)
    try:
        print(write_report(args.dir, versus, args.across))
    except IfexpError as error:
        print(f"ifexp-report: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
