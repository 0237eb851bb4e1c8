"""`ifexp-report DIR`: summarise a run or multirun directory into report.md and figures.

Reads every `metrics.json` under DIR (one per job) and writes, beside them in DIR:
- report.md: pass@1 and Δ vs Random per (model, dataset, strategy, fraction, benchmark) as
  mean ± 95% bootstrap interval over seeds, a paired comparison with Random (exact sign-flip
  test over seeds), flaw detection per strategy, and wall time per stage;
- delta_vs_random.png (Δ bars per benchmark and strategy, with seed intervals) and
  flaw_detection.png (precision / recall / AUROC at removing flawed examples).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

GROUP_KEYS = ("model", "dataset", "estimator", "fraction")


def bootstrap_interval(values: list[float], n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean (a single value gives a zero-width interval)."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) < 2:
        return float(data.mean()), float(data.mean())
    resampled = np.random.default_rng(seed).choice(data, size=(n_resamples, len(data))).mean(axis=1)
    return float(np.percentile(resampled, 2.5)), float(np.percentile(resampled, 97.5))


def sign_flip_p_value(differences: list[float]) -> float:
    """Two-sided exact paired permutation test of mean(differences) = 0 (all 2^n sign flips).

    With 3 seeds the smallest possible p is 0.25: say so rather than overclaim.
    """
    data = np.asarray(differences, dtype=np.float64)
    if len(data) == 0 or not np.any(data):
        return 1.0
    if len(data) > 16:  # 2^16 flips is plenty; beyond, sample them
        signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(65536, len(data)))
    else:
        signs = np.array(list(itertools.product([-1.0, 1.0], repeat=len(data))))
    observed = abs(data.mean())
    return float(np.mean(np.abs((signs * data).mean(axis=1)) >= observed - 1e-12))


def load_runs(root: Path) -> list[dict[str, Any]]:
    runs = []
    for path in sorted(root.rglob("metrics.json")):
        if ".submitit" in path.parts:
            continue
        metrics = json.loads(path.read_text())
        if "strategy" in metrics:
            metrics["_dir"] = str(path.parent.relative_to(root)) or "."
            runs.append(metrics)
    return runs


def fmt(mean: float, low: float, high: float, digits: int = 3) -> str:
    if low == high:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (group, strategy, benchmark): pass@1 and Δ vs Random over seeds."""
    benchmarks = sorted({k.split("/", 1)[1] for r in runs for k in r if k.startswith("pass@1/")})
    table: dict[tuple, dict[str, Any]] = {}
    by_cell: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        by_cell[tuple(run.get(k) for k in GROUP_KEYS) + (run["strategy"],)].append(run)
    for cell, cell_runs in sorted(by_cell.items(), key=lambda item: tuple(str(x) for x in item[0])):
        row: dict[str, Any] = {"seeds": sorted(r["seed"] for r in cell_runs), "n": len(cell_runs)}
        for bench in benchmarks:
            passes = [r[f"pass@1/{bench}"] for r in cell_runs if f"pass@1/{bench}" in r]
            if passes:
                row[f"pass@1/{bench}"] = (float(np.mean(passes)), *bootstrap_interval(passes))
            deltas = [r[f"delta_vs_random/{bench}"] for r in cell_runs if f"delta_vs_random/{bench}" in r]
            if deltas and cell[-1] != "random":
                row[f"delta/{bench}"] = (float(np.mean(deltas)), *bootstrap_interval(deltas))
                row[f"p/{bench}"] = sign_flip_p_value(deltas)
                row[f"wins/{bench}"] = f"{sum(d > 0 for d in deltas)}/{sum(d < 0 for d in deltas)}/{len(deltas)}"
        for measure in ("precision", "recall", "auroc"):
            values = [r[f"flaw/{measure}"] for r in cell_runs if f"flaw/{measure}" in r]
            values = [v for v in values if v == v]  # drop NaN
            if values:
                row[f"flaw/{measure}"] = float(np.mean(values))
        table[cell] = row
    return {"benchmarks": benchmarks, "cells": table}


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


