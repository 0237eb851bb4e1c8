"""Pruning strategies: which floor(p * |D|) training examples to remove.

Every strategy is a *removal score* per example (higher = removed first); pruning removes the
top floor(p * |D|). The same score ranks examples for flaw detection (AUROC), so the two can
never disagree. Flaw detection is also reported per flaw family (ifexp.tasks.FLAW_FAMILY):
answer-visible flaws (the trace's own final answer is wrong or missing: an answer check finds
them) and answer-preserving ones (the answer is right, the reasoning is not). Pure functions over
arrays: no model, no Hydra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ifexp.schema import IfexpError, PruningConfig
from ifexp.tasks import FAMILIES, flaw_family

INFLUENCE_STRATEGIES = ("low_benefit", "high_harm", "combined")


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
    n_correct_queries: int = 0
    n_incorrect_queries: int = 0


def needed_signals(strategy: str) -> set[str]:
    """Which signals a strategy needs computed (influence, perplexity, embedding, ...); the trace
    answers and lengths are always there."""
    if strategy in INFLUENCE_STRATEGIES:
        return {"influence"}
    if strategy in ("perplexity", "embedding", "self_influence", "theta_loss"):
        return {strategy}
    return set()


def zscore(values: np.ndarray) -> np.ndarray:
    std = values.std()
    return (values - values.mean()) / std if std > 0 else np.zeros_like(values, dtype=np.float64)


def _require_queries(signals: Signals, strategy: str, correct: bool, incorrect: bool) -> None:
    missing = []
    if correct and signals.n_correct_queries == 0:
        missing.append(f"Q_C is empty (theta* answered none of the {signals.n_incorrect_queries} queries correctly)")
    if incorrect and signals.n_incorrect_queries == 0:
        missing.append(f"Q_I is empty (theta* answered all {signals.n_correct_queries} queries correctly)")
    if missing:
        raise IfexpError(
            f"pruning={strategy}: {'; '.join(missing)}; use more validation questions (dataset.n_val) or samples "
            "(queries.n_samples with queries.temperature > 0), or a strategy that needs only the other side"
        )


def removal_scores(cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
    """One float per example; the highest are removed first. Ties keep dataset order."""
    n = len(signals.ids)
    strategy = cfg.strategy
    if strategy in ("none", "random"):
        return np.random.default_rng(seed).random(n)
    if strategy == "oracle":
        if not any(signals.flaw):
            raise IfexpError("pruning=oracle needs flaw labels in the dataset (the `flaw` field); this one has none")
        # flawed first, in random order, then the clean ones at random
        return np.asarray([1.0 if f else 0.0 for f in signals.flaw]) + np.random.default_rng(seed).random(n) * 0.5
    if strategy == "perplexity":
        ppl = np.log(np.asarray(signals.perplexity, dtype=np.float64))
        if cfg.perplexity_keep == "low":
            return ppl
        if cfg.perplexity_keep == "high":
            return -ppl
        return np.abs(ppl - np.median(ppl))  # middle: remove both tails
    if strategy == "embedding":
        return np.asarray(signals.embedding, dtype=np.float64)
    if strategy == "answer_check":  # wrong or missing final answers first (random order), then random
        if signals.trace_answer_correct is None:
            raise IfexpError("pruning=answer_check needs each trace's answer checked (Signals.trace_answer_correct)")
        wrong = ~np.asarray(signals.trace_answer_correct, dtype=bool)
        return wrong + np.random.default_rng(seed).random(n) * 0.5
    if strategy == "length":
        length = np.asarray(signals.length, dtype=np.float64)
        return length if cfg.length_keep == "short" else -length
    if strategy == "theta_loss":
        loss = np.asarray(signals.theta_loss, dtype=np.float64)
        if cfg.loss_keep == "low":
            return loss
        # middle: remove both tails, as many from each (by rank: theta*'s losses are very skewed)
        rank = np.empty(n)
        rank[np.argsort(loss, kind="stable")] = np.arange(n)
        return np.abs(rank - (n - 1) / 2)
    if strategy == "self_influence":  # remove what the rest of the data explains least
        return np.asarray(signals.self_influence, dtype=np.float64)
    if strategy == "low_benefit":
        _require_queries(signals, strategy, correct=True, incorrect=False)
        return -np.asarray(signals.s_correct, dtype=np.float64)
    if strategy == "high_harm":
        _require_queries(signals, strategy, correct=False, incorrect=True)
        return np.asarray(signals.s_incorrect, dtype=np.float64)
    if strategy == "combined":
        _require_queries(signals, strategy, correct=True, incorrect=True)
        if cfg.combine == "rank":
            benefit, harm = signals.rank_correct, signals.rank_incorrect
        else:
            benefit, harm = zscore(signals.s_correct), zscore(signals.s_incorrect)
        return -(cfg.alpha * np.asarray(benefit) - (1 - cfg.alpha) * np.asarray(harm))
    raise IfexpError(f"pruning.strategy='{strategy}': unknown")


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


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks over ties
        tied = scores == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_at_n(scores: np.ndarray, positive: np.ndarray) -> float:
    """Of the examples a removal score ranks first, as many as there are positives, the fraction
    that are positive (ties in dataset order, as `select` removes them)."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    return float(positive[np.argsort(-np.asarray(scores), kind="stable")[:n_pos]].mean())


