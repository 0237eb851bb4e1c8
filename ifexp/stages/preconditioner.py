"""The preconditioner H fitted on theta*'s training features: what the `scores` and
`self_influence` stages share (not a stage: it is fitted where it is used, never cached)."""

from __future__ import annotations

from typing import Any

from ifexp.cache import Artifact
from ifexp.influence.estimator import make_estimator_preconditioner
from ifexp.influence.features import StoredRows, read_kfac_factors, store_rows
from ifexp.influence.precondition import Preconditioner
from ifexp.schema import EstimatorConfig


def preconditioner_inputs(estimator: EstimatorConfig, train_store: Artifact) -> dict[str, Any]:
    """What the fitted preconditioner depends on: the training features and its own options."""
    return {"train": train_store.digest, "preconditioner": estimator.preconditioner, "damping": estimator.damping}


def fitted_preconditioner(estimator: EstimatorConfig, train_store: Artifact) -> tuple[Preconditioner, StoredRows]:
    """(H fitted on the training features, the training features): the features are read by rows,
    chunk by chunk, never whole (features.StoredRows)."""
    train_features = store_rows(train_store.path)
    preconditioner = make_estimator_preconditioner(estimator, read_kfac_factors(train_store.path))
    return preconditioner.fit(train_features), train_features
