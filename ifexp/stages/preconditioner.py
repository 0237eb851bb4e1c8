"""The preconditioner H fitted on theta*'s training features: what the `scores` and
`self_influence` stages share (not a stage: it is fitted where it is used, never cached)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ifexp.cache import Artifact
from ifexp.influence.estimator import make_estimator_preconditioner
from ifexp.influence.features import read_kfac_factors, read_store
from ifexp.influence.precondition import Preconditioner
from ifexp.schema import EstimatorConfig


def preconditioner_inputs(estimator: EstimatorConfig, train_store: Artifact) -> dict[str, Any]:
    """What the fitted preconditioner depends on: the training features and its own options."""
    return {"train": train_store.digest, "preconditioner": estimator.preconditioner, "damping": estimator.damping}


def fitted_preconditioner(estimator: EstimatorConfig, train_store: Artifact) -> tuple[Preconditioner, np.ndarray]:
    """(H fitted on the training features, the training features)."""
    _, train_features = read_store(train_store.path)
    preconditioner = make_estimator_preconditioner(estimator, read_kfac_factors(train_store.path))
    return preconditioner.fit(torch.tensor(np.asarray(train_features), dtype=torch.float32)), train_features
