"""The statistics behind the report: paired estimates over problems × seeds, their intervals and tests.

The unit of evidence is a replicate (DESIGN.md "Evidence standards"): a fresh draw of the data, of
theta* and of its sampled answers. Where a row's jobs span several replicates, its interval is a
95% t-interval over the per-replicate means (`over_replicates`), and the bootstrap below stays
beside it, labelled conditional on these selections. Where all its jobs share one replicate (seeds
under one theta*: they vary Random's draw, tie-breaks and the pruned fine-tuning, not the
selection's inputs), every interval is conditional on that one draw, and says so.

What the bootstrap interval is over (`paired_estimate`):
- Unit of comparison: a (problem, seed) pair; d = mean(correct of the strategy's model) −
  mean(correct of Random's model of the same size and seed) over that problem's samples. Both
  models are trained and evaluated on the same problems in the same job.
- Interval: percentile bootstrap (10,000 resamples) of the mean of d, clustered by problem: a
  problem is the same problem in every seed, so problems are resampled with all their seeds.
  Seeds are resampled too (independently: a two-way bootstrap) only where a row
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

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

MIN_PROBLEMS_FOR_INTERVAL = 20  # fewer problems: no bootstrap interval, the per-seed range instead
MIN_SEEDS_RESAMPLED = 5  # fewer seeds: held fixed in the bootstrap (the interval says so)
N_RESAMPLES = 10_000
EXACT_DP_LIMIT = 50_000_000  # largest (values x integer range) for the exact sign-flip distribution


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
    interval: str = "none"  # "t" (over replicates) | "bootstrap" | "range" | "none"
    basis: str = ""  # what the brackets are over, in words
    p: float | None = None
    p_basis: str = ""
    n_nonzero: int | None = None  # problems whose Δ (averaged over seeds) is not 0: what p is decided by
    p_seeds: float | None = None
    n_problems: int = 0
    # seed -> replicate (outputs.replicate_id); the per-replicate means where there are several
    replicate_of: dict[int, str] | None = None
    per_replicate: dict[str, float] | None = None

    @property
    def has_bounds(self) -> bool:
        """low and high are set: a 95% interval (over replicates, or the bootstrap) or the per-seed range."""
        return self.interval in ("t", "bootstrap", "range")


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
        # one training run per model: a new training seed moves pass@1 by as much as many effects
        # here, and resampling problems cannot see that
        "problems resampled; one seed: conditional on that training run of each model"
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
    # Problems are the only random unit here: where training runs differ a lot (a run learns a
    # procedure or not), p can be small while the two-way interval, which resamples runs, holds 0.
    if len(seeds) > 1:
        p_basis += (
            f"; conditional on these {len(seeds)} training runs (whether these models differ, not whether "
            "new training seeds would: for that, the interval and the p over seeds)"
        )
    else:
        p_basis += (
            "; conditional on this one training run of each model (whether these two models differ, "
            "not whether a new training seed would)"
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


def t_interval(values: list[float]) -> tuple[float, float] | None:
    """95% Student-t interval of the mean of independent values (at least 2); None where they are all
    equal: a zero-width interval would read as certainty where it only means no spread was seen."""
    from scipy.stats import t

    data = np.asarray(values, dtype=np.float64)
    if np.ptp(data) == 0:
        return None
    half = float(t.ppf(0.975, len(data) - 1) * data.std(ddof=1) / math.sqrt(len(data)))
    return float(data.mean()) - half, float(data.mean()) + half


def one_draw(n_seeds: int) -> str:
    """The label of an estimate from one replicate: conditional on its one draw of the data and theta*."""
    shared = f" (its {n_seeds} seeds share the selection's inputs)" if n_seeds > 1 else ""
    return f"one draw of the data and theta*{shared}: conditional on that one selection, not evidence across replicates"


def over_replicates(estimate: Estimate, replicate_of: dict[int, str]) -> Estimate:
    """The estimate with its replicates as the unit: with 2 or more, the mean and 95% t-interval of
    the per-replicate means (each the mean over its seeds), the earlier interval kept in the basis
    as conditional on these selections and the test over problems as descriptive; with one (one
    seed or several), the same estimate labelled conditional on that one draw."""
    replicates = {seed: replicate_of.get(seed, "") for seed in estimate.per_seed}
    names = list(dict.fromkeys(replicates.values()))
    estimate.replicate_of = replicates
    if len(names) < 2:
        estimate.basis += f"; {one_draw(len(estimate.per_seed))}"
        return estimate
    per_replicate = {
        name: float(np.mean([v for seed, v in estimate.per_seed.items() if replicates[seed] == name])) for name in names
    }
    conditional = estimate.basis
    if estimate.interval in ("bootstrap", "range"):
        conditional = f"{conditional}, [{estimate.low:+.3f}, {estimate.high:+.3f}]"
    estimate.per_replicate = per_replicate
    estimate.mean = float(np.mean(list(per_replicate.values())))
    bounds = t_interval(list(per_replicate.values()))
    over = (
        f"{len(names)} replicates (each a fresh draw of the data, of theta* and of its answers; the mean of "
        "each replicate's seeds)"
    )
    if bounds is None:
        estimate.low = estimate.high = None
        estimate.interval = "none"
        estimate.basis = f"no interval: the values of the {over} are all equal, and a t-interval needs their spread"
    else:
        (estimate.low, estimate.high), estimate.interval = bounds, "t"
        estimate.basis = f"95% t-interval over {over}"
    estimate.basis += f"; secondary, conditional on these selections: {conditional}"
    if estimate.p is not None:
        estimate.p_basis = f"descriptive, the training runs held fixed: {estimate.p_basis}"
    if estimate.p_seeds is not None:
        estimate.p_seeds = sign_flip_p_value(list(per_replicate.values()))
    return estimate
