"""Stage `scores`: I(d, q) = phi(q)^T H^-1 phi(d) for every training example d and query q, and
the paper's per-example scores s_C, s_I and their rank versions r_C, r_I (ifexp.influence.score).

Keyed by the training and query feature stores, the queries' grades, the preconditioner and its
damping, and the query rank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ifexp.cache import Artifact, Stage, content_hash
from ifexp.influence.features import read_store
from ifexp.influence.score import influence_matrix, influence_scores
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
        _, query_features = read_store(query_store.path)
        influence = influence_matrix(train_features, query_features, preconditioner, query_rank=estimator.query_rank)
        np.save(out / "influence.npy", influence)
        np.savez(out / "scores.npz", correct=correct, **influence_scores(influence, correct))
        return {"n_train": influence.shape[0], "n_correct": int(correct.sum()), "n_incorrect": int((~correct).sum())}

    return STAGE.get(cache_dir, inputs, build)


def read_scores(artifact: Artifact) -> dict[str, np.ndarray]:
    """s_correct, s_incorrect, rank_correct, rank_incorrect: one value per training example."""
    with np.load(artifact / "scores.npz") as saved:
        return {name: saved[name] for name in SCORE_NAMES}