def write_report(root: Path) -> Path:
    from ifexp import figures

    runs = load_runs(root)
    if not runs:
        raise SystemExit(f"ifexp-report: error: no job metrics.json (with a strategy) under {root}")
    summary = summarise(runs)
    benchmarks = summary["benchmarks"]
    lines = [
        f"# ifexp report: {root.name}",
        "",
        f"{len(runs)} jobs read from `{root}`. Values are means over seeds with a 95% bootstrap interval "
        "in brackets; Δ is pass@1(strategy) − pass@1(Random) at the same model, dataset, fraction and seed; "
        "p is the exact two-sided sign-flip test over seeds (with n seeds the smallest possible p is 2/2^n); "
        "wins counts seeds with Δ > 0 / Δ < 0 / all.",
        "",
    ]
    groups = sorted({cell[:-1] for cell in summary["cells"]}, key=lambda g: tuple(str(x) for x in g))
    delta_rows: dict[str, dict[str, tuple[float, float, float]]] = {}
    flaw_rows: dict[str, dict[str, float]] = {}
    for group in groups:
        label = ", ".join(f"{k}={v}" for k, v in zip(GROUP_KEYS, group, strict=True))
        lines += [f"## {label}", "", "### pass@1", ""]
        cells = {cell[-1]: row for cell, row in summary["cells"].items() if cell[:-1] == group}
        lines.append("| strategy | seeds | " + " | ".join(benchmarks) + " |")
        lines.append("|---|---|" + "---|" * len(benchmarks))
        for strategy, row in cells.items():
            values = [fmt(*row[f"pass@1/{b}"]) if f"pass@1/{b}" in row else "" for b in benchmarks]
            lines.append(f"| {strategy} | {len(row['seeds'])} | " + " | ".join(values) + " |")
        with_delta = {s: r for s, r in cells.items() if any(k.startswith("delta/") for k in r)}
        if with_delta:
            lines += ["", "### Δ pass@1 vs Random (p, wins)", ""]
            lines.append("| strategy | " + " | ".join(benchmarks) + " |")
            lines.append("|---|" + "---|" * len(benchmarks))
            for strategy, row in with_delta.items():
                values = [
                    f"{fmt(*row[f'delta/{b}'])} (p={row[f'p/{b}']:.2f}, {row[f'wins/{b}']})"
                    if f"delta/{b}" in row
                    else ""
                    for b in benchmarks
                ]
                lines.append(f"| {strategy} | " + " | ".join(values) + " |")
                key = strategy if len(groups) == 1 else f"{strategy} ({label})"
                delta_rows[key] = {b: row[f"delta/{b}"] for b in benchmarks if f"delta/{b}" in row}
        with_flaws = {s: r for s, r in cells.items() if any(k.startswith("flaw/") for k in r)}
        if with_flaws:
            lines += ["", "### Finding the flawed training examples (removed set; AUROC of the removal ranking)", ""]
            lines += ["| strategy | precision | recall | AUROC |", "|---|---|---|---|"]
            for strategy, row in with_flaws.items():
                cells_text = [
                    f"{row[f'flaw/{m}']:.3f}" if f"flaw/{m}" in row else "" for m in ("precision", "recall", "auroc")
                ]
                lines.append(f"| {strategy} | " + " | ".join(cells_text) + " |")
                key = strategy if len(groups) == 1 else f"{strategy} ({label})"
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
        figures.delta_bars(
            root / "delta_vs_random.png", delta_rows, "Δ pass@1 vs Random (mean, 95% bootstrap over seeds)"
        )
        lines += ["![delta vs random](delta_vs_random.png)", ""]
    if flaw_rows:
        figures.flaw_detection_bars(root / "flaw_detection.png", flaw_rows)
        lines += ["![flaw detection](flaw_detection.png)", ""]
    lines += ["## Jobs", "", "| dir | strategy | fraction | seed |", "|---|---|---|---|"]
    lines += [f"| {r['_dir']} | {r['strategy']} | {r['fraction']} | {r['seed']} |" for r in runs]
    report = root / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ifexp-report", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a run or multirun directory")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        print(f"ifexp-report: error: {args.dir}: not a directory", file=sys.stderr)
        sys.exit(2)
    print(write_report(args.dir))


if __name__ == "__main__":
    main()
