"""Stage `perplexity`: each training example's perplexity under the trainee's base model (the
perplexity baseline, and the perplexity column of scores.csv). Keyed by the base model, the
examples' content and the model config."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ifexp.cache import Artifact, Stage
from ifexp.examples import Example, examples_digest
from ifexp.models import model_slice
from ifexp.schema import ModelConfig
from ifexp.signals import perplexities

STAGE = Stage("perplexity", __name__)


def build_perplexity(
    cache_dir: Path, base: Artifact, model_cfg: ModelConfig, train: list[Example], batch_size: int
) -> Artifact:
    inputs = {"base": base.digest, "examples": examples_digest(train), "model": model_slice(model_cfg)}

    def build(out: Path) -> dict:
        values = perplexities(str(base), train, model_cfg, batch_size)
        np.save(out / "perplexity.npy", values)
        return {"n": len(values), "median": float(np.median(values))}

    return STAGE.get(cache_dir, inputs, build)


def read_perplexity(artifact: Artifact) -> np.ndarray:
    return np.load(artifact / "perplexity.npy")
