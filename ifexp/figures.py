"""The figures ifexp draws (as in the paper), as PNG files. Matplotlib without a display."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


def delta_bars(path: Path, deltas: dict[str, dict[str, tuple[float, float, float]]], title: str = "") -> Path:
    """Grouped bars: for each benchmark, Δpass@1 vs Random per strategy, with (low, high) intervals.

    deltas: {strategy: {benchmark: (mean, low, high)}}.
    """
    strategies = list(deltas)
    benchmarks = sorted({b for per in deltas.values() for b in per})
    width = 0.8 / max(1, len(strategies))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(benchmarks) + 2), 4))
    for i, strategy in enumerate(strategies):
        x = np.arange(len(benchmarks)) + i * width
        mean = np.array([deltas[strategy].get(b, (np.nan,) * 3)[0] for b in benchmarks])
        low = np.array([deltas[strategy].get(b, (np.nan,) * 3)[1] for b in benchmarks])
        high = np.array([deltas[strategy].get(b, (np.nan,) * 3)[2] for b in benchmarks])
        ax.bar(x, mean, width, label=strategy, yerr=np.vstack([mean - low, high - mean]), capsize=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(benchmarks)) + width * (len(strategies) - 1) / 2)
    ax.set_xticklabels(benchmarks)
    ax.set_ylabel("Δ pass@1 vs Random")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def flaw_detection_bars(path: Path, rows: dict[str, dict[str, float]]) -> Path:
    """Precision and recall at removing flawed examples (and AUROC where known), per strategy."""
    strategies = list(rows)
    measures = [m for m in ("precision", "recall", "auroc") if any(m in r for r in rows.values())]
    width = 0.8 / max(1, len(measures))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(strategies) + 2), 4))
    for i, measure in enumerate(measures):
        values = [rows[s].get(measure, np.nan) for s in strategies]
        ax.bar(np.arange(len(strategies)) + i * width, values, width, label=measure)
    ax.set_xticks(np.arange(len(strategies)) + width * (len(measures) - 1) / 2)
    ax.set_xticklabels(strategies, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_ylabel("finding the flawed examples")
    ax.legend(fontsize=8)
    return _save(fig, path)
