"""Shared fixtures: the tiny random Llama (built once per session) and small data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.data import write_easy_cot

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_model_cfg():
    from ifexp.schema import ModelConfig, TinyModelConfig

    return ModelConfig(name="tiny_llama", source="tiny", tiny=TinyModelConfig(), max_seq_len=256)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_cfg, cache_dir) -> str:
    from ifexp.stages.base_model import prepare_model

    return prepare_model(tiny_model_cfg, cache_dir)


@pytest.fixture(scope="session")
def small_splits():
    from ifexp.data import build_splits
    from ifexp.schema import DatasetConfig

    return build_splits(DatasetConfig(n_train=24, n_val=8, n_test=8, flaw_fraction=0.25))


@pytest.fixture(scope="session")
def easy_cot(tmp_path_factory) -> Path:
    return write_easy_cot(tmp_path_factory.mktemp("easy") / "easy.jsonl")
