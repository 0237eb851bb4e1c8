"""Stage `self_influence`: I(d, d) = phi(d)^T H^-1 phi(d) for every training example, how much a
step on d lowers d's own loss (the self_influence baseline). Keyed by the training feature store
and the preconditioner's options."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ifexp.cache import Artifact, Stage
from ifexp.influence.score import self_influence
from ifexp.schema import EstimatorConfig
from ifexp.stages.preconditioner import fitted_preconditioner, preconditioner_inputs

STAGE = Stage("self_influence", __name__)


def build_self_influence(cache_dir: Path, estimator: EstimatorConfig, train_store: Artifact) -> Artifact:
    def build(out: Path) -> dict:
        preconditioner, train_features = fitted_preconditioner(estimator, train_store)
        values = self_influence(train_features, preconditioner)
        np.save(out / "self_influence.npy", values)
        return {"n_train": len(values), "mean": float(values.mean())}

    return STAGE.get(cache_dir, preconditioner_inputs(estimator, train_store), build)


def read_self_influence(artifact: Artifact) -> np.ndarray:
    return np.load(artifact / "self_influence.npy")
