"""The report's W&B run: one per `ifexp-report DIR`, beside the sweep's job runs.

Its job_type is `report`, its group the jobs' (their `logger.group`, else the sweep folder's name,
as the entry point groups a multirun's jobs), so that in W&B it sits with the jobs it summarises
(each job's job_type is its strategy). It holds the Δ vs Random table (one row per report row and
benchmark: pass@1, Δ, its interval and what the interval is over, p), the same Δ means in its
summary, and the report's figures. Like the jobs' runs it is offline by default: files under
DIR/wandb/offline-run-*/ (the table in files/media/table/), uploaded with `wandb sync`.

Which mode (`--wandb`): `auto` (default) follows the jobs: a W&B run in the jobs' mode, project and
entity where any job logged to W&B (logger.name=wandb), none where none did; `offline`, `online`
or `none` choose.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ifexp.job_identity import read_config
from ifexp.outputs import DELTA_VS_RANDOM
from ifexp.report.jobs import Job
from ifexp.report.rows import Summary
from ifexp.schema import LoggerConfig

MODES = ("auto", "offline", "online", "none")
TABLE = "delta_vs_random"
COLUMNS = [
    "row",
    "strategy",
    "settings",
    "benchmark",
    "seeds",
    "pass@1",
    "delta_vs_random",
    "low",
    "high",
    "interval",
    "interval_over",
    "p",
]


def logger_config(root: Path, jobs: list[Job], mode: str) -> LoggerConfig | None:
    """The report run's W&B settings, or None for no run (see the module's docstring)."""
    if mode not in MODES:
        raise ValueError(f"--wandb {mode}: expected one of {', '.join(MODES)}")
    loggers = [(read_config(root / job.dir) or {}).get("logger") or {} for job in jobs]
    logged = [logger for logger in loggers if logger.get("name") == "wandb"]
    if mode == "none" or (mode == "auto" and not logged):
        return None
    first = logged[0] if logged else {}
    return LoggerConfig(
        name="wandb",
        mode=first.get("mode", "offline") if mode == "auto" else mode,
        project=first.get("project") or "ifexp",
        entity=first.get("entity"),
        group=first.get("group"),
    )


def _number(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def table_rows(summary: Summary) -> list[list[Any]]:
    """One row per report row with a Δ and benchmark: COLUMNS."""
    from ifexp.report.charts import settings

    rows = []
    for row in summary.rows:
        cell = row["cell"]
        for bench, delta in sorted(row["delta"].items()):
            passes = row["pass"].get(bench)
            drawn = delta.has_bounds
            rows.append(
                [
                    cell.label,
                    cell.strategy,
                    settings(summary, cell.section),
                    bench,
                    len(row["seeds"]),
                    _number(passes.mean) if passes else None,
                    _number(delta.mean),
                    _number(delta.low) if drawn else None,
                    _number(delta.high) if drawn else None,
                    delta.interval,
                    delta.basis,
                    _number(delta.p),
                ]
            )
    return rows


def log_report(root: Path, summary: Summary, figures: dict[str, Path], cfg: LoggerConfig) -> Path | None:
    """Writes the report's W&B run; returns its folder (offline: DIR/wandb/offline-run-*)."""
    from ifexp.tracking import Tracker

    rows = table_rows(summary)
    config = {"report_dir": str(root), "n_rows": len(summary.rows), "benchmarks": summary.benchmarks}
    tracker = Tracker(cfg, root, config, f"report-{root.resolve().name}", root.resolve().name, job_type="report")
    try:
        folder = tracker.folder
        means = {}
        for row in rows:
            label, _, where, bench, _, _, delta = row[:7]
            if delta is not None:
                means[f"{DELTA_VS_RANDOM}/{bench}/{label}" + (f" ({where})" if where else "")] = delta
        tracker.summary(means)
        tracker.rows_table(TABLE, COLUMNS, rows)
        tracker.images({Path(name).stem: path for name, path in figures.items()})
    finally:
        tracker.finish(complete_files=True)
    return folder
