"""Stage `theta_loss`: each training example's loss under theta* (mean response-token
cross-entropy; forward passes only), the θ*-loss baseline. Keyed by theta*, the examples'
content and the model config."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ifexp.cache import Artifact, Stage
from ifexp.examples import Example, examples_digest
from ifexp.models import Checkpoint, model_slice
from ifexp.schema import ModelConfig
from ifexp.signals import perplexities

STAGE = Stage("theta_loss", __name__)


def build_theta_loss(
    cache_dir: Path, theta_star: Checkpoint, model_cfg: ModelConfig, train: list[Example], batch_size: int
) -> Artifact:
    inputs = {"checkpoint": theta_star.identity, "examples": examples_digest(train), "model": model_slice(model_cfg)}

    def build(out: Path) -> dict:
        values = np.log(perplexities(theta_star.model_path, train, model_cfg, batch_size, theta_star.adapter))
        np.save(out / "theta_loss.npy", values)
        return {"n": len(values), "mean": float(values.mean())}

    return STAGE.get(cache_dir, inputs, build)


def read_theta_loss(artifact: Artifact) -> np.ndarray:
    return np.load(artifact / "theta_loss.npy")