def flaw_groups(flaw: list[str]) -> dict[str, np.ndarray]:
    """Each flaw kind, and each flaw family its kinds belong to (ifexp.tasks.FLAW_FAMILY), as a
    mask of its examples."""
    labels = np.asarray(flaw, dtype=object)
    groups = {kind: labels == kind for kind in sorted({f for f in flaw if f})}
    families = np.asarray([flaw_family(f) if f else None for f in flaw], dtype=object)
    groups.update({family: families == family for family in FAMILIES if (families == family).any()})
    return groups


def flaw_aurocs(scores: np.ndarray, flaw: list[str]) -> dict[str, float]:
    """AUROC of a removal score at finding the flawed examples: `all`, and each kind and each flaw
    family (answer_visible, answer_preserving) against the clean examples only."""
    flawed = np.asarray([bool(f) for f in flaw])
    out = {"all": auroc(scores, flawed)}
    for group, members in flaw_groups(flaw).items():
        clean_or_group = members | ~flawed
        out[group] = auroc(scores[clean_or_group], flawed[clean_or_group])
    return out


def flaw_detection(kept: np.ndarray, scores: np.ndarray | None, flaw: list[str]) -> dict[str, float]:
    """Precision and recall of the removed set at finding flawed examples; per kind and per flaw
    family: recall, and from the ranking, AUROC and precision at the flawed count (the first
    |flawed of that group| examples ranked among the group and the clean ones)."""
    flawed = np.asarray([bool(f) for f in flaw])
    if not flawed.any():
        return {}
    removed = ~np.asarray(kept, dtype=bool)
    hits = int((removed & flawed).sum())
    out = {
        "flaw/precision": hits / removed.sum() if removed.any() else float("nan"),
        "flaw/recall": hits / flawed.sum(),
    }
    groups = flaw_groups(flaw)
    for group, members in groups.items():
        out[f"flaw/recall/{group}"] = int((removed & members).sum()) / int(members.sum())
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        aurocs = flaw_aurocs(scores, flaw)
        out["flaw/auroc"] = aurocs.pop("all")
        out.update({f"flaw/auroc/{group}": value for group, value in aurocs.items()})
        out["flaw/precision_at_n"] = precision_at_n(scores, flawed)
        for group, members in groups.items():
            clean_or_group = members | ~flawed
            out[f"flaw/precision_at_n/{group}"] = precision_at_n(scores[clean_or_group], members[clean_or_group])
    return out
