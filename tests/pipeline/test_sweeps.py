"""Sweeps: every strategy on the tiny model through a real Hydra multirun, reused from the cache
on a second invocation; the named sweeps compose job by job; Slurm / submitit launchers."""

import csv
import json
import subprocess
import sys

import pytest
from helpers.cli import run_ifexp
from helpers.data import EASY_TRAINING
from helpers.jobs import SCORES_CSV_COLUMNS, expand_sweep

from ifexp.cli import compose_job
from ifexp.outputs import SHARED_WITH_RANDOM
from ifexp.selection import INFLUENCE_STRATEGIES
from ifexp.validation import choices

# tiny_all runs every strategy the schema accepts
STRATEGIES = choices()["pruning.strategy"]


def manifests(cache):
    return {path: path.stat().st_mtime_ns for path in sorted(cache.glob("*/*/manifest.json"))}


def test_tiny_sweep_of_every_strategy_then_nothing_recomputed(easy_cot, tmp_path):
    args = ["sweeps=tiny_all", *EASY_TRAINING, f"dataset.path={easy_cot}", f"paths.cache_dir={tmp_path}/cache"]
    first = run_ifexp(*args, f"hydra.sweep.dir={tmp_path}/first", check=True)
    assert f"Launching {len(STRATEGIES)} jobs" in first.stdout + first.stderr
    jobs = {s: tmp_path / "first" / f"{s}-p{0.0 if s == 'none' else 0.25}-seed0" for s in STRATEGIES}
    results = {}
    for strategy, job in jobs.items():
        metrics = json.loads((job / "metrics.json").read_text())
        selection = json.loads((job / "selection.json").read_text())
        assert metrics["strategy"] == selection["strategy"] == strategy
        assert selection["n_removed"] == len(selection["removed"]) == (0 if strategy == "none" else 8)
        assert metrics["n_train_kept"] == 32 - selection["n_removed"]
        if strategy not in ("none", "random"):
            assert metrics["delta_vs_random/gsm_symbolic"] == pytest.approx(
                metrics["pass@1/gsm_symbolic"] - metrics["random_pass@1/gsm_symbolic"]
            )
        results[strategy] = {k: v for k, v in metrics.items() if "pass@1" in k or k.startswith("flaw/")}
    # each job counts the removals its selection shares with Random's of the same size and seed
    random_removed = set(json.loads((jobs["random"] / "selection.json").read_text())["removed"])
    for strategy, job in jobs.items():
        if strategy != "none":
            removed = set(json.loads((job / "selection.json").read_text())["removed"])
            shared = json.loads((job / "metrics.json").read_text())[SHARED_WITH_RANDOM]
            assert shared == len(removed & random_removed), strategy
    for strategy in INFLUENCE_STRATEGIES:
        header = (jobs[strategy] / "scores.csv").read_text().splitlines()[0]
        assert header.split(",") == [*SCORES_CSV_COLUMNS, "flaw", "trace_answer_correct", "self_influence"]
        assert (jobs[strategy] / "figures" / "scores_scatter.png").is_file()
    metrics = json.loads((jobs["combined"] / "metrics.json").read_text())
    assert metrics["queries/n_correct"] > 0 and metrics["queries/n_incorrect"] > 0
    # the influence jobs share one theta*, one feature store and one score artifact
    assert (
        len({json.loads((jobs[s] / "metrics.json").read_text())["artifact/scores"] for s in INFLUENCE_STRATEGIES}) == 1
    )
    # self_influence reuses theta* and its training features, and needs no queries
    own = json.loads((jobs["self_influence"] / "metrics.json").read_text())
    assert own["artifact/features_train"] == metrics["artifact/features_train"] and "artifact/queries" not in own
    # ... and writes scores.csv too: its I(d, d) beside the empty query-based columns
    with (jobs["self_influence"] / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 32 and all(r["self_influence"] and not r["s_correct"] for r in rows)
    # the easy set's labelled traces end with a wrong answer, kept as written and flagged
    assert {r["example_id"] for r in rows if r["trace_answer_correct"] == "0"} == {
        r["example_id"] for r in rows if r["flaw"]
    }
    # the oracle removes every labelled flaw (fewer than the 8 it removes)
    assert json.loads((jobs["oracle"] / "metrics.json").read_text())["flaw/recall"] == 1.0

    before = manifests(tmp_path / "cache")
    second = run_ifexp(*args, f"hydra.sweep.dir={tmp_path}/second", check=True)
    assert "computing" not in second.stdout + second.stderr
    assert manifests(tmp_path / "cache") == before
    for strategy in STRATEGIES:
        job = tmp_path / "second" / jobs[strategy].name
        again = json.loads((job / "metrics.json").read_text())
        assert {k: v for k, v in again.items() if k in results[strategy]} == results[strategy]

    report = subprocess.run(
        [sys.executable, "-m", "ifexp.report", str(tmp_path / "first")], capture_output=True, text=True, check=True
    )
    text = (tmp_path / "first" / "report.md").read_text()
    assert report.stdout.strip().endswith("report.md") and "Δ pass@1 vs Random" in text
    assert all(f"| {s} |" in text for s in STRATEGIES)


@pytest.mark.parametrize(
    "sweep, n_jobs",
    [("paper", 72), ("transfer", 24), ("cpu_demo", 21), ("demo", 15), ("leg_counting_after_check", 15)],
)
def test_every_job_of_the_named_sweeps_composes(sweep, n_jobs):
    jobs = expand_sweep(sweep)
    assert len(jobs) == n_jobs
    for overrides in jobs:
        job = compose_job([f"sweeps={sweep}", *overrides])  # and validated
        if sweep in ("paper", "transfer"):
            assert job.dataset.name == "limo" and "math500" in job.eval.benchmarks
        if sweep == "transfer":
            assert job.scorer.name == "qwen25_math_7b_instruct" and job.model.name == "llama3_8b_instruct"
        if sweep == "leg_counting_after_check":  # every strategy after the check, on the mix it needs
            assert job.pruning.prefilter == "answer_check" and job.pruning.fraction == 0.625
            assert (job.dataset.flaw_fraction, job.dataset.flaw_kinds) == (0.75, ["total_first", "wrong_final_answer"])
    # and through the command line, one job as the launcher would run it
    overrides = dict(o.split("=") for o in jobs[-1])
    result = run_ifexp(f"sweeps={sweep}", *jobs[-1], "--cfg", "job", check=True)
    assert f"strategy: {overrides['pruning']}\n  fraction: {overrides['pruning.fraction']}" in result.stdout


def test_in_the_replicate_sweep_each_seed_is_a_replicate_that_redraws_the_data_and_theta_star():
    """sweeps=slips (issue 34's plan): a seed sets the data draw and theta*'s seed, so the report
    pools its jobs over replicates (outputs.replicate_id), each strategy against its own Random."""
    from ifexp.outputs import replicate_id

    jobs = [compose_job(["sweeps=slips", *overrides]) for overrides in expand_sweep("slips")]
    assert len(jobs) == 5 * 12
    assert {job.pruning.strategy for job in jobs} >= {"oracle", "random", "difficulty", "combined"}
    assert all(job.dataset.data_seed == job.scorer_seed == job.seed for job in jobs)
    assert len({replicate_id(job.dataset.data_seed, job.scorer_seed) for job in jobs}) == 5
    assert {(job.dataset.flaw_fraction, tuple(job.dataset.flaw_kinds)) for job in jobs} == {
        (0.2, ("slip_not_carried", "cancelling_errors", "wrong_fact_not_carried"))
    }
    pilot = compose_job(["sweeps=slips", "seed=101", "pruning=oracle"])
    assert (pilot.dataset.data_seed, pilot.scorer_seed) == (101, 101)


def test_the_headline_sweep_is_the_pilots_replicate_sweep_with_the_rule_family():
    """sweeps=next_legs_rule (candidate (C), the regime the pilots chose) runs the jobs of
    `sweeps=slips 'dataset.flaw_kinds=[next_legs_rule]'`, the pilots' command: same configs, so the
    same cache keys, and only the flaw family differs from (B). Its replicates are data seeds 1-5:
    data seed 0 draws the problems the pilots drew."""
    from dataclasses import asdict

    jobs = expand_sweep("next_legs_rule")
    strategies = {tuple(o for o in job if o.startswith("pruning=")) for job in jobs}
    assert strategies == {tuple(o for o in job if o.startswith("pruning=")) for job in expand_sweep("slips")}
    assert {o for job in jobs for o in job if o.startswith("seed=")} == {f"seed={r}" for r in range(1, 6)}
    for overrides in jobs:
        headline = compose_job(["sweeps=next_legs_rule", *overrides])
        pilot_command = ["sweeps=slips", "dataset.flaw_kinds=[next_legs_rule]", *overrides]
        assert asdict(headline) == asdict(compose_job(pilot_command))
        assert (headline.dataset.flaw_fraction, tuple(headline.dataset.flaw_kinds)) == (0.2, ("next_legs_rule",))


def test_the_demo_is_the_default_job_and_the_results_sweeps_jobs():
    """`make demo` runs the embedded default, the competent regime with measured headroom: each of its
    jobs is the results sweep's job of the same strategy and seed (same config, so the same cache
    keys and numbers), and the plain `ifexp` job is one of them."""
    from dataclasses import asdict

    for overrides in expand_sweep("demo"):
        demo = compose_job(["sweeps=demo", *overrides])
        assert asdict(demo) == asdict(compose_job(["sweeps=leg_counting_total_first", *overrides]))
        assert asdict(demo) == asdict(compose_job(overrides))
    default = compose_job([])
    assert (default.dataset.name, default.dataset.flaw_kinds, default.dataset.flaw_fraction) == (
        "leg_counting",
        ["total_first"],
        0.5,
    )
    assert (default.train.epochs, default.train.lr, default.eval.benchmarks) == (3, 2e-3, [])


def test_slurm_launcher_preset_composes():
    result = run_ifexp(
        "sweeps=paper",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=90",
        "--cfg",
        "hydra",
        check=True,
    )
    assert "hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in result.stdout
    for line in ("partition: gpu", "timeout_min: 90", "gpus_per_node: 1", "max_num_timeout: 3"):
        assert line in result.stdout


def test_two_jobs_through_submitit_local(easy_cot, tmp_path):
    run_ifexp(
        "-m",
        "experiment=smoke",
        *EASY_TRAINING,
        f"dataset.path={easy_cot}",
        "hydra/launcher=local",
        "pruning=random,high_harm",
        f"paths.cache_dir={tmp_path}/cache",
        f"hydra.sweep.dir={tmp_path}/sweep",
        check=True,
    )
    strategies = sorted(json.loads(p.read_text())["strategy"] for p in (tmp_path / "sweep").glob("*/metrics.json"))
    assert strategies == ["high_harm", "random"]
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))
