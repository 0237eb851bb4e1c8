"""Features of the fine-tuned model are computed once and reused from the cache."""

from dataclasses import replace

import numpy as np
import pytest

from ifexp.cache import read_manifest
from ifexp.influence.features import read_store
from ifexp.models import Checkpoint
from ifexp.schema import DatasetConfig, EstimatorConfig, JobConfig, TrainConfig
from ifexp.stages.dataset import build_dataset
from ifexp.stages.features import build_features
from ifexp.stages.sft import build_sft


def fine_tuned(tiny_model, tiny_model_cfg, cache_dir, n_train: int):
    """(job config, splits, theta*) of a 2-step fine-tuning on n_train examples."""
    cfg = JobConfig(
        model=tiny_model_cfg,
        dataset=DatasetConfig(n_train=n_train, n_val=4, n_test=4),
        train=TrainConfig(max_steps=2, batch_size=4, lr=1e-2),
        estimator=EstimatorConfig(projection="sjlt", k=256, batch_size=4),
    )
    data = build_dataset(cfg.dataset, cache_dir)
    sft = build_sft(cache_dir, tiny_model, data.train, cfg.model, cfg.train, cfg.seed, cfg.compute)
    return cfg, data, Checkpoint(tiny_model, sft, cfg.train.method)


def with_estimator(cfg: JobConfig, **changes) -> JobConfig:
    return replace(cfg, estimator=replace(cfg.estimator, **changes))


def test_second_run_hits_the_feature_cache(tiny_model, tiny_model_cfg, tmp_path, monkeypatch):
    cfg, data, theta = fine_tuned(tiny_model, tiny_model_cfg, tmp_path, n_train=12)

    def train_features(job: JobConfig):
        return build_features(tmp_path, job.estimator, job.model, theta, data.train, "train", job.compute)

    first = train_features(cfg)
    ids, stored = read_store(first)
    features = np.array(stored)  # a copy, not the store's memmap
    assert ids == [e.id for e in data.train] and features.shape == (12, 256)
    assert np.abs(features).sum() > 0

    # The second call must not extract anything: make extraction fail if it is attempted.
    import ifexp.stages.features as features_stage

    monkeypatch.setattr(features_stage, "extract_features", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    second = train_features(cfg)
    assert second == first and read_manifest(second)["n"] == 12
    # A different preconditioner shares the store; a different projection does not ...
    assert train_features(with_estimator(cfg, preconditioner="grad_dot", damping=0.5)) == first
    reprojected = with_estimator(cfg, seed=1)
    with pytest.raises(AssertionError):  # ... it extracts (so the patch above really was in the way)
        train_features(reprojected)
    monkeypatch.undo()
    other = train_features(reprojected)
    # ... into a store of its own, with other features (same shape: only the projection's seed differs)
    assert other != first and other.path != first.path
    other_ids, other_features = read_store(other)
    assert other_ids == ids and other_features.shape == features.shape
    assert not np.allclose(other_features, features)
    assert np.array_equal(read_store(first)[1], features)  # the first store is untouched


def test_step_mean_features_are_a_store_of_their_own(tiny_model, tiny_model_cfg, tmp_path):
    cfg, data, theta = fine_tuned(tiny_model, tiny_model_cfg, tmp_path, n_train=8)
    stores = {
        weighting: build_features(
            tmp_path,
            replace(cfg.estimator, loss_weighting=weighting),
            cfg.model,
            theta,
            data.train,
            "train",
            cfg.compute,
        )
        for weighting in ("token_mean", "step_mean")
    }
    assert stores["token_mean"] != stores["step_mean"]
    token_mean, step_mean = (np.asarray(read_store(store)[1]) for store in stores.values())
    assert token_mean.shape == step_mean.shape and not np.allclose(token_mean, step_mean)
