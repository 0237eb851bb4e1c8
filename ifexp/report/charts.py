"""The report's figures: what each one draws from the rows (and the jobs' removal_scores.csv), and
the caption report.md puts under it, which says what its whiskers, bands and curves are over
(ifexp.figures draws them).

- delta_vs_random.png: Δ pass@1 vs Random per row and benchmark, whiskers = each row's interval;
- pass_vs_fraction.png (a report over several pruning fractions): pass@1 of each strategy against
  the fraction, Random of the same size as the reference;
- flaw_roc.png (jobs that kept their ranking, on data with flaw labels): each strategy's removal
  ranking as an ROC curve against the labels; jobs from before removal_scores.csv get the older
  flaw_detection.png (precision / recall / AUROC bars) instead.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ifexp.outputs import read_removal_scores
from ifexp.report.jobs import arm_rates, show
from ifexp.report.rows import Summary
from ifexp.report.stats import Estimate, arm_estimate
from ifexp.selection.flaws import auroc

FRACTION_KEY = "pruning.fraction"
ROC_GRID = np.linspace(0.0, 1.0, 201)


@dataclass
class Figure:
    """A figure the report drew: its file (beside report.md), its alt text and caption lines."""

    file: str
    title: str
    caption: list[str]


def settings(summary: Summary, section: tuple, leave_out: tuple[str, ...] = ()) -> str:
    """A section's settings as `key=value, ...`, but the keys left out."""
    pairs = zip(summary.section_keys, section, strict=True)
    return ", ".join(f"{k}={show(v)}" for k, v in pairs if k not in leave_out)


def row_name(summary: Summary, row: dict[str, Any], leave_out: tuple[str, ...] = ()) -> str:
    """A row's label, with its section's settings where there are several sections."""
    text = settings(summary, row["cell"].section, leave_out)
    return row["cell"].label + (f" · {text}" if text else "")


def interval(estimate: Estimate) -> tuple[float, float, float]:
    """(mean, low, high) of an estimate; low and high NaN where it has no interval."""
    if estimate.has_bounds:
        return estimate.mean, estimate.low, estimate.high
    return estimate.mean, math.nan, math.nan


def interval_caption(entries: list[tuple[str, str, Estimate]], what: str) -> list[str]:
    """One line per benchmark and kind of interval: what `what` (whiskers, band) are over there, and
    which rows' they are. entries: (row name, benchmark, its estimate)."""
    by_bench: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name, bench, estimate in entries:
        drawn = estimate.has_bounds
        text = f"{what}: {estimate.basis}" if drawn else f"{what}: none ({estimate.basis})"
        if name not in by_bench[bench][text]:
            by_bench[bench][text].append(name)
    lines = []
    for bench, texts in sorted(by_bench.items()):
        for text, names in texts.items():
            who = "" if len(texts) == 1 else f" ({', '.join(names)})"
            lines.append(f"- {bench}{who}: {text}.")
    return lines


def report_figures(root: Path, summary: Summary) -> list[Figure]:
    """Draws every figure the rows allow, beside report.md; returns them in the report's order."""
    drawn = [delta_figure(root, summary), fraction_figure(root, summary), roc_figure(root, summary)]
    if drawn[2] is None:
        drawn.append(flaw_bars_figure(root, summary))
    return [figure for figure in drawn if figure is not None]


def delta_figure(root: Path, summary: Summary) -> Figure | None:
    from ifexp import figures

    rows = [row for row in summary.rows if row["delta"]]
    if not rows:
        return None
    # a strategy's rows together (its settings in the report's order), in the order strategies first appear
    strategy_order = list(dict.fromkeys(row["cell"].strategy for row in rows))
    rows.sort(key=lambda row: strategy_order.index(row["cell"].strategy))
    deltas = {row_name(summary, row): {b: interval(e) for b, e in row["delta"].items()} for row in rows}
    strategies = {row_name(summary, row): row["cell"].strategy for row in rows}
    figures.delta_bars(root / "delta_vs_random.png", deltas, strategies)
    entries = [(row_name(summary, row), b, e) for row in rows for b, e in row["delta"].items()]
    return Figure(
        "delta_vs_random.png",
        "Δ pass@1 vs Random",
        [
            "Δ pass@1 vs Random of each row (bar: the mean over problems × seeds of the paired per-problem "
            "difference with Random's model of the same size and seed, as in the Δ tables), per benchmark.",
            *interval_caption(entries, "whiskers"),
        ],
    )


