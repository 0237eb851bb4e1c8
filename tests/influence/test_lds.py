"""LDS pieces: subsets, the sign of the prediction, and the score itself."""

import numpy as np
import pytest

from ifexp.influence.lds import linear_datamodeling_score, predicted_losses, subset_masks


def test_subset_masks_are_seeded_and_sized():
    masks = subset_masks(10, 6, 0.5, seed=1)
    assert masks.shape == (6, 10) and (masks.sum(axis=1) == 5).all()
    assert (masks == subset_masks(10, 6, 0.5, seed=1)).all()
    assert not (masks == subset_masks(10, 6, 0.5, seed=2)).all()
    with pytest.raises(ValueError, match="fraction"):
        subset_masks(10, 2, 1.0)


def test_a_linear_datamodel_scores_one_and_its_opposite_minus_one():
    rng = np.random.default_rng(0)
    influence = rng.normal(size=(20, 3))
    masks = subset_masks(20, 30, 0.5, seed=0)
    # a world where training on d lowers the loss on q by exactly I(d, q)
    actual = 2.0 - masks @ influence
    assert linear_datamodeling_score(predicted_losses(influence, masks), actual) == pytest.approx(1.0)
    assert linear_datamodeling_score(predicted_losses(-influence, masks), actual) == pytest.approx(-1.0)
    noise = linear_datamodeling_score(predicted_losses(rng.normal(size=(20, 3)), masks), actual)
    assert abs(noise) < 0.6
