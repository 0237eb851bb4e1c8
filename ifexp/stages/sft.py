"""Stage `sft`: a model fine-tuned on exactly these examples with this seed (theta*, a pruned
model, Random's), as a LoRA adapter or full weights (ifexp.train, across processes with
ifexp.distributed).

Keyed by the content of the examples, not by how they were chosen: a strategy's "Random at the
same fraction and seed" is the very artifact Random's own job trains.
"""

from __future__ import annotations

from pathlib import Path

from ifexp.cache import Artifact, Stage, config_slice
from ifexp.distributed import run_sharded
from ifexp.examples import Example, examples_digest
from ifexp.models import model_slice
from ifexp.schema import ComputeConfig, ModelConfig, TrainConfig, resource_fields
from ifexp.train import finetune

STAGE = Stage("sft", __name__)
# gradient checkpointing cannot change a result (schema.CANNOT_CHANGE_A_RESULT)
NOT_IN_KEY = ("name", *resource_fields("train"))


def build_sft(
    cache_dir: Path,
    base: Artifact,
    examples: list[Example],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    seed: int,
    compute: ComputeConfig,
) -> Artifact:
    """Fine-tune `base` on exactly these examples with this seed."""
    inputs = {
        "base": base.digest,
        "data": examples_digest(examples),
        "train": config_slice(train_cfg, exclude=NOT_IN_KEY),
        "model": model_slice(model_cfg),
        "seed": seed,
    }
    kwargs = dict(base_path=str(base), examples=examples, model_cfg=model_cfg, train_cfg=train_cfg, seed=seed)
    return STAGE.get(
        cache_dir,
        inputs,
        lambda out: run_sharded(finetune, {**kwargs, "out_dir": out}, compute.num_processes, compute.launcher),
    )