def fraction_figure(root: Path, summary: Summary) -> Figure | None:
    """pass@1 against the pruning fraction, where the report holds several fractions."""
    from ifexp import figures

    if FRACTION_KEY not in summary.section_keys:
        return None
    at = summary.section_keys.index(FRACTION_KEY)
    panels: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    reference: dict[str, dict[float, tuple]] = defaultdict(dict)
    strategies, entries = {}, []
    for row in summary.rows:
        fraction = row["cell"].section[at]
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            continue  # a job whose config does not say (<absent>)
        other = settings(summary, row["cell"].section, (FRACTION_KEY,))
        for bench, estimate in row["pass"].items():
            panel = bench + (f" · {other}" if other else "")
            if row["cell"].strategy == "random":
                reference[panel][fraction] = (fraction, *interval(estimate))
                entries.append(("random", bench, estimate))
                continue
            panels[panel][row["cell"].label].append((fraction, *interval(estimate)))
            strategies[row["cell"].label] = row["cell"].strategy
            entries.append((row["cell"].label, bench, estimate))
            if fraction not in reference[panel]:  # without a Random row: Random's arm of this job
                random_arm = arm_rates(root, row["cell"], bench, "random")
                if random_arm:
                    reference[panel][fraction] = (fraction, *interval(arm_estimate(random_arm)))
    if not panels:
        return None
    figures.pass_vs_fraction(
        root / "pass_vs_fraction.png",
        {panel: dict(lines) for panel, lines in panels.items()},
        {panel: list(points.values()) for panel, points in reference.items()},
        strategies,
    )
    return Figure(
        "pass_vs_fraction.png",
        "pass@1 against the pruning fraction",
        [
            "pass@1 of each strategy's pruned model (point: the mean over problems × seeds) against the share of "
            "the training set removed, per benchmark; Random pruning of the same size, dashed black (its own jobs, "
            "or Random's model trained in each strategy job), with its interval as a band.",
            *interval_caption(entries, "whiskers and band"),
        ],
    )


def roc_points(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) as the ranking (highest score first) is cut after
    each group of tied scores; a tie group is a straight segment."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positive[order]
    cuts = np.r_[np.flatnonzero(np.diff(ranked) != 0), len(ranked) - 1]
    tpr = np.r_[0.0, np.cumsum(hits)[cuts] / hits.sum()]
    fpr = np.r_[0.0, np.cumsum(~hits)[cuts] / (~hits).sum()]
    return fpr, tpr


def roc_on_grid(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """The ROC curve's true-positive rate at each false-positive rate of ROC_GRID: on the segment
    that leaves the last point at or below that rate (the top of a vertical step)."""
    fpr, tpr = roc_points(scores, positive)
    last = np.searchsorted(fpr, ROC_GRID, side="right") - 1
    after = np.minimum(last + 1, len(fpr) - 1)
    run = fpr[after] - fpr[last]
    share = np.divide(ROC_GRID - fpr[last], run, out=np.zeros_like(ROC_GRID), where=run > 0)
    return tpr[last] + share * (tpr[after] - tpr[last])


def roc_figure(root: Path, summary: Summary) -> Figure | None:
    """ROC curves of the rows' removal rankings against the flaw labels, the fractions pooled."""
    from ifexp import figures

    per_curve: dict[str, list[tuple[np.ndarray, float]]] = defaultdict(list)
    strategies = {}
    for row in summary.rows:
        name = row_name(summary, row, (FRACTION_KEY,))
        for job in row["cell"].jobs:
            ranking = read_removal_scores(root / job.dir)
            if ranking is None or ranking["flaw"] is None:
                continue
            scores = np.asarray(ranking["removal_score"], dtype=float)
            positive = np.asarray([bool(f) for f in ranking["flaw"]])
            if positive.all() or not positive.any():
                continue
            per_curve[name].append((roc_on_grid(scores, positive), auroc(scores, positive)))
            strategies[name] = row["cell"].strategy
    if not per_curve:
        return None
    curves = {}
    for name, runs in per_curve.items():
        tprs = np.vstack([tpr for tpr, _ in runs])
        curves[name] = (
            ROC_GRID,
            tprs.mean(axis=0),
            tprs.min(axis=0),
            tprs.max(axis=0),
            float(np.mean([a for _, a in runs])),
        )
    figures.roc_curves(root / "flaw_roc.png", curves, strategies)
    counts = ", ".join(f"{name} {len(runs)}" for name, runs in per_curve.items())
    return Figure(
        "flaw_roc.png",
        "Finding the flawed examples: ROC curves",
        [
            "Each strategy's removal ranking (each job's `removal_scores.csv`: the order it removes training "
            "examples in) against the flaw labels: the share of flawed examples removed against the share of clean "
            "ones removed, as more of D is removed in that order; the dotted diagonal is a ranking at chance.",
            "- Curve: the mean true-positive rate over the row's jobs at each false-positive rate (jobs of every "
            "pruning fraction pooled: the built-in strategies rank alike at every fraction); band: min–max over "
            f"those jobs (seeds, fractions); AUROC: the mean over them. Jobs per curve: {counts}.",
        ],
    )


def flaw_bars_figure(root: Path, summary: Summary) -> Figure | None:
    """Precision, recall and AUROC bars, for flaw-labelled jobs without removal_scores.csv."""
    from ifexp import figures

    bars = {
        row_name(summary, row): {m: row["flaw"][m] for m in ("precision", "recall", "auroc") if m in row["flaw"]}
        for row in summary.rows
        if row["flaw"]
    }
    if not bars:
        return None
    figures.flaw_detection_bars(root / "flaw_detection.png", bars)
    return Figure(
        "flaw_detection.png",
        "Finding the flawed examples",
        [
            "Precision and recall of each row's removed set at finding the flawed training examples, and the "
            "AUROC of its ranking: means over the row's seeds, no interval (these jobs kept no removal_scores.csv "
            "to draw ROC curves from)."
        ],
    )
