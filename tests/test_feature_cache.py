"""Features of the fine-tuned model are computed once and reused from the cache."""

from dataclasses import replace

import numpy as np

from ifexp.cache import read_manifest
from ifexp.influence.features import read_store
from ifexp.pipeline import dataset_stage, features_stage, sft_stage
from ifexp.schema import DatasetConfig, EstimatorConfig, JobConfig, TrainConfig


def fine_tuned(tiny_model: str, tiny_model_cfg, cache_dir, n_train: int):
    """(job config, splits, theta*'s sft artifact) of a 2-step fine-tuning on n_train examples."""
    cfg = JobConfig(
        model=tiny_model_cfg,
        dataset=DatasetConfig(n_train=n_train, n_val=4, n_test=4),
        train=TrainConfig(max_steps=2, batch_size=4, lr=1e-2),
        estimator=EstimatorConfig(projection="sjlt", k=256, batch_size=4),
    )
    _, splits = dataset_stage(cfg, cache_dir)
    return cfg, splits, sft_stage(cfg, cache_dir, cfg.model, tiny_model, splits["train"], cfg.seed)


def test_second_run_hits_the_feature_cache(tiny_model, tiny_model_cfg, tmp_path, monkeypatch):
    cfg, splits, sft_dir = fine_tuned(tiny_model, tiny_model_cfg, tmp_path, n_train=12)
    first = features_stage(cfg, tmp_path, cfg.model, tiny_model, sft_dir, splits["train"], "train")
    ids, features = read_store(first)
    assert ids == [e.id for e in splits["train"]] and features.shape == (12, 256)
    assert np.abs(features).sum() > 0

    # The second call must not extract anything: make extraction fail if it is attempted.
    import ifexp.influence.features as features_module

    monkeypatch.setattr(features_module, "extract_features", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    second = features_stage(cfg, tmp_path, cfg.model, tiny_model, sft_dir, splits["train"], "train")
    assert second == first and read_manifest(second)["n"] == 12
    # A different preconditioner shares the store; a different projection does not.
    shared = replace(cfg, estimator=replace(cfg.estimator, preconditioner="grad_dot"))
    assert features_stage(shared, tmp_path, shared.model, tiny_model, sft_dir, splits["train"], "train") == first


def test_step_mean_features_are_a_store_of_their_own(tiny_model, tiny_model_cfg, tmp_path):
    cfg, splits, sft_dir = fine_tuned(tiny_model, tiny_model_cfg, tmp_path, n_train=8)
    stores = {
        weighting: features_stage(
            replace(cfg, estimator=replace(cfg.estimator, loss_weighting=weighting)),
            tmp_path,
            cfg.model,
            tiny_model,
            sft_dir,
            splits["train"],
            "train",
        )
        for weighting in ("token_mean", "step_mean")
    }
    assert stores["token_mean"] != stores["step_mean"]
    token_mean, step_mean = (np.asarray(read_store(store)[1]) for store in stores.values())
    assert token_mean.shape == step_mean.shape and not np.allclose(token_mean, step_mean)
