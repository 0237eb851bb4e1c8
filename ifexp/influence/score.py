"""Influence scores from features: I(d, q), s_C / s_I, and rank scores (DESIGN.md definitions).

Sign convention: I(d, q) > 0 means a gradient step on d lowers the loss on q (makes q more
likely): both features are gradients of the loss, and a step -eta g(d) changes loss(q) by
-eta g(q)^T g(d).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ifexp.influence.precondition import Preconditioner


def lowrank_queries(queries: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(basis (k, r), coefficients (r, Q)): the best rank-r approximation (SVD) of (Q, k) queries.

    Scoring a training block B against it costs N k r + N r Q instead of N k Q.
    """
    left, singular, right = torch.linalg.svd(queries.T, full_matrices=False)
    return left[:, :rank], singular[:rank, None] * right[:rank]


def influence_blocks(
    train_features, query_features, preconditioner: Preconditioner, chunk: int = 8192, query_rank: int = 0
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, I(d, q) of training rows start .. start + chunk against every query) block by block:
    train_features is anything sliced by rows (an array, a memmap, features.StoredRows), read one
    chunk at a time. The chunk is fixed (8192 rows), not a memory setting: each block's product, and
    so every value, is then the same however the blocks are consumed.

    query_rank r > 0 (and < Q) scores against the rank-r SVD of the preconditioned queries
    (the across-query analogue of Kronfluence's per-module low-rank queries) instead of the exact ones.
    """
    queries = preconditioner.query_side(torch.as_tensor(np.asarray(query_features), dtype=torch.float32))
    lowrank = lowrank_queries(queries, query_rank) if 0 < query_rank < min(queries.shape) else None
    for start in range(0, len(train_features), chunk):
        block = preconditioner.train_side(
            torch.as_tensor(np.asarray(train_features[start : start + chunk]), dtype=torch.float32)
        )
        yield start, (block @ queries.T if lowrank is None else (block @ lowrank[0]) @ lowrank[1]).numpy()


def influence_matrix(
    train_features, query_features, preconditioner: Preconditioner, chunk: int = 8192, query_rank: int = 0
) -> np.ndarray:
    """(N_train, N_query) I(d, q) in memory (influence_blocks, gathered)."""
    out = np.empty((len(train_features), len(query_features)), dtype=np.float32)
    for start, block in influence_blocks(train_features, query_features, preconditioner, chunk, query_rank):
        out[start : start + len(block)] = block
    return out


def self_influence(train_features, preconditioner: Preconditioner, chunk: int = 4096) -> np.ndarray:
    """(N,) I(d, d) = phi(d)^T H^-1 phi(d): large for examples the rest of the data does not
    explain (mislabelled or corrupted ones, in the influence literature)."""
    out = np.empty(len(train_features), dtype=np.float64)
    for start in range(0, len(train_features), chunk):
        block = torch.as_tensor(np.asarray(train_features[start : start + chunk]), dtype=torch.float32)
        values = (preconditioner.train_side(block).double() * preconditioner.query_side(block).double()).sum(dim=1)
        out[start : start + chunk] = values.numpy()
    return out


def raw_ranks(values: np.ndarray) -> np.ndarray:
    """Each value's 0-based rank among all of them (float64; ties get the mean of their ranks, a
    multiple of 1/2, so that sums of ranks are exact in any order)."""
    n = len(values)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    ranks = np.empty(n, dtype=np.float64)
    if len(starts) == n:  # no ties
        ranks[order] = np.arange(n, dtype=np.float64)
        return ranks
    ends = np.append(starts[1:], n) - 1
    group = np.cumsum(np.concatenate(([True], ordered[1:] != ordered[:-1]))) - 1
    ranks[order] = (starts[group] + ends[group]) / 2.0
    return ranks


def percentile_ranks(influence: np.ndarray) -> np.ndarray:
    """Per query (column), each training example's percentile in [0, 1] (ties averaged)."""
    ranks = np.empty(influence.shape, dtype=np.float64)
    for column in range(influence.shape[1]):
        ranks[:, column] = raw_ranks(influence[:, column])
    return ranks / max(1, influence.shape[0] - 1)


class ScoreAccumulator:
    """s_C, s_I, r_C, r_I of N training examples from their influence on each query, gathered in
    pieces: `add_rows` (a block of rows against every query: the means over Q_C and Q_I) and
    `add_query` (one query's column over all N: its ranks, summed exactly). The in-memory
    influence_scores and the streamed scores stage both use it, so they agree bit for bit, whatever
    the chunking: a row's mean is taken over that row alone, and the rank sums are sums of
    multiples of 1/2 (exact in float64 up to 2^52), divided once at the end."""

    def __init__(self, n: int, query_correct: np.ndarray):
        self.n, self.correct = n, np.asarray(query_correct, dtype=bool)
        # the means, in the influence's dtype once a block arrives (NaN, float64, for an empty side)
        self.means: dict[bool, np.ndarray] = {side: np.full(n, np.nan) for side in (True, False)}
        self.rank_sums = {True: np.zeros(n), False: np.zeros(n)}

    def add_rows(self, start: int, block: np.ndarray) -> None:
        for side in (True, False):
            columns = self.correct == side
            if columns.any():
                means = block[:, columns].mean(axis=1)
                if self.means[side].dtype != means.dtype:
                    self.means[side] = self.means[side].astype(means.dtype)
                self.means[side][start : start + len(block)] = means

    def add_query(self, query: int, column: np.ndarray) -> None:
        self.rank_sums[bool(self.correct[query])] += raw_ranks(column)

    def result(self) -> dict[str, np.ndarray]:
        scale = max(1, self.n - 1)

        def mean_rank(side: bool) -> np.ndarray:
            count = int((self.correct == side).sum())
            return self.rank_sums[side] / (count * scale) if count else np.full(self.n, np.nan)

        scores = {
            "s_correct": self.means[True],
            "s_incorrect": self.means[False],
            "rank_correct": mean_rank(True),
            "rank_incorrect": mean_rank(False),
        }
        scores["rank_score"] = rank_score(scores["rank_correct"], scores["rank_incorrect"])
        return scores


def influence_scores(influence: np.ndarray, query_correct: np.ndarray) -> dict[str, np.ndarray]:
    """s_correct, s_incorrect (means over Q_C, Q_I) and rank_correct, rank_incorrect, rank_score.

    An empty query side gives NaN for its scores (the caller decides what to do about it).
    """
    scores = ScoreAccumulator(influence.shape[0], query_correct)
    scores.add_rows(0, influence)
    for query in range(influence.shape[1]):
        scores.add_query(query, influence[:, query])
    return scores.result()


def rank_score(rank_correct: np.ndarray, rank_incorrect: np.ndarray) -> np.ndarray:
    """r = r_C - r_I: an example's mean percentile over the correct queries less that over the
    incorrect ones (NaN where either side has no queries)."""
    return rank_correct - rank_incorrect
