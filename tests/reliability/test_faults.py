"""Faults inside a job: disk full while writing features, NaN gradients, W&B unreachable."""

import errno
import logging
from pathlib import Path

import pytest

from ifexp.models import Checkpoint
from ifexp.schema import DatasetConfig, EstimatorConfig, IfexpError, JobConfig, LoggerConfig, TrainConfig
from ifexp.stages.dataset import build_dataset
from ifexp.stages.features import build_features
from ifexp.stages.sft import build_sft


@pytest.fixture
def trained(tiny_model, tiny_model_cfg, tmp_path):
    cfg = JobConfig(
        model=tiny_model_cfg,
        dataset=DatasetConfig(n_train=8, n_val=2, n_test=2),
        train=TrainConfig(max_steps=1, batch_size=4),
        estimator=EstimatorConfig(k=64, batch_size=4),
    )
    train = build_dataset(cfg.dataset, tmp_path).train
    return cfg, train, build_sft(tmp_path, tiny_model, train, cfg.model, cfg.train, 0, cfg.compute)


def leftovers(cache: Path) -> list[Path]:
    return list(cache.glob("features/.tmp-*")) + [p for p in cache.glob("features/*") if p.is_dir()]


def test_disk_full_while_writing_features(trained, tiny_model, tmp_path, monkeypatch):
    cfg, train, sft_dir = trained
    import ifexp.influence.features as features_module

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(features_module.os, "pwrite", no_space)  # the store's rows are written with pwrite
    with pytest.raises(IfexpError, match=r"disk full while writing the features artifact under .*: nothing was kept"):
        build_features(tmp_path, cfg.estimator, cfg.model, Checkpoint(tiny_model, sft_dir), train, "train", cfg.compute)
    assert leftovers(tmp_path) == []


def test_non_finite_gradients_name_the_example(trained, tiny_model, tmp_path, monkeypatch):
    cfg, train, sft_dir = trained
    import ifexp.influence.features as features_module

    class Poisoned(features_module.LayerRecorder):
        def _hand_over(self, name, grad):  # the second example of the batch gets NaN output gradients
            grad = grad.clone()
            grad[1] = float("nan")
            super()._hand_over(name, grad)

    monkeypatch.setattr(features_module, "LayerRecorder", Poisoned)
    with pytest.raises(IfexpError, match=rf"non-finite gradient features for example #1 \({train[1].id}\)"):
        build_features(tmp_path, cfg.estimator, cfg.model, Checkpoint(tiny_model, sft_dir), train, "train", cfg.compute)
    assert leftovers(tmp_path) == []


def test_wandb_unreachable_online_falls_back_to_offline(tmp_path, monkeypatch, caplog):
    from ifexp.tracking import Tracker

    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "20")
    with caplog.at_level(logging.WARNING):
        tracker = Tracker(LoggerConfig(mode="online"), tmp_path, {"a": 1}, "job", None)
    try:
        assert tracker.run is not None and tracker.run.settings.mode == "offline"
        tracker.summary({"pass@1/x": 0.5})
    finally:
        tracker.finish()
    assert any("W&B online unreachable" in r.message and "logging offline instead" in r.message for r in caplog.records)
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
