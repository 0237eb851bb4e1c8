"""A report's rows: each configuration's pass@1 and Δ vs Random per benchmark, and the comparisons
of a row with another row (--versus) and with the same row in another section (--across)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ifexp.outputs import benchmarks_of, delta_key, flaw_key, pass_key
from ifexp.report.jobs import Cell, Job, arm_rates, group_jobs, show
from ifexp.report.stats import Estimate, arm_estimate, over_replicates, paired_estimate, seed_estimate
from ifexp.schema import IfexpError
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


@dataclass
class Summary:
    """The report's rows, and what they are over."""

    benchmarks: list[str]
    section_keys: list[str]  # config values that differ between sections
    row_keys: list[str]  # a strategy's options that differ between rows of a section
    # "cell", "seeds", "pass" and "delta" ({benchmark: Estimate}), "flaw" ({measure: mean over seeds})
    rows: list[dict[str, Any]]
    n_without_config: int  # jobs without .hydra/config.yaml, grouped by their metrics only


def summarise(jobs: list[Job], root: Path) -> Summary:
    """Cells (rows) with per-benchmark pass@1 and Δ estimates, and the flaw-detection means."""
    benchmarks = sorted(set().union(*(benchmarks_of(job.metrics) for job in jobs)))
    section_keys, row_keys, cells, n_without = group_jobs(root, jobs)
    rows = []
    for cell in cells:
        seeds = [job.seed for job in cell.jobs]
        row: dict[str, Any] = {"cell": cell, "seeds": seeds, "pass": {}, "delta": {}, "flaw": {}}
        for bench in benchmarks:
            passes, delta = cell_estimates(root, cell, bench)
            if passes is not None:
                row["pass"][bench] = passes
            if delta is not None:
                row["delta"][bench] = delta
        for measure in FLAW_MEASURES:
            values = [job.metrics[flaw_key(measure)] for job in cell.jobs if flaw_key(measure) in job.metrics]
            values = [v for v in values if v == v]  # drop NaN
            if values:
                row["flaw"][measure] = float(np.mean(values))
        rows.append(row)
    return Summary(benchmarks, section_keys, row_keys, rows, n_without)


def cell_estimates(root: Path, cell: Cell, bench: str) -> tuple[Estimate | None, Estimate | None]:
    """(pass@1 of the strategy's model, Δ vs Random) on one benchmark, paired where generations allow."""
    arms = arm_rates(root, cell, bench)
    pairs = pair_arms(arms, arm_rates(root, cell, bench, "random"), f"{cell.label}: {bench}: strategy vs Random")
    if len(arms) == len(cell.jobs):
        passes = arm_estimate(arms)
    else:
        per_seed = recorded_per_seed(cell, pass_key(bench))
        passes = seed_estimate(per_seed, paired=False) if per_seed else None
    delta = None
    if cell.strategy != "random":
        if pairs and len(pairs) == len(cell.jobs):
            delta = paired_estimate(pairs)
        else:
            per_seed = recorded_per_seed(cell, delta_key(bench))
            delta = seed_estimate(per_seed, paired=True) if per_seed else None
    # the replicate is the unit of evidence (stats.over_replicates)
    replicate_of = replicates_of(cell)
    passes, delta = (over_replicates(e, replicate_of) if e is not None else None for e in (passes, delta))
    return passes, delta


def replicates_of(ours: Cell, theirs: Cell | None = None) -> dict[int, str]:
    """{seed: replicate} of a row's jobs; for a comparison of two rows, a seed whose two jobs were
    different draws (rows in sections that differ in the data seed) is the pair of their replicates,
    so each pair of draws stays one unit."""
    mine = {job.seed: job.replicate for job in ours.jobs}
    if theirs is None:
        return mine
    other = {job.seed: job.replicate for job in theirs.jobs}
    replicate_of = {}
    for seed in mine.keys() | other.keys():
        a, b = mine.get(seed), other.get(seed)
        replicate_of[seed] = b if a is None else a if b is None or a == b else f"{a} vs {b}"
    return replicate_of


def recorded_per_seed(cell: Cell, key: str) -> dict[int, float]:
    """{seed: the metrics.json value} of a row's jobs that recorded `key`: the fallback where a job
    kept no generations to pair per problem."""
    return {job.seed: job.metrics[key] for job in cell.jobs if key in job.metrics}


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
    ours: dict[int, dict[str, Fraction]],
    theirs: dict[int, dict[str, Fraction]],
    launched: set[int],
    what: str,
    replicate_of: dict[int, str],
) -> Estimate | None:
    """paired_estimate of ours − theirs on the seeds both have, over replicates where the seeds span
    several (stats.over_replicates); the launched seeds it leaves out are named."""
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
    return over_replicates(estimate, replicate_of)


def versus_estimates(root: Path, rows: list[dict], baseline: dict, benchmarks: list[str]) -> list[dict]:
    """Every other row's Δ pass@1 against the baseline row's model, paired per problem on the seeds
    both rows have (per-problem generations needed; rows without them are left out)."""
    theirs = {bench: arm_rates(root, baseline["cell"], bench) for bench in benchmarks}
    compared = []
    for row in rows:
        if row is baseline:
            continue
        launched = set(row["seeds"]) | set(baseline["seeds"])
        replicate_of = replicates_of(row["cell"], baseline["cell"])
        deltas = {}
        for bench in benchmarks:
            what = f"{row['cell'].label} vs {baseline['cell'].label}: {bench}"
            ours = arm_rates(root, row["cell"], bench)
            estimate = paired_on_common_seeds(ours, theirs[bench], launched, what, replicate_of)
            if estimate is not None:
                deltas[bench] = estimate
        if deltas:
            seeds = sorted({seed for estimate in deltas.values() for seed in estimate.per_seed})
            compared.append({"cell": row["cell"], "seeds": seeds, "versus": deltas})
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
        if show(other[position]) == value and all(
            a == b for i, (a, b) in enumerate(zip(other, section, strict=True)) if i != position
        ):
            return other
    return None


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
        replicate_of = replicates_of(row["cell"], reference["cell"])
        entry: dict[str, Any] = {"cell": row["cell"], "pass": {}, "delta": {}}
        for bench in benchmarks:
            what = f"{row['cell'].label}: {bench}: across sections"
            ours, theirs = arm_rates(root, row["cell"], bench), arm_rates(root, reference["cell"], bench)
            estimate = paired_on_common_seeds(ours, theirs, launched, what, replicate_of)
            if estimate is not None:
                entry["pass"][bench] = estimate
            if row["cell"].strategy != "random":
                # each job's pruned arm is read once, above; only the Random arms are read here
                our_deltas = delta_rates(ours, arm_rates(root, row["cell"], bench, "random"), what)
                their_deltas = delta_rates(theirs, arm_rates(root, reference["cell"], bench, "random"), what)
                estimate = paired_on_common_seeds(our_deltas, their_deltas, launched, what, replicate_of)
                if estimate is not None:
                    entry["delta"][bench] = estimate
        if entry["pass"]:
            entry["seeds"] = sorted({s for e in entry["pass"].values() for s in e.per_seed})
            compared.append(entry)
    return compared
