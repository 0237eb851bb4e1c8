"""pruning.prefilter=answer_check: the cheap filter first, the strategy on the rest."""

import numpy as np
import pytest

from ifexp.schema import IfexpError, PruningConfig
from ifexp.selection import Signals, removal_scores, select


def signals_with(lengths: list[int], answer_correct: list[bool]) -> Signals:
    n = len(lengths)
    return Signals(
        ids=[f"d{i}" for i in range(n)],
        length=np.asarray(lengths, dtype=np.float64),
        trace_answer_correct=np.asarray(answer_correct),
    )


def removed(cfg: PruningConfig, signals: Signals) -> list[str]:
    kept = select(cfg, signals, seed=0)
    return [i for i, k in zip(signals.ids, kept, strict=True) if not k]


def test_failed_answers_go_first_then_the_strategy_ranks_the_rest():
    # length (keep short) alone removes the two longest: d0 and d1; d4 and d6 fail the answer check
    signals = signals_with([90, 80, 10, 20, 5, 30, 7, 40], [True, True, True, True, False, True, False, True])
    alone = PruningConfig(strategy="length", fraction=0.5)
    assert removed(alone, signals) == ["d0", "d1", "d5", "d7"]
    after = PruningConfig(strategy="length", fraction=0.5, prefilter="answer_check")
    # the two failures, then the two longest of the rest: the same size as without the filter
    assert removed(after, signals) == ["d0", "d1", "d4", "d6"]


def test_more_failures_than_the_budget_removes_those_the_strategy_ranks_first():
    signals = signals_with([10, 50, 20, 40, 30, 60], [False, False, False, True, False, True])
    cfg = PruningConfig(strategy="length", fraction=0.34, prefilter="answer_check")  # 2 of 6
    assert removed(cfg, signals) == ["d1", "d4"]  # the two longest of the four failures
    scores = removal_scores(cfg, signals, seed=0)
    failed = ~signals.trace_answer_correct
    assert scores[failed].min() > scores[~failed].max()  # flaw detection ranks them first too


def test_the_filter_needs_the_trace_answers_checked():
    signals = Signals(ids=["a", "b"], length=np.asarray([1.0, 2.0]))
    with pytest.raises(IfexpError, match="prefilter=answer_check needs"):
        removal_scores(PruningConfig(strategy="length", fraction=0.5, prefilter="answer_check"), signals, 0)


def test_an_unknown_prefilter_is_one_line(tmp_path):
    from ifexp.cli import compose_job

    with pytest.raises(IfexpError, match="pruning.prefilter='length': expected one of none, answer_check"):
        compose_job(["pruning=length", "pruning.prefilter=length"])
