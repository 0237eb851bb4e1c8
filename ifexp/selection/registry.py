"""The strategy registry: `Strategy`, `STRATEGIES`, and selection by removal scores.

A strategy is a `Strategy` subclass that declares itself once: its `name` (pruning.strategy, and
conf/pruning/<name>.yaml), the signals it `needs`, the PruningConfig `options` it reads with their
allowed values, and its `removal_scores` (higher = removed first). Defining the class registers
it in `STRATEGIES`, as kronfluence's factor configs do; ifexp.validation asks
this registry, and the pipeline computes only what `needs` names.
"""

from __future__ import annotations

import math
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np

from ifexp.registry import Registry
from ifexp.schema import IfexpError, JobConfig, PruningConfig

# What a strategy may need computed beyond the trace answers and lengths, which are always there:
# s_C / s_I and their ranks (theta*, its graded answers, both feature stores), I(d, d), the base
# model's perplexity, embeddings, the loss under theta*, the training questions' solve rates.
SIGNALS = ("influence", "perplexity", "embedding", "self_influence", "theta_loss", "difficulty")
# pruning.strategy -> its class, in definition order
STRATEGIES: Registry[type[Strategy]] = Registry("pruning.strategy")


@dataclass
class Signals:
    """What strategies look at, one entry per training example (None: not computed)."""

    ids: list[str]
    flaw: list[str] = field(default_factory=list)
    s_correct: np.ndarray | None = None
    s_incorrect: np.ndarray | None = None
    rank_correct: np.ndarray | None = None
    rank_incorrect: np.ndarray | None = None
    # I(d, d) under theta*'s preconditioned gradients
    self_influence: np.ndarray | None = None
    perplexity: np.ndarray | None = None
    # embedding removal score: distance to the validation centroid, or redundancy
    embedding: np.ndarray | None = None
    # does the trace's own final answer match the gold answer (grading.check_trace_answers)
    trace_answer_correct: np.ndarray | None = None
    # the length of each trace (characters of its cot)
    length: np.ndarray | None = None
    # each example's loss under theta* (mean response-token cross-entropy)
    theta_loss: np.ndarray | None = None
    # each training question's solve rate: the fraction of a model's sampled answers graded correct
    difficulty: np.ndarray | None = None
    n_correct_queries: int = 0
    n_incorrect_queries: int = 0


class Strategy:
    """A pruning strategy. A subclass that sets `name` is registered under it; one without is a
    base for others."""

    name: ClassVar[str]
    # the SIGNALS it needs computed
    needs: ClassVar[AbstractSet[str]] = frozenset()
    # the PruningConfig fields it reads -> their allowed values (schema.CHOICES["pruning.<field>"])
    options: ClassVar[dict[str, tuple[str, ...]]] = {}
    # the numeric PruningConfig fields it reads (schema.validate checks their range)
    numeric_options: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            return
        cls.needs = frozenset(cls.needs)
        if not cls.needs <= set(SIGNALS):
            raise TypeError(f"{cls.__name__}.needs: {sorted(cls.needs - set(SIGNALS))} not in {SIGNALS}")
        config_fields = {f.name for f in fields(PruningConfig)}
        declared = option_values()
        for option in (*cls.options, *cls.numeric_options):
            if option not in config_fields:
                raise TypeError(f"{cls.__name__}: option '{option}' is not a PruningConfig field; add it there")
        for option, values in cls.options.items():
            # one list per config field: validate checks a field whatever the strategy
            if option in declared and declared[option] != tuple(values):
                raise TypeError(f"{cls.__name__}.options: '{option}' is already {declared[option]}")
        if cls.name in STRATEGIES:  # at class definition, like the checks above
            raise TypeError(f"{cls.__name__}: strategy '{cls.name}' is already registered ({STRATEGIES[cls.name]!r})")
        STRATEGIES.register(cls.name, cls)

    def check(self, cfg: JobConfig) -> None:
        """What schema.validate cannot say about a job with this strategy (raise IfexpError)."""

    def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
        """One float per example; the highest are removed first."""
        raise NotImplementedError


def strategy_names() -> tuple[str, ...]:
    """Every registered strategy, in registration order."""
    return tuple(STRATEGIES)


def option_names(strategy: str | None = None) -> tuple[str, ...]:
    """The PruningConfig fields a strategy reads (every strategy's, for None), choices and numbers."""
    classes = [STRATEGIES[strategy]] if strategy is not None else list(STRATEGIES.values())
    names = [option for s in classes for option in (*s.options, *s.numeric_options)]
    return tuple(dict.fromkeys(names))


def option_values() -> dict[str, tuple[str, ...]]:
    """Each strategy option (a PruningConfig field) -> its allowed values."""
    return {option: tuple(values) for s in STRATEGIES.values() for option, values in s.options.items()}


def choices() -> dict[str, tuple[str, ...]]:
    """pruning.strategy and the strategies' options, as schema.CHOICES keys."""
    options = {f"pruning.{option}": values for option, values in option_values().items()}
    return {"pruning.strategy": strategy_names(), **options}


def strategy_named(name: str) -> Strategy:
    """The registered strategy of that name."""
    return STRATEGIES[name]()


def needed_signals(strategy: str) -> set[str]:
    """Which signals a strategy needs computed (influence, perplexity, embedding, ...); the trace
    answers and lengths are always there."""
    return set(strategy_named(strategy).needs)


def removal_scores(cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
    """One float per example; the highest are removed first. Ties keep dataset order.
    With pruning.prefilter=answer_check, the traces whose own final answer is wrong or missing
    come first, each group in the strategy's order."""
    scores = strategy_named(cfg.strategy).removal_scores(cfg, signals, seed)
    if cfg.prefilter == "answer_check":
        scores = answer_check_first(scores, signals)
    return scores


def answer_check_first(scores: np.ndarray, signals: Signals) -> np.ndarray:
    """Removal scores that put every trace failing the answer check before every other one and
    keep the order of `scores` (ties in dataset order, as `select` breaks them) within each."""
    if signals.trace_answer_correct is None:
        raise IfexpError("pruning.prefilter=answer_check needs each trace's answer checked (trace_answer_correct)")
    n = len(scores)
    removal_order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    position_score = np.empty(n, dtype=np.float64)
    position_score[removal_order] = np.arange(n, 0, -1)  # n for the first removed, 1 for the last
    failed = ~np.asarray(signals.trace_answer_correct, dtype=bool)
    return position_score + n * failed


def n_to_remove(n: int, fraction: float) -> int:
    return math.floor(fraction * n)


def select(cfg: PruningConfig, signals: Signals, seed: int, scores: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the examples kept; `scores`: removal_scores already computed by the caller."""
    n = len(signals.ids)
    n_remove = n_to_remove(n, cfg.fraction)
    if n - n_remove < 1:
        raise IfexpError(f"pruning.fraction={cfg.fraction} leaves no training data (|D| = {n})")
    kept = np.ones(n, dtype=bool)
    if n_remove:
        if scores is None:
            scores = removal_scores(cfg, signals, seed)
        if not np.isfinite(scores).all():
            raise IfexpError(
                f"pruning={cfg.strategy}: non-finite scores for {int((~np.isfinite(scores)).sum())} examples"
            )
        # stable sort of the negated scores: highest first, ties in dataset order
        kept[np.argsort(-scores, kind="stable")[:n_remove]] = False
    return kept
