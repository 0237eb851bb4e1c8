"""Build an estimator's projector and preconditioner from its config."""

from __future__ import annotations

from torch import nn

from ifexp.influence.capture import trainable_linears
from ifexp.influence.precondition import Preconditioner, make_preconditioner
from ifexp.influence.project import (
    DenseProjector,
    ExactProjector,
    KroneckerProjector,
    Projector,
    SparseJLProjector,
)
from ifexp.schema import EstimatorConfig


def layer_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {name: tuple(layer.weight.shape) for name, layer in trainable_linears(model).items()}


def make_projector(cfg: EstimatorConfig, model: nn.Module) -> Projector:
    shapes = layer_shapes(model)
    if cfg.projection == "sjlt":
        return SparseJLProjector(cfg.k, cfg.seed)
    if cfg.projection in ("gaussian", "rademacher"):
        return DenseProjector(cfg.k, cfg.seed, kind=cfg.projection)
    if cfg.projection == "kronecker":
        return KroneckerProjector(shapes, cfg.k_in, cfg.k_out, cfg.seed)
    if cfg.projection == "none":
        return ExactProjector(shapes)
    raise ValueError(f"estimator.projection='{cfg.projection}': expected sjlt, gaussian, rademacher, kronecker, none")


def make_estimator_preconditioner(cfg: EstimatorConfig) -> Preconditioner:
    return make_preconditioner(cfg.preconditioner, cfg.damping)
