"""A run directory holds one job: a job of another config does not write over a finished one."""

import json

import pytest
import yaml
from helpers.config import with_values
from omegaconf import OmegaConf

from ifexp.job_identity import claim_run_dir, config_digest
from ifexp.schema import IfexpError

CONFIG = {
    "seed": 0,
    "pruning": {"strategy": "combined", "fraction": 0.25, "combine": "rank"},
    "train": {"lr": 0.002},
    "eval": {"max_new_tokens": "${dataset.max_new_tokens}", "benchmarks": ["leg_counting"]},
    "dataset": {"max_new_tokens": 160},
    "paths": {"cache_dir": "outputs/cache"},
    "logger": {"name": "wandb", "mode": "offline"},
    "engine": {"reuse": "auto", "kv_cache_gib": 4},
}


def hydra_files(config):
    return {"config.yaml": OmegaConf.to_yaml(OmegaConf.create(config)), "overrides.yaml": "[]\n"}


def finish(run_dir, config):
    """What a finished job leaves: .hydra/ (claim_run_dir) and metrics.json with its digest."""
    digest = claim_run_dir(run_dir, config, hydra_files(config))
    (run_dir / "metrics.json").write_text(json.dumps({"strategy": "combined", "config_digest": digest}))
    (run_dir / "selection.json").write_text("kept by the finished job")
    return digest


def test_digest_is_the_same_from_the_job_and_from_its_saved_config(tmp_path):
    """The report recomputes the digest from .hydra/config.yaml: it must match the job's own."""
    saved = yaml.safe_load(OmegaConf.to_yaml(OmegaConf.create(CONFIG)))
    assert config_digest(saved) == config_digest(CONFIG)


def test_settings_that_cannot_change_a_result_do_not_change_the_digest():
    elsewhere = {"paths.cache_dir": "/shared/cache", "logger.mode": "online", "engine.reuse": "never"}
    assert config_digest(with_values(CONFIG, elsewhere)) == config_digest(CONFIG)
    for changes in ({"pruning.combine": "zscore"}, {"train.lr": 0.01}, {"seed": 1}, {"dataset.max_new_tokens": 200}):
        assert config_digest(with_values(CONFIG, changes)) != config_digest(CONFIG), changes


def test_a_job_of_another_config_is_refused_and_the_finished_one_stays(tmp_path):
    finish(tmp_path, CONFIG)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    zscore = with_values(CONFIG, {"pruning.combine": "zscore"})
    with pytest.raises(IfexpError) as error:
        claim_run_dir(tmp_path, zscore, hydra_files(zscore))
    assert str(error.value) == (
        f"{tmp_path} holds a finished job of another config (pruning.combine: rank -> zscore); refusing to write "
        "over it: choose another hydra.run.dir, or hydra.sweep.dir / hydra.sweep.subdir for a multirun"
    )
    assert {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_the_same_config_may_run_again_where_it_finished(tmp_path):
    digest = finish(tmp_path, CONFIG)
    moved_cache = with_values(CONFIG, {"paths.cache_dir": "/elsewhere"})
    assert claim_run_dir(tmp_path, moved_cache, hydra_files(moved_cache)) == digest


def test_a_finished_job_from_before_digests_is_matched_by_its_saved_config(tmp_path):
    finish(tmp_path, CONFIG)
    (tmp_path / "metrics.json").write_text(json.dumps({"strategy": "combined"}))
    assert claim_run_dir(tmp_path, CONFIG, hydra_files(CONFIG)) == config_digest(CONFIG)
    with pytest.raises(IfexpError, match="train.lr: 0.002 -> 0.01"):
        claim_run_dir(tmp_path, with_values(CONFIG, {"train.lr": 0.01}), hydra_files(CONFIG))


def test_an_unfinished_job_of_another_config_is_replaced_and_the_log_says_so(tmp_path, caplog):
    claim_run_dir(tmp_path, CONFIG, hydra_files(CONFIG))  # started, never finished
    other = with_values(CONFIG, {"seed": 3})
    claim_run_dir(tmp_path, other, hydra_files(other))
    assert "held an unfinished job of another config (seed: 0 -> 3)" in caplog.text
    assert yaml.safe_load((tmp_path / ".hydra" / "config.yaml").read_text())["seed"] == 3


def test_a_job_finished_before_engine_reuse_could_not_change_a_result_is_still_that_job(tmp_path):
    """Its metrics.json records the digest ifexp computed then, with engine.reuse counted (the value
    below, from that code): the same config may run there again, another is refused."""
    claim_run_dir(tmp_path, CONFIG, hydra_files(CONFIG))
    (tmp_path / "metrics.json").write_text(json.dumps({"strategy": "combined", "config_digest": "e7e086ee22bc22ee"}))
    assert claim_run_dir(tmp_path, CONFIG, hydra_files(CONFIG)) == config_digest(CONFIG) != "e7e086ee22bc22ee"
    with pytest.raises(IfexpError, match="train.lr: 0.002 -> 0.01"):
        claim_run_dir(tmp_path, with_values(CONFIG, {"train.lr": 0.01}), hydra_files(CONFIG))
