"""Pruning strategies as pure functions: what each removes, and the clear errors."""

import numpy as np
import pytest

from ifexp.schema import IfexpError, PruningConfig
from ifexp.selection import Signals, auroc, flaw_detection, n_to_remove, needed_signals, select
from ifexp.signals import centroid_distance, redundancy


def signals(n: int = 10, **fields) -> Signals:
    return Signals(ids=[f"d{i}" for i in range(n)], flaw=[""] * n, **fields)


def removed(cfg: PruningConfig, sig: Signals, seed: int = 0) -> set[int]:
    return set(np.flatnonzero(~select(cfg, sig, seed)).tolist())


def test_fraction_removes_floor_of_p_times_n():
    assert n_to_remove(10, 0.25) == 2 and n_to_remove(7, 0.5) == 3 and n_to_remove(5, 0.0) == 0
    assert len(removed(PruningConfig("random", 0.25), signals(10))) == 2
    assert removed(PruningConfig("none", 0.0), signals(10)) == set()


def test_random_is_seeded_and_varies_with_the_seed():
    cfg = PruningConfig("random", 0.5)
    assert removed(cfg, signals(40), seed=3) == removed(cfg, signals(40), seed=3)
    assert removed(cfg, signals(40), seed=3) != removed(cfg, signals(40), seed=4)


def test_influence_strategies_remove_the_right_end():
    s_correct = np.array([0.5, -2.0, 1.0, 0.1, 3.0, -1.0])
    s_incorrect = np.array([0.0, 0.2, 5.0, -1.0, 0.1, 4.0])
    sig = signals(6, s_correct=s_correct, s_incorrect=s_incorrect, n_correct_queries=3, n_incorrect_queries=2)
    assert removed(PruningConfig("low_benefit", 0.34), sig) == {1, 5}  # lowest s_C
    assert removed(PruningConfig("high_harm", 0.34), sig) == {2, 5}  # highest s_I
    # z-score combination with alpha = 1 is low_benefit, alpha = 0 is high_harm
    assert removed(PruningConfig("combined", 0.34, combine="zscore", alpha=1.0), sig) == {1, 5}
    assert removed(PruningConfig("combined", 0.34, combine="zscore", alpha=0.0), sig) == {2, 5}


def test_self_influence_removes_the_highest_and_needs_no_queries():
    sig = signals(5, self_influence=np.array([0.1, 3.0, 0.2, 2.0, 0.0]))
    assert needed_signals("self_influence") == {"self_influence"}
    assert removed(PruningConfig("self_influence", 0.4), sig) == {1, 3}  # Q_C and Q_I may be empty


def test_combined_rank_score_removes_lowest_r():
    rank_correct = np.array([0.9, 0.1, 0.5, 0.5])
    rank_incorrect = np.array([0.1, 0.9, 0.5, 0.0])
    sig = signals(
        4, rank_correct=rank_correct, rank_incorrect=rank_incorrect, n_correct_queries=1, n_incorrect_queries=1
    )
    assert removed(PruningConfig("combined", 0.25, combine="rank"), sig) == {1}  # r = -0.8


@pytest.mark.parametrize(
    "strategy, n_correct, n_incorrect, message",
    [
        ("low_benefit", 0, 5, "Q_C is empty"),
        ("high_harm", 5, 0, "Q_I is empty"),
        ("combined", 0, 5, "Q_C is empty"),
        ("combined", 5, 0, "Q_I is empty"),
    ],
)
def test_an_empty_query_side_is_a_clear_error(strategy, n_correct, n_incorrect, message):
    nan = np.full(4, np.nan)
    sig = signals(4, s_correct=nan, s_incorrect=nan, rank_correct=nan, rank_incorrect=nan)
    sig.n_correct_queries, sig.n_incorrect_queries = n_correct, n_incorrect
    with pytest.raises(IfexpError, match=message):
        select(PruningConfig(strategy, 0.5), sig, 0)


def test_perplexity_keep_low_high_middle():
    sig = signals(5, perplexity=np.array([1.0, 50.0, 5.0, 2.0, 20.0]))
    assert removed(PruningConfig("perplexity", 0.4, perplexity_keep="low"), sig) == {1, 4}
    assert removed(PruningConfig("perplexity", 0.4, perplexity_keep="high"), sig) == {0, 3}
    assert removed(PruningConfig("perplexity", 0.4, perplexity_keep="middle"), sig) == {0, 1}  # both tails


def test_oracle_removes_flawed_first_and_needs_labels():
    sig = signals(8)
    sig.flaw = ["", "bad", "", "", "bad", "", "", ""]
    assert removed(PruningConfig("oracle", 0.25), sig) == {1, 4}
    with pytest.raises(IfexpError, match="needs flaw labels"):
        select(PruningConfig("oracle", 0.25), signals(8), 0)


def test_a_fraction_that_leaves_nothing_is_an_error():
    with pytest.raises(IfexpError, match="leaves no training data"):
        select(PruningConfig("random", 0.5), signals(0), 0)


def test_auroc_and_flaw_detection():
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert auroc(np.array([1.0, 1.0]), np.array([1, 0])) == 0.5
    kept = np.array([True, False, False, True])
    out = flaw_detection(kept, np.array([0.0, 2.0, 1.0, 0.5]), ["", "a", "", "b"])
    assert out["flaw/precision"] == 0.5 and out["flaw/recall"] == 0.5
    assert out["flaw/recall/a"] == 1.0 and out["flaw/recall/b"] == 0.0
    assert flaw_detection(kept, None, ["", "", "", ""]) == {}


def test_embedding_scores():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.8, 0.6]])
    distance = centroid_distance(vectors, np.array([[1.0, 0.0]]))
    assert distance.argmax() in (1, 2) and distance[0] == pytest.approx(0.0)
    # of the duplicate pair (1, 2) exactly one is dropped first
    order = np.argsort(-redundancy(vectors))
    assert set(order[:1]) <= {1, 2} and not {1, 2} <= set(order[:2])
