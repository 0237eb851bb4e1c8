"""Shared fixtures: the tiny random Llama (built once per session) and small data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_model_cfg():
    from ifexp.schema import ModelConfig

    return ModelConfig(name="tiny_llama", source="tiny", max_seq_len=256)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_cfg, cache_dir) -> str:
    from ifexp.models import prepare_model

    return prepare_model(tiny_model_cfg, cache_dir)


@pytest.fixture(scope="session")
def small_splits():
    from ifexp.data import build_splits
    from ifexp.schema import DatasetConfig

    return build_splits(DatasetConfig(n_train=24, n_val=8, n_test=8, flaw_fraction=0.25))


def write_easy_cot(path: Path, n: int = 60) -> Path:
    """A CoT file (DESIGN.md JSONL contract) a tiny model can half-learn in seconds.

    Three quarters of the answers are 7, so a fine-tuned tiny model that always says 7 gets
    those validation questions right and the rest wrong: both query sets are non-empty.
    Every tenth trace is flawed (its final answer is wrong) and labelled.
    """
    import json
    import random

    rng = random.Random(0)
    with path.open("w") as handle:
        for i in range(n):
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            answer = "7" if i % 4 else str(a + b)
            flaw = "wrong_final_answer" if i % 10 == 3 else ""
            cot = f"We add the numbers.\n#### {'9' if flaw else answer}"
            record = {"id": f"easy-{i}", "question": f"Add {a} and {b}.", "cot": cot, "answer": answer, "flaw": flaw}
            handle.write(json.dumps(record) + "\n")
    return path


# Overrides that make the tiny model learn the easy set (full fine-tuning, a few epochs).
EASY_TRAINING = ["dataset=jsonl", "dataset.n_val=16", "train=full", "train.epochs=6", "train.lr=3e-3"]


@pytest.fixture(scope="session")
def easy_cot(tmp_path_factory) -> Path:
    return write_easy_cot(tmp_path_factory.mktemp("easy") / "easy.jsonl")
