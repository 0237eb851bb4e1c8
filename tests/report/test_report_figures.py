"""ifexp-report's figures (ifexp.report.charts): Δ vs Random bars, pass@1 against the pruning
fraction (with several fractions), flaw-detection ROC curves (from each job's removal_scores.csv),
each with a caption in report.md saying what its whiskers, bands and curves are over."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.report_jobs import BENCH, N_PROBLEMS, write_sweep

from ifexp.outputs import read_removal_scores, write_removal_scores
from ifexp.report import write_report
from ifexp.report.charts import ROC_GRID, roc_on_grid, roc_points
from ifexp.selection.flaws import auroc


@pytest.fixture
def sweep(tmp_path):
    return write_sweep(tmp_path)


def test_the_three_figures_are_drawn_with_captions_saying_what_their_intervals_are_over(sweep):
    report = write_report(sweep).read_text()
    for png in ("delta_vs_random.png", "pass_vs_fraction.png", "flaw_roc.png"):
        assert (sweep / png).stat().st_size > 0 and f"]({png})" in report
    assert not (sweep / "flaw_detection.png").exists()  # the ROC replaces the bars where rankings were kept
    figures = report[report.index("## Figures") :]
    # each caption names what its whiskers / bands / curves are over
    assert "*Figure: Δ pass@1 vs Random.*" in figures
    assert f"- {BENCH}: whiskers: 95% paired bootstrap over {N_PROBLEMS} problems × 2 seeds" in figures
    assert "*Figure: pass@1 against the pruning fraction.*" in figures
    assert f"- {BENCH}: whiskers and band: 95% bootstrap over {N_PROBLEMS} problems × 2 seeds" in figures
    assert "*Figure: Finding the flawed examples: ROC curves.*" in figures
    assert "band: min–max over those jobs (seeds, fractions)" in figures
    assert "Jobs per curve: perplexity 6, random 6" in figures


def test_one_fraction_draws_no_fraction_figure(sweep):
    for folder in sweep.glob("*-0.5-*"):
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        folder.rmdir()
    for folder in sweep.glob("*-0.25-*"):
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        folder.rmdir()
    report = write_report(sweep).read_text()
    assert not (sweep / "pass_vs_fraction.png").exists() and "pass_vs_fraction.png" not in report
    assert (sweep / "flaw_roc.png").exists()


def test_roc_curve_and_auroc_agree_with_ties():
    scores = np.array([5.0, 4.0, 4.0, 4.0, 3.0, 2.0, 2.0, 1.0])
    positive = np.array([True, True, False, False, True, False, True, False])
    fpr, tpr = roc_points(scores, positive)
    # the cut after each tie group: {5}, {4, 4, 4}, {3}, {2, 2}, {1}
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(tpr, [0, 0.25, 0.5, 0.75, 1.0, 1.0])
    # a tie group is a straight segment, so the area under the curve is the AUROC with ties counted half
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(scores, positive))
    grid = roc_on_grid(scores, positive)
    assert np.trapezoid(grid, ROC_GRID) == pytest.approx(auroc(scores, positive), abs=1e-3)
    perfect = roc_on_grid(np.arange(8.0), np.arange(8) >= 4)
    assert perfect[0] == 1.0 and perfect.min() == 1.0


def test_removal_scores_csv_round_trips(tmp_path):
    write_removal_scores(tmp_path, ["a", "b", "c"], np.array([0.5, float("inf"), -1.0]), [True, False, True], None)
    read = read_removal_scores(tmp_path)
    assert read == {
        "example_id": ["a", "b", "c"],
        "removal_score": [0.5, float("inf"), -1.0],
        "removed": [False, True, False],
        "flaw": None,
    }
    assert (tmp_path / "removal_scores.csv").read_text().splitlines()[0] == "example_id,removal_score,removed"
