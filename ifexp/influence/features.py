"""Projected per-example gradient features, written to a memory-mapped store.

A store is a folder with `features.npy` (N x k, float16 or float32, opened as a memmap) and
`ids.json`; the artifact cache (ifexp.cache) keys it by the model weights, the data and the
estimator config, so every job of a sweep reuses it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ifexp.checkpointing import checkpointed, use_checkpointing
from ifexp.distributed import gather_rows, shard, sum_across
from ifexp.influence.capture import LayerRecorder, forward_backward, trainable_linears
from ifexp.influence.project import Projector


class NonFiniteFeatures(FloatingPointError):
    """NaN or Inf in an example's projected gradient; `index` is the example's position."""

    def __init__(self, index: int):
        super().__init__(f"non-finite gradient features for example #{index}")
        self.index = index


def extract_features(
    model: nn.Module,
    rows: Sequence[tuple[list[int], int]],
    projector: Projector,
    collate_fn,
    batch_size: int = 8,
    desc: str = "features",
    compute_dtype: str = "float32",
    gradient_checkpointing: str = "never",
) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, k) float32, losses (N,)) for (input_ids, n_prompt_tokens) rows, in order.

    Each layer is projected as soon as its output gradient arrives in the backward pass
    (capture.LayerRecorder's on_layer), so nothing but the layer in hand is kept beyond what the
    backward pass itself holds. gradient_checkpointing is train.gradient_checkpointing's setting
    (auto: on when the longest row has ifexp.checkpointing.AUTO_MIN_TOKENS tokens or more); it cannot
    change the features.

    In a multi-process run (ifexp.distributed) each process takes a contiguous shard of whole
    batches and every process returns all N rows; K-FAC statistics are summed over shards.
    """
    longest = max((len(ids) for ids, _ in rows), default=0)
    start_row, stop_row = shard(len(rows), batch_size)
    offset, rows = start_row, rows[start_row:stop_row]
    layers = trainable_linears(model)
    if not layers:
        raise ValueError("the model has no trainable Linear layers to take gradients of")
    index = {name: position for position, name in enumerate(layers)}
    parts: dict[str, torch.Tensor] = {}

    def project(name: str, inputs: torch.Tensor, grads: torch.Tensor) -> None:
        with torch.no_grad():
            parts[name] = projector.project_layer(index[name], name, inputs, grads, recorder.token_mask)

    recorder = LayerRecorder(layers, on_layer=project)
    model.eval()  # no dropout: the gradient is that of the deterministic loss
    device = next(model.parameters()).device
    features = np.empty((len(rows), projector.k), dtype=np.float32)
    losses = np.empty(len(rows), dtype=np.float32)
    with checkpointed(model, use_checkpointing(gradient_checkpointing, longest)):
        for start in tqdm(range(0, len(rows), batch_size), desc=desc, leave=False):
            batch = {name: t.to(device) for name, t in collate_fn(list(rows[start : start + batch_size])).items()}
            batch_losses = forward_backward(model, recorder, batch, compute_dtype)
            with torch.no_grad():
                phi = projector.join([parts.pop(name) for name in layers], recorder.token_mask).cpu()
            if not torch.isfinite(phi).all():
                bad = start + int((~torch.isfinite(phi).all(dim=1)).nonzero()[0, 0])
                raise NonFiniteFeatures(offset + bad)
            features[start : start + len(batch_losses)] = phi.numpy()
            losses[start : start + len(batch_losses)] = batch_losses.cpu().numpy()
    recorder.clear()
    if getattr(projector, "input_cov", None):
        for stats in (projector.input_cov, projector.grad_cov):
            sum_across(stats)
            stats.update({name: value.cpu() for name, value in stats.items()})
    return gather_rows(features), gather_rows(losses)


def write_store(
    folder: Path, ids: Sequence[str], features: np.ndarray, dtype: str = "float32", projector: Projector | None = None
) -> None:
    """Features (+ the K-FAC factors a Kronecker projector gathered, for the kfac estimator)."""
    folder.mkdir(parents=True, exist_ok=True)
    if getattr(projector, "input_cov", None):
        torch.save({"input_cov": projector.input_cov, "grad_cov": projector.grad_cov}, folder / "kfac_factors.pt")
    array = np.lib.format.open_memmap(folder / "features.npy", mode="w+", dtype=dtype, shape=features.shape)
    array[:] = features
    array.flush()
    (folder / "ids.json").write_text(json.dumps(list(ids)))


def read_kfac_factors(folder: Path) -> dict | None:
    path = folder / "kfac_factors.pt"
    return torch.load(path) if path.is_file() else None


def read_store(folder: Path) -> tuple[list[str], np.ndarray]:
    """(ids, features as a read-only memmap)."""
    return json.loads((folder / "ids.json").read_text()), np.load(folder / "features.npy", mmap_mode="r")
