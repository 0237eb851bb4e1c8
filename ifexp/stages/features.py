"""Stage `features`: the projected gradient features phi(z) of examples at theta* (training traces,
or queries), in a memmap store (ifexp.influence.features), reused by every job and estimator that
shares the projection.

Keyed by the checkpoint, the examples' content, the projection config and the model config; the
preconditioner is not in the key (it keys the scores), so estimators sharing a projection share
the store.
"""

from __future__ import annotations

from pathlib import Path

from ifexp.cache import Artifact, Stage, config_slice
from ifexp.distributed import local_device, rank_and_world, run_sharded
from ifexp.examples import Example, examples_digest
from ifexp.influence.estimator import make_projector
from ifexp.influence.features import NonFiniteFeatures, NpyWriter, extract_features, write_store
from ifexp.models import Checkpoint, load_for_gradients, load_tokenizer, model_slice
from ifexp.schema import ComputeConfig, EstimatorConfig, IfexpError, ModelConfig
from ifexp.train import collate, encode_examples, line_break_ids

STAGE = Stage("features", __name__)
# which projection the features use: the preconditioner and scoring options key the scores;
# batch_size only groups the examples (per-example gradients do not depend on it)
NOT_IN_KEY = ("name", "preconditioner", "damping", "query_rank", "batch_size")


def build_features(
    cache_dir: Path,
    estimator: EstimatorConfig,
    model_cfg: ModelConfig,
    model: Checkpoint,
    examples: list[Example],
    split_key: str,
    compute: ComputeConfig,
    gradient_checkpointing: str = "auto",
) -> Artifact:
    """The feature store of these examples at this checkpoint (`split_key` names them in logs).

    gradient_checkpointing: the job's train.gradient_checkpointing (the features follow the
    fine-tuning's setting; auto decides on the longest of these examples). Not in the key: it
    cannot change the features (schema.CANNOT_CHANGE_A_RESULT)."""
    inputs = {
        "checkpoint": model.identity,
        "examples": examples_digest(examples),
        "projection": config_slice(estimator, exclude=NOT_IN_KEY),
        "model": model_slice(model_cfg),
    }
    kwargs = dict(
        est=estimator,
        model_cfg=model_cfg,
        model_path=model.model_path,
        adapter=model.adapter,
        examples=examples,
        split_key=split_key,
        gradient_checkpointing=gradient_checkpointing,
    )
    return STAGE.get(
        cache_dir,
        inputs,
        lambda out: run_sharded(extract_feature_store, {**kwargs, "out": out}, compute.num_processes, compute.launcher),
    )


def extract_feature_store(
    est: EstimatorConfig,
    model_cfg: ModelConfig,
    model_path: str,
    adapter: str | None,
    examples: list[Example],
    split_key: str,
    out: Path,
    gradient_checkpointing: str = "auto",
) -> dict:
    """The features stage's work; in a multi-process run every process extracts a shard, rank 0 writes."""
    tokenizer = load_tokenizer(model_path)
    encoded = encode_examples(tokenizer, examples, model_cfg, "truncate")
    if encoded.n_rejected:
        raise IfexpError(
            f"features [{split_key}]: {encoded.n_rejected} examples have prompts that fill "
            f"model.max_seq_len={model_cfg.max_seq_len}: raise it"
        )
    model = load_for_gradients(model_path, adapter).to(local_device())
    rows = encoded.rows()
    projector = make_projector(est, model)
    step_ends = line_break_ids(tokenizer) if est.loss_weighting == "step_mean" else None
    rank = rank_and_world()[0]
    out.mkdir(parents=True, exist_ok=True)
    # every process writes its rows into the store as they come; the first writes the header
    writer = NpyWriter(out / "features.npy", (len(rows), projector.k), est.store_dtype, header=rank == 0)
    try:
        _, losses = extract_features(
            model,
            rows,
            projector,
            lambda b: collate(b, tokenizer.pad_token_id, step_ends),
            est.batch_size,
            desc=f"features [{split_key}]",
            compute_dtype=est.compute_dtype,
            gradient_checkpointing=gradient_checkpointing,
            writer=writer,
        )
    except NonFiniteFeatures as error:  # NaN/Inf gradients: name the example, keep nothing
        raise IfexpError(f"features [{split_key}]: {error} ({examples[error.index].id})") from None
    finally:
        writer.close()
    if rank == 0:
        write_store(out, [e.id for e in examples], None, est.store_dtype, projector)
    return {"n": len(examples), "k": projector.k, "n_truncated": encoded.n_truncated, "mean_loss": float(losses.mean())}
