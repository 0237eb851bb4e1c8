"""The report's W&B run (ifexp.report.wandb_run), offline like the jobs': one per `ifexp-report DIR`,
job_type `report`, grouped with the sweep's job runs (whose job_type is their strategy), holding the
Δ vs Random table with its intervals, and the figures. Read from the offline run folder as
`wandb sync` uploads it (wandb 0.31 writes no wandb-summary.json offline: helpers.wandb_files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO
from helpers.report_jobs import BENCH, write_sweep
from helpers.wandb_files import records, run_record, tables

from ifexp.report import write_report
from ifexp.report.wandb_run import COLUMNS

WANDB_LOGGER = {"name": "wandb", "mode": "offline", "project": "ifexp", "entity": None, "group": None}


def offline_runs(folder):
    return sorted((folder / "wandb").glob("offline-run-*"))


def test_a_report_writes_one_offline_run_with_the_delta_table_and_the_figures(tmp_path):
    sweep = write_sweep(tmp_path / "sweep_a", logger=WANDB_LOGGER)
    report = write_report(sweep).read_text()
    (run,) = offline_runs(sweep)
    assert list(run.glob("run-*.wandb"))
    record = run_record(run)
    assert (record.job_type, record.run_group, record.display_name) == ("report", "sweep_a", "report-sweep_a")
    (table,) = tables(run, "delta_vs_random")
    assert table["columns"] == COLUMNS
    rows = {(row[0], row[2], row[3]): dict(zip(COLUMNS, row, strict=True)) for row in table["data"]}
    # one row per strategy row with a Δ (perplexity at each fraction) and benchmark
    assert set(rows) == {("perplexity", f"pruning.fraction={f}", BENCH) for f in (0.1, 0.25, 0.5)}
    row = rows[("perplexity", "pruning.fraction=0.5", BENCH)]
    assert row["seeds"] == 2 and row["interval"] == "bootstrap" and row["low"] < row["delta_vs_random"] < row["high"]
    assert row["interval_over"].startswith("95% paired bootstrap over 24 problems × 2 seeds")
    # the same Δ as report.md's table
    assert f"| perplexity | {row['delta_vs_random']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]" in report
    images = {path.name.split("_")[0] for path in (run / "files" / "media" / "images" / "figures").glob("*.png")}
    assert images == {"delta", "pass", "flaw"}  # delta_vs_random, pass_vs_fraction, flaw_roc
    summaries = [r.summary for r in records(next(run.glob("run-*.wandb"))) if r.WhichOneof("record_type") == "summary"]
    keys = {item.key for summary in summaries for item in summary.update}
    assert f"delta_vs_random/{BENCH}/perplexity (pruning.fraction=0.5)" in keys
    assert f"`wandb sync {run.relative_to(sweep)}` uploads it" in report


def test_no_run_where_no_job_logged_to_wandb_unless_asked(tmp_path):
    sweep = write_sweep(tmp_path / "sweep_b")
    write_report(sweep)
    assert not offline_runs(sweep)
    write_report(sweep, wandb="offline")
    assert len(offline_runs(sweep)) == 1


@pytest.mark.parametrize("strategies", [("random", "length")])
def test_jobs_runs_are_grouped_by_sweep_with_their_strategy_as_job_type(tmp_path, strategies):
    """Two real jobs logging to W&B offline, then ifexp-report on their sweep: three runs in one group."""
    env = {**os.environ, "WANDB_SILENT": "true"}
    sweep = tmp_path / "sweep_c"
    job = [
        "-m",
        "experiment=smoke",
        f"pruning={','.join(strategies)}",
        "eval.eval_base=false",
        "eval.eval_full=false",
        "eval.benchmarks=[]",
        "eval.max_new_tokens=8",
        "logger=wandb",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep}",
    ]
    for command in ([sys.executable, "-m", "ifexp.cli", *job], [sys.executable, "-m", "ifexp.report", str(sweep)]):
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    jobs = {}
    for metrics in sweep.glob("*/metrics.json"):
        (run,) = offline_runs(metrics.parent)
        jobs[json.loads(metrics.read_text())["strategy"]] = run_record(run)
    assert {s: (r.job_type, r.run_group) for s, r in jobs.items()} == {s: (s, "sweep_c") for s in strategies}
    (report_run,) = offline_runs(sweep)
    assert (run_record(report_run).job_type, run_record(report_run).run_group) == ("report", "sweep_c")
    (table,) = tables(report_run, "delta_vs_random")
    assert [row[:2] for row in table["data"]] == [["length", "length"]]
