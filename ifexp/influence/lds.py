"""Linear datamodeling score (LDS, Park et al. 2023, TRAK): do influence scores predict retraining?

Train M models, each on a random subset S_m of the training set, and measure every query's loss
under each. Influence predicts the loss of q after training on S_m as a sum over its members:
-sum_{d in S_m} I(d, q) (I > 0 means training on d lowers the loss on q), up to a constant
that does not change a rank. The LDS of a query is the Spearman correlation, across the M
subsets, of predicted and measured losses; the score is its mean over queries.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def subset_masks(n_train: int, n_subsets: int, fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """(M, N) boolean: which training examples each subset keeps (exactly round(fraction N) each)."""
    if not 0 < fraction < 1:
        raise ValueError(f"subset fraction {fraction}: must be in (0, 1)")
    rng = np.random.default_rng(seed)
    size = max(1, round(fraction * n_train))
    masks = np.zeros((n_subsets, n_train), dtype=bool)
    for row in masks:
        row[rng.choice(n_train, size=size, replace=False)] = True
    return masks


def predicted_losses(influence: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(M, Q) predicted query losses (up to a per-query constant) from (N, Q) influence."""
    return -masks.astype(np.float64) @ influence.astype(np.float64)


def column_spearman(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Spearman(left[:, q], right[:, q]) for every column q of two same-shape matrices."""
    if left.shape != right.shape:
        raise ValueError(f"matrices of shapes {left.shape} and {right.shape} differ in shape")
    return np.array([spearmanr(left[:, q], right[:, q])[0] for q in range(left.shape[1])])


def linear_datamodeling_score(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Mean over queries of Spearman(predicted[:, q], actual[:, q]) across the M subsets."""
    return float(np.nanmean(column_spearman(predicted, actual)))
