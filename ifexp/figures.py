"""The figures ifexp draws (as in the paper), as PNG files. Matplotlib without a display."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    """Saved with a tight bounding box: titles, labels and a legend outside the axes are never cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _color(name: str, names: list[str]):
    """One colour per strategy, the same in every figure of a report (names: all strategies, in order)."""
    return plt.get_cmap("tab10")(names.index(name) % 10) if name in names else "tab:gray"


def score_figures(folder: Path, scores: dict[str, np.ndarray], kept: np.ndarray, flaw: list[str]) -> list[Path]:
    """s_C vs s_I scatter with pruned points marked; histograms of s_C, s_I and r."""
    paths = []
    s_correct, s_incorrect = scores["s_correct"], scores["s_incorrect"]
    flawed = np.asarray([bool(f) for f in flaw]) if flaw else np.zeros(len(kept), dtype=bool)
    if np.isfinite(s_correct).any() and np.isfinite(s_incorrect).any():
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        for mask, style in (
            (kept & ~flawed, {"c": "tab:blue", "marker": "o", "label": "kept"}),
            (kept & flawed, {"c": "tab:blue", "marker": "x", "label": "kept (flawed)"}),
            (~kept & ~flawed, {"c": "tab:red", "marker": "o", "label": "pruned"}),
            (~kept & flawed, {"c": "tab:red", "marker": "x", "label": "pruned (flawed)"}),
        ):
            if mask.any():
                ax.scatter(s_correct[mask], s_incorrect[mask], s=14, alpha=0.7, **style)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("s_C (benefit: influence on correct generations)")
        ax.set_ylabel("s_I (harm: influence on incorrect generations)")
        ax.legend(fontsize=8)
        paths.append(_save(fig, folder / "scores_scatter.png"))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, (name, values) in zip(
        axes, (("s_C", s_correct), ("s_I", s_incorrect), ("r = r_C - r_I", scores["rank_score"])), strict=True
    ):
        finite = values[np.isfinite(values)]
        if len(finite):
            ax.hist(finite, bins=30, color="tab:gray")
        ax.set_title(name)
    paths.append(_save(fig, folder / "score_histograms.png"))
    return paths


Interval = tuple[float, float, float]  # (mean, low, high); low/high NaN where there is no interval


def delta_bars(
    path: Path,
    deltas: dict[str, dict[str, Interval]],
    strategies: dict[str, str] | None = None,
    title: str = "Δ pass@1 vs Random",
) -> Path:
    """Δpass@1 vs Random, one panel per benchmark, one horizontal bar per row (a strategy, with its
    settings), whiskers where the row has an interval. deltas: {row label: {benchmark: Interval}};
    strategies: {row label: its strategy} (the bar's colour)."""
    labels = list(deltas)
    strategies = strategies or {label: label for label in labels}
    names = list(dict.fromkeys(strategies.values()))
    benchmarks = sorted({b for per in deltas.values() for b in per})
    label_width = 0.075 * max(len(label) for label in labels)  # inches for the row labels at the left
    fig, axes = plt.subplots(
        1,
        len(benchmarks),
        figsize=(3.6 * len(benchmarks) + label_width, 0.42 * len(labels) + 1.5),
        sharex=True,  # one scale: bars of two benchmarks compare at a glance
        sharey=True,
        squeeze=False,
    )
    y = np.arange(len(labels))
    for ax, bench in zip(axes[0], benchmarks, strict=True):
        values = np.array([deltas[label].get(bench, (np.nan,) * 3) for label in labels], dtype=float)
        mean, low, high = values.T
        ax.barh(y, np.nan_to_num(mean), height=0.6, color=[_color(strategies[lb], names) for lb in labels])
        ax.plot(mean, y, "o", ms=3, color="black")  # the mean, visible where the bar has no length
        whiskers = np.isfinite(low) & np.isfinite(high)
        if whiskers.any():
            ax.errorbar(
                mean[whiskers],
                y[whiskers],
                xerr=np.vstack([mean[whiskers] - low[whiskers], high[whiskers] - mean[whiskers]]),
                fmt="none",
                ecolor="black",
                elinewidth=1,
                capsize=3,
            )
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(bench, fontsize=10)
        ax.set_xlabel("Δ pass@1 vs Random")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, labels)
    axes[0][0].invert_yaxis()  # the first row at the top
    fig.suptitle(title)
    return _save(fig, path)


