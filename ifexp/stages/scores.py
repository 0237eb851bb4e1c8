"""Stage `scores`: I(d, q) = phi(q)^T H^-1 phi(d) for every training example d and query q, and
the paper's per-example scores s_C, s_I and their rank versions r_C, r_I (ifexp.influence.score).

Keyed by the training and query feature stores, the queries' grades, the preconditioner and its
damping, and the query rank.

In bounded memory, whatever N: the preconditioner is fitted over chunks of the training store
(stages.preconditioner), the N x Q influence is computed 8,192 training rows at a time and written
to influence.npy as it comes (and, query by query, to a temporary query-major copy), s_C and s_I
are taken from each block of rows, and the percentile ranks from each query's column over all N,
read back from the query-major copy. What is held at once: the fit (k x k float64 twice, at most), a
block of rows, the queries, and a few N-vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ifexp.cache import Artifact, Stage, content_hash
from ifexp.influence.features import NpyWriter, StoredRows, store_rows
from ifexp.influence.score import ScoreAccumulator, influence_blocks
from ifexp.schema import EstimatorConfig
from ifexp.stages.preconditioner import fitted_preconditioner, preconditioner_inputs

STAGE = Stage("scores", __name__)
# what read_scores returns (the per-example arrays of scores.npz)
SCORE_NAMES = ("s_correct", "s_incorrect", "rank_correct", "rank_incorrect")


def build_scores(
    cache_dir: Path, estimator: EstimatorConfig, train_store: Artifact, query_store: Artifact, correct: np.ndarray
) -> Artifact:
    """I(d, q) for every training example and query (correct: each query's grade), and the scores."""
    inputs = {
        **preconditioner_inputs(estimator, train_store),
        "queries": query_store.digest,
        "correct": content_hash(correct.astype(int).tolist()),
        "query_rank": estimator.query_rank,
    }

    def build(out: Path) -> dict:
        preconditioner, train_features = fitted_preconditioner(estimator, train_store)
        query_features = np.asarray(store_rows(query_store.path))
        scores = streamed_scores(
            out, train_features, query_features, preconditioner, correct, query_rank=estimator.query_rank
        )
        np.savez(out / "scores.npz", correct=correct, **scores)
        return {"n_train": len(train_features), "n_correct": int(correct.sum()), "n_incorrect": int((~correct).sum())}

    return STAGE.get(cache_dir, inputs, build)


def streamed_scores(
    out: Path, train_features, query_features: np.ndarray, preconditioner, correct: np.ndarray, query_rank: int = 0
) -> dict[str, np.ndarray]:
    """influence.npy (N x Q float32) written into `out` block by block, and the scores, with one
    block of rows and one query's column in memory at a time (ScoreAccumulator: the same values
    as influence_scores on the whole matrix)."""
    n, n_queries = len(train_features), len(query_features)
    scores = ScoreAccumulator(n, correct)
    by_query_path = out / ".influence-by-query.tmp"  # Q x N float32: each query's column, contiguous
    by_query = NpyWriter(by_query_path, (n_queries, n), np.float32)
    influence = NpyWriter(out / "influence.npy", (n, n_queries), np.float32)
    try:
        for start, block in influence_blocks(train_features, query_features, preconditioner, query_rank=query_rank):
            influence.write(start, block)
            scores.add_rows(start, block)
            by_query.write_columns(start, block.T)
    finally:
        influence.close()
        by_query.close()
    columns = StoredRows(by_query_path)
    for query in range(n_queries):
        scores.add_query(query, columns[query : query + 1][0])
    by_query_path.unlink()
    return scores.result()


def read_scores(artifact: Artifact) -> dict[str, np.ndarray]:
    """s_correct, s_incorrect, rank_correct, rank_incorrect: one value per training example."""
    with np.load(artifact / "scores.npz") as saved:
        return {name: saved[name] for name in SCORE_NAMES}
