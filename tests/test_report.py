"""ifexp-report: seed statistics and the report built from job metrics."""

import json

import pytest

from ifexp.report import bootstrap_interval, sign_flip_p_value, write_report


def test_bootstrap_interval_brackets_the_mean():
    low, high = bootstrap_interval([0.1, 0.2, 0.3, 0.4])
    assert 0.1 <= low < 0.25 < high <= 0.4
    assert bootstrap_interval([0.5]) == (0.5, 0.5)


def test_sign_flip_test_is_exact():
    assert sign_flip_p_value([0.1, 0.2, 0.3]) == pytest.approx(2 / 8)  # the smallest p with 3 seeds
    assert sign_flip_p_value([0.0, 0.0]) == 1.0
    assert sign_flip_p_value([1.0, -1.0]) == 1.0


def test_report_from_a_sweep_directory(tmp_path):
    shared = tmp_path / "cache" / "sft" / "abc"  # one artifact every job reused: counted once
    shared.mkdir(parents=True)
    (shared / "manifest.json").write_text(json.dumps({"stage": "sft", "seconds": 5.0}))
    for strategy, deltas in (("random", [0.0, 0.0, 0.0]), ("combined", [0.02, 0.04, -0.01])):
        for seed, delta in enumerate(deltas):
            job = tmp_path / f"{strategy}-{seed}"
            job.mkdir()
            metrics = {
                "model": "m",
                "dataset": "d",
                "estimator": "proj_fisher",
                "strategy": strategy,
                "fraction": 0.25,
                "seed": seed,
                "pass@1/gsm": 0.1 + delta,
                "random_pass@1/gsm": 0.1,
                "delta_vs_random/gsm": delta,
                "flaw/precision": 0.5,
                "flaw/recall": 0.5,
                "time/eval_s": 10.0,
                "artifact/sft_full": str(shared),
            }
            (job / "metrics.json").write_text(json.dumps(metrics))
    report = write_report(tmp_path).read_text()
    assert "| combined | 0.017 [" in report  # mean delta over the 3 seeds
    assert "p=0.50, 2/1/3" in report
    assert (tmp_path / "delta_vs_random.png").stat().st_size > 0
    assert (tmp_path / "flaw_detection.png").stat().st_size > 0
    assert "| sft | 1 | 5 | 5 |" in report