def pass_vs_fraction(
    path: Path,
    panels: dict[str, dict[str, list[tuple[float, float, float, float]]]],
    reference: dict[str, list[tuple[float, float, float, float]]],
    strategies: dict[str, str],
) -> Path:
    """pass@1 against the pruning fraction, one panel per benchmark (or benchmark and setting), one
    line per strategy with whiskers, Random of the same fraction dashed with its band.

    panels: {panel title: {line label: [(fraction, mean, low, high), ...]}}; reference: {panel
    title: Random's points}; strategies: {line label: its strategy} (the colour)."""
    names = list(dict.fromkeys(strategies.values()))
    titles = list(panels)
    fig, axes = plt.subplots(1, len(titles), figsize=(4.2 * len(titles), 3.8), sharey=True, squeeze=False)
    for ax, title in zip(axes[0], titles, strict=True):
        random = sorted(reference.get(title, []))
        if random:
            x, mean, low, high = (np.array(v, dtype=float) for v in zip(*random, strict=True))
            ax.plot(x, mean, "--", color="black", marker="s", ms=4, label="random (reference)")
            if np.isfinite(low).all() and np.isfinite(high).all():
                ax.fill_between(x, low, high, color="black", alpha=0.12, lw=0)
        lines = list(panels[title].items())
        fractions = sorted({p[0] for _, points in lines for p in points})
        step = min(np.diff(fractions)) if len(fractions) > 1 else 0.1
        for i, (label, points) in enumerate(lines):
            x, mean, low, high = (np.array(v, dtype=float) for v in zip(*sorted(points), strict=True))
            x = x + (i - (len(lines) - 1) / 2) * 0.04 * step  # side by side, so equal points stay visible
            color = _color(strategies[label], names)
            ax.plot(x, mean, marker="o", ms=4, color=color, label=label)
            whiskers = np.isfinite(low) & np.isfinite(high)
            if whiskers.any():
                error = np.vstack([mean[whiskers] - low[whiskers], high[whiskers] - mean[whiskers]])
                ax.errorbar(x[whiskers], mean[whiskers], yerr=error, fmt="none", ecolor=color, capsize=3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("pruning fraction (share of D removed)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("pass@1")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.92), fontsize=8, frameon=False)
    fig.suptitle("pass@1 against the pruning fraction")
    return _save(fig, path)


def roc_curves(
    path: Path,
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]],
    strategies: dict[str, str],
) -> Path:
    """Flaw detection: each strategy's removal ranking as an ROC curve against the flaw labels.

    curves: {label: (false-positive rates, mean true-positive rate, low, high, mean AUROC)}; the band
    (low-high) is drawn where it is not the curve itself."""
    names = list(dict.fromkeys(strategies.values()))
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    ax.plot([0, 1], [0, 1], ":", color="gray", lw=1, label="chance")
    for label, (fpr, tpr, low, high, area) in curves.items():
        color = _color(strategies[label], names)
        ax.plot(fpr, tpr, color=color, lw=1.6, label=f"{label} (AUROC {area:.3f})")
        if not np.allclose(low, high):
            ax.fill_between(fpr, low, high, color=color, alpha=0.15, lw=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("share of clean examples removed (FPR)")
    ax.set_ylabel("share of flawed examples removed (TPR)")
    ax.set_title("Flaw detection: ROC of each removal ranking", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.14), ncol=2, fontsize=8, frameon=False)
    return _save(fig, path)


def flaw_detection_bars(path: Path, rows: dict[str, dict[str, float]]) -> Path:
    """Precision and recall at removing flawed examples (and AUROC where known), per strategy: for
    jobs that kept no removal_scores.csv to draw ROC curves from."""
    strategies = list(rows)
    measures = [m for m in ("precision", "recall", "auroc") if any(m in r for r in rows.values())]
    width = 0.8 / max(1, len(measures))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(strategies) + 2), 4))
    for i, measure in enumerate(measures):
        values = [rows[s].get(measure, np.nan) for s in strategies]
        ax.bar(np.arange(len(strategies)) + i * width, values, width, label=measure)
    ax.set_xticks(np.arange(len(strategies)) + width * (len(measures) - 1) / 2)
    ax.set_xticklabels(strategies, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("finding the flawed examples")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return _save(fig, path)
