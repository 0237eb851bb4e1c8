"""Influence scores from features: I(d, q), s_C / s_I, and rank scores (DESIGN.md definitions).

Sign convention: I(d, q) > 0 means a gradient step on d lowers the loss on q (makes q more
likely): both features are gradients of the loss, and a step -eta g(d) changes loss(q) by
-eta g(q)^T g(d).
"""

from __future__ import annotations

import numpy as np
import torch

from ifexp.influence.precondition import Preconditioner


def lowrank_queries(queries: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(basis (k, r), coefficients (r, Q)): the best rank-r approximation (SVD) of (Q, k) queries.

    Scoring a training block B against it costs N k r + N r Q instead of N k Q.
    """
    left, singular, right = torch.linalg.svd(queries.T, full_matrices=False)
    return left[:, :rank], singular[:rank, None] * right[:rank]


def influence_matrix(
    train_features: np.ndarray | torch.Tensor,
    query_features: np.ndarray | torch.Tensor,
    preconditioner: Preconditioner,
    chunk: int = 8192,
    query_rank: int = 0,
) -> np.ndarray:
    """(N_train, N_query) I(d, q), computed chunk by chunk over the training rows.

    query_rank r > 0 (and < Q) scores against the rank-r SVD of the preconditioned queries
    (the across-query analogue of Kronfluence's per-module low-rank queries) instead of the exact ones.
    """
    queries = preconditioner.query_side(torch.as_tensor(np.asarray(query_features), dtype=torch.float32))
    lowrank = lowrank_queries(queries, query_rank) if 0 < query_rank < min(queries.shape) else None
    out = np.empty((len(train_features), queries.shape[0]), dtype=np.float32)
    for start in range(0, len(train_features), chunk):
        block = preconditioner.train_side(
            torch.as_tensor(np.asarray(train_features[start : start + chunk]), dtype=torch.float32)
        )
        out[start : start + chunk] = (
            block @ queries.T if lowrank is None else (block @ lowrank[0]) @ lowrank[1]
        ).numpy()
    return out


def self_influence(
    train_features: np.ndarray | torch.Tensor, preconditioner: Preconditioner, chunk: int = 4096
) -> np.ndarray:
    """(N,) I(d, d) = phi(d)^T H^-1 phi(d): large for examples the rest of the data does not
    explain (mislabelled or corrupted ones, in the influence literature)."""
    out = np.empty(len(train_features), dtype=np.float64)
    for start in range(0, len(train_features), chunk):
        block = torch.as_tensor(np.asarray(train_features[start : start + chunk]), dtype=torch.float32)
        values = (preconditioner.train_side(block).double() * preconditioner.query_side(block).double()).sum(dim=1)
        out[start : start + chunk] = values.numpy()
    return out


def percentile_ranks(influence: np.ndarray) -> np.ndarray:
    """Per query (column), each training example's percentile in [0, 1] (ties averaged)."""
    n = influence.shape[0]
    order = np.argsort(influence, axis=0, kind="stable")
    ranks = np.empty_like(influence, dtype=np.float64)
    np.put_along_axis(ranks, order, np.arange(n, dtype=np.float64)[:, None].repeat(influence.shape[1], 1), axis=0)
    # average ranks over ties so that equal influences get equal percentiles
    for column in range(influence.shape[1]):
        values = influence[:, column]
        unique, inverse = np.unique(values, return_inverse=True)
        if len(unique) < n:
            sums = np.bincount(inverse, weights=ranks[:, column])
            ranks[:, column] = (sums / np.bincount(inverse))[inverse]
    return ranks / max(1, n - 1)


def influence_scores(influence: np.ndarray, query_correct: np.ndarray) -> dict[str, np.ndarray]:
    """s_correct, s_incorrect (means over Q_C, Q_I) and rank_correct, rank_incorrect, rank_score.

    An empty query side gives NaN for its scores (the caller decides what to do about it).
    """
    query_correct = np.asarray(query_correct, dtype=bool)
    ranks = percentile_ranks(influence)
    n = influence.shape[0]

    def mean_over(matrix: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return matrix[:, mask].mean(axis=1) if mask.any() else np.full(n, np.nan)

    scores = {
        "s_correct": mean_over(influence, query_correct),
        "s_incorrect": mean_over(influence, ~query_correct),
        "rank_correct": mean_over(ranks, query_correct),
        "rank_incorrect": mean_over(ranks, ~query_correct),
    }
    scores["rank_score"] = rank_score(scores["rank_correct"], scores["rank_incorrect"])
    return scores


def rank_score(rank_correct: np.ndarray, rank_incorrect: np.ndarray) -> np.ndarray:
    """r = r_C - r_I: an example's mean percentile over the correct queries less that over the
    incorrect ones (NaN where either side has no queries)."""
    return rank_correct - rank_incorrect
