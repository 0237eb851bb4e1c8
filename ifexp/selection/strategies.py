"""The built-in strategies (DESIGN.md), in the order schema.CHOICES lists them: the paper's
(random, perplexity, embedding, the influence ones, oracle, none) and the practitioner baselines
every strategy is judged against (answer_check, length, theta_loss, self_influence, difficulty)."""

from __future__ import annotations

import numpy as np

from ifexp.schema import IfexpError, JobConfig, PruningConfig
from ifexp.selection.registry import STRATEGIES, Signals, Strategy


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


def random_order(n: int, seed: int) -> np.ndarray:
    """Random's removal scores: a seeded random order (other strategies fill with it)."""
    return np.random.default_rng(seed).random(n)


class KeepAll(Strategy):
    """Keep all of D (the full-data reference): it removes nothing, and ranks as Random does."""

    name = "none"

    def check(self, cfg: JobConfig) -> None:
        if cfg.pruning.fraction != 0.0:
            raise IfexpError(f"pruning=none removes nothing: pruning.fraction={cfg.pruning.fraction} must be 0")

    def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
        return random_order(len(signals.ids), seed)


class RandomPruning(Strategy):
    """A seeded random floor(p * |D|): the baseline every strategy is compared with."""

    name = "random"

    def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
        return random_order(len(signals.ids), seed)


class Perplexity(Strategy):
    """By perplexity under the base model: keep the low, high or middle ones."""

    name = "perplexity"
    needs = {"perplexity"}
    options = {"perplexity_keep": ("low", "high", "middle")}

    def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
        ppl = np.log(np.asarray(signals.perplexity, dtype=np.float64))
        if cfg.perplexity_keep == "low":
            return ppl
        if cfg.perplexity_keep == "high":
            return -ppl
        return np.abs(ppl - np.median(ppl))  # middle: remove both tails


class Embedding(Strategy):
    """Sentence embeddings: farthest from the validation-question centroid, or most redundant."""

    name = "embedding"
    needs = {"embedding"}
    options = {"embedding_mode": ("centroid", "redundancy")}

    def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
        return np.asarray(signals.embedding, dtype=np.float64)


class LowBenefit(Strategy):
    """Remove the lowest s_C (least push toward theta*'s correct answers)."""

    name = "low_benefit"
    needs = {"influence"}

    def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
        _require_queries(signals, self.name, correct=True, incorrect=False)
        return -np.asarray(signals.s_correct, dtype=np.float64)


class HighHarm(Strategy):
    """Remove the highest s_I (most push toward theta*'s wrong answers)."""

    name = "high_harm"
    needs = {"influence"}

    def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
        _require_queries(signals, self.name, correct=False, incorrect=True)
        return np.asarray(signals.s_incorrect, dtype=np.float64)


class Combined(Strategy):
    """Remove the lowest alpha * benefit - (1 - alpha) * harm, from rank scores or z-scores."""

    name = "combined"
    needs = {"influence"}
    options = {"combine": ("rank", "zscore")}
    numeric_options = ("alpha",)

    def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
        _require_queries(signals, self.name, correct=True, incorrect=True)
        if cfg.combine == "rank":
            benefit, harm = signals.rank_correct, signals.rank_incorrect
        else:
            benefit, harm = zscore(signals.s_correct), zscore(signals.s_incorrect)
        return -(cfg.alpha * np.asarray(benefit) - (1 - cfg.alpha) * np.asarray(harm))


class SelfInfluence(Strategy):
    """Remove the highest I(d, d) under theta*: what the rest of the data explains least."""

    name = "self_influence"
    needs = {"self_influence"}

    def check(self, cfg: JobConfig) -> None:
        if cfg.estimator.preconditioner == "grad_cos":
            # cosine self-influence is |phi(d)|^2 / |phi(d)|^2 = 1 for every d: its ranking is rounding noise
            raise IfexpError(
                "pruning.strategy=self_influence with estimator.preconditioner=grad_cos: cosine self-influence is 1 "
                "for every example; use estimator.preconditioner=grad_dot or proj_fisher"
            )

    def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
        return np.asarray(signals.self_influence, dtype=np.float64)


class Oracle(Strategy):
    """The labelled flaws first, in random order, then the clean examples at random."""

    name = "oracle"

    def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
        if not any(signals.flaw):
            raise IfexpError("pruning=oracle needs flaw labels in the dataset (the `flaw` field); this one has none")
        return np.asarray([1.0 if f else 0.0 for f in signals.flaw]) + random_order(len(signals.ids), seed) * 0.5


class AnswerCheck(Strategy):
    """The traces whose own final answer is wrong or missing first (random order), then Random's."""

    name = "answer_check"

    def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
        if signals.trace_answer_correct is None:
            raise IfexpError("pruning=answer_check needs each trace's answer checked (Signals.trace_answer_correct)")
        wrong = ~np.asarray(signals.trace_answer_correct, dtype=bool)
        return wrong + random_order(len(signals.ids), seed) * 0.5


class Length(Strategy):
    """By trace length: keep the short ones (remove the longest) or the long ones."""

    name = "length"
    options = {"length_keep": ("short", "long")}

    def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
        length = np.asarray(signals.length, dtype=np.float64)
        return length if cfg.length_keep == "short" else -length


class ThetaLoss(Strategy):
    """By each example's loss under theta*: keep the low ones (remove the highest) or the middle."""

    name = "theta_loss"
    needs = {"theta_loss"}
    options = {"loss_keep": ("low", "middle")}

    def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
        loss = np.asarray(signals.theta_loss, dtype=np.float64)
        if cfg.loss_keep == "low":
            return loss
        # middle: remove both tails, as many from each (by rank: theta*'s losses are very skewed)
        n = len(signals.ids)
        rank = np.empty(n)
        rank[np.argsort(loss, kind="stable")] = np.arange(n)
        return np.abs(rank - (n - 1) / 2)


class Difficulty(Strategy):
    """The questions a model already solves first (its solve rate, highest removed; ties at random):
    the difficulty filter of s1 and OpenThoughts, with the trainee's base model or theta*."""

    name = "difficulty"
    needs = {"difficulty"}
    options = {"difficulty_model": ("base", "theta_star")}

    def removal_scores(self, cfg: PruningConfig, signals: Signals, seed: int) -> np.ndarray:
        solve_rate = np.asarray(signals.difficulty, dtype=np.float64)
        # a solve rate moves in steps of 1/n_samples: a tie-break far below that keeps the order
        return solve_rate + 1e-6 * random_order(len(signals.ids), seed)


# the built-in strategies that rank by s_C / s_I (they share theta*'s scores)
INFLUENCE_STRATEGIES = tuple(name for name, s in STRATEGIES.items() if "influence" in s.needs)
