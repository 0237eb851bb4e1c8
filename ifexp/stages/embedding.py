"""Stage `embedding`: the embedding baseline's removal score per training example, from
all-MiniLM-L6-v2 sentence embeddings (versioned by its package): the distance of each question
to the validation questions' centroid, or the redundancy of each (question, trace) among the
others. Keyed by the training and validation examples' content and the mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ifexp.cache import Artifact, Stage
from ifexp.examples import Example, examples_digest
from ifexp.schema import IfexpError
from ifexp.signals import centroid_distance, embed, redundancy

STAGE = Stage("embedding", __name__)


def build_embedding(cache_dir: Path, mode: str, train: list[Example], val: list[Example]) -> Artifact:
    inputs = {"train": examples_digest(train), "val": examples_digest(val), "mode": mode}

    def build(out: Path) -> dict:
        if mode == "centroid":
            if not val:
                raise IfexpError("pruning=embedding with embedding_mode=centroid needs validation questions")
            score = centroid_distance(embed([e.question for e in train]), embed([e.question for e in val]))
        else:
            score = redundancy(embed([f"{e.question}\n{e.cot}" for e in train]))
        np.save(out / "embedding.npy", score)
        return {"n": len(score), "mode": mode}

    return STAGE.get(cache_dir, inputs, build)


def read_embedding(artifact: Artifact) -> np.ndarray:
    return np.load(artifact / "embedding.npy")
