"""The practitioner baselines as strategies (answer_check, length, theta_loss) on hand-made
signals, and flaw detection reported per flaw family."""

import numpy as np
import pytest

from ifexp.schema import IfexpError, JobConfig, PruningConfig
from ifexp.selection import Signals, flaw_detection, needed_signals, precision_at_n, removal_scores, select
from ifexp.validation import choices, validate


def signals(n: int, **fields) -> Signals:
    return Signals(ids=[f"d{i}" for i in range(n)], flaw=fields.pop("flaw", [""] * n), **fields)


def removed(cfg: PruningConfig, sig: Signals, seed: int = 0) -> set[int]:
    return set(np.flatnonzero(~select(cfg, sig, seed)).tolist())


def test_the_baselines_are_strategies_with_their_options():
    assert {"answer_check", "length", "theta_loss"} <= set(choices()["pruning.strategy"])
    assert needed_signals("answer_check") == needed_signals("length") == set()  # always computed
    assert needed_signals("theta_loss") == {"theta_loss"}
    validate(JobConfig(pruning=PruningConfig("length", 0.25, length_keep="long")))
    for key, value in (("length_keep", "medium"), ("loss_keep", "high")):
        with pytest.raises(IfexpError, match=f"pruning.{key}='{value}'"):
            validate(JobConfig(pruning=PruningConfig("theta_loss", 0.25, **{key: value})))


def test_answer_check_removes_wrong_answers_first_then_fills_at_random():
    correct = np.ones(20, dtype=bool)
    correct[[3, 11, 17]] = False
    sig = signals(20, trace_answer_correct=correct)
    cfg = PruningConfig("answer_check", 0.1)  # 2 of the 3 wrong ones
    assert removed(cfg, sig) < {3, 11, 17} and len(removed(cfg, sig)) == 2
    more = PruningConfig("answer_check", 0.4)  # all 3, then 5 at random among the right ones
    picks = [removed(more, sig, seed) for seed in range(4)]
    assert all(len(p) == 8 and {3, 11, 17} <= p for p in picks)
    assert picks[0] == removed(more, sig, 0) and len({frozenset(p) for p in picks}) > 1  # seeded, varies
    # the fill is Random's own order for that seed: answer_check and Random differ only by the wrong traces
    order = np.argsort(-removal_scores(PruningConfig("random", 0.4), sig, 2), kind="stable")
    assert picks[2] - {3, 11, 17} == set([i for i in order.tolist() if correct[i]][:5])
    with pytest.raises(IfexpError, match="answer_check"):
        removal_scores(cfg, signals(20), 0)


def test_length_removes_the_longest_or_the_shortest():
    length = np.array([120.0, 40.0, 300.0, 80.0, 250.0, 60.0, 90.0, 100.0])
    sig = signals(8, length=length)
    assert removed(PruningConfig("length", 0.25, length_keep="short"), sig) == {2, 4}
    assert removed(PruningConfig("length", 0.25, length_keep="long"), sig) == {1, 5}


def test_theta_loss_removes_the_highest_or_both_tails():
    loss = np.array([0.01, 0.02, 3.0, 0.015, 0.5, 0.005, 0.03, 0.012, 0.2, 0.018])
    sig = signals(10, theta_loss=loss)
    assert removed(PruningConfig("theta_loss", 0.2, loss_keep="low"), sig) == {2, 4}
    # middle: the highest and the lowest go, as many from each tail (by rank, not by distance)
    assert removed(PruningConfig("theta_loss", 0.2, loss_keep="middle"), sig) == {2, 5}
    assert removed(PruningConfig("theta_loss", 0.4, loss_keep="middle"), sig) == {2, 4, 5, 0}


def test_flaw_detection_per_family_auroc_and_precision_at_the_flawed_count():
    # 4 answer-visible flaws, 4 answer-preserving ones, 8 clean
    flaw = ["truncated", "wrong_final_answer", "arithmetic_error", "wrong_leg_count"]
    flaw += ["skipped_step", "repeated_step", "invented_step", "slip_not_carried"] + [""] * 8
    correct = np.array([False] * 4 + [True] * 12)
    sig = signals(16, flaw=flaw, trace_answer_correct=correct)
    cfg = PruningConfig("answer_check", 0.25)
    scores = removal_scores(cfg, sig, 0)
    out = flaw_detection(select(cfg, sig, 0, scores), scores, flaw)
    assert out["flaw/auroc/answer_visible"] == 1.0 and out["flaw/precision_at_n/answer_visible"] == 1.0
    assert out["flaw/recall/answer_visible"] == 1.0 and out["flaw/recall/answer_preserving"] == 0.0
    # what an answer check cannot see it ranks at random among the clean ones
    assert 0.0 < out["flaw/auroc/answer_preserving"] < 1.0
    assert 0.5 <= out["flaw/precision_at_n"] < 1.0 and out["flaw/auroc/truncated"] == 1.0
    # a score that ranks the preserving flaws first, then the visible ones
    ranking = np.array([2.0] * 4 + [3.0] * 4 + [0.0] * 8)
    out = flaw_detection(select(cfg, sig, 0, ranking), ranking, flaw)
    assert out["flaw/auroc/answer_preserving"] == out["flaw/auroc/answer_visible"] == out["flaw/auroc"] == 1.0
    assert out["flaw/precision_at_n/answer_preserving"] == 1.0 and out["flaw/precision_at_n"] == 1.0
    # labels ifexp does not know have no family: per kind only
    own = flaw_detection(np.ones(4, dtype=bool), np.array([1.0, 0.0, 0.5, 0.2]), ["mine", "", "", ""])
    assert "flaw/auroc/mine" in own and not any("answer_" in key for key in own)


def test_precision_at_n():
    assert precision_at_n(np.array([0.9, 0.1, 0.8, 0.2]), np.array([1, 0, 0, 1])) == 0.5
    assert precision_at_n(np.array([0.9, 0.1, 0.8, 0.2]), np.array([1, 0, 1, 0])) == 1.0
    assert np.isnan(precision_at_n(np.zeros(3), np.zeros(3)))


def test_difficulty_removes_the_questions_a_model_already_solves_first():
    assert needed_signals("difficulty") == {"difficulty"}
    solve_rate = np.array([0.0, 1.0, 0.25, 0.75, 1.0, 0.0, 0.5, 0.0])
    sig = signals(8, difficulty=solve_rate)
    assert removed(PruningConfig("difficulty", 0.25), sig) == {1, 4}  # the two solved every time
    assert removed(PruningConfig("difficulty", 0.5), sig) == {1, 4, 3, 6}
    # ties (the unsolved ones) break at random, seeded
    picks = {frozenset(removed(PruningConfig("difficulty", 0.75), sig, seed)) for seed in range(6)}
    assert all({1, 4, 3, 6, 2} <= p and len(p) == 6 for p in picks) and len(picks) > 1
    with pytest.raises(IfexpError, match="pruning.difficulty_model='oracle'"):
        validate(JobConfig(pruning=PruningConfig("difficulty", 0.25, difficulty_model="oracle")))
