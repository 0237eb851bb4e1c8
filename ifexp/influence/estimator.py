"""Build an estimator's projector and preconditioner from its config."""

from __future__ import annotations

from torch import nn

from ifexp.influence.capture import trainable_linears
from ifexp.influence.precondition import KFAC, Preconditioner, make_preconditioner
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


def make_estimator_preconditioner(cfg: EstimatorConfig, kfac_factors: dict[str, dict] | None = None) -> Preconditioner:
    """kfac_factors: {"input_cov": ..., "grad_cov": ...} as saved beside a Kronecker feature store."""
    if cfg.preconditioner == "kfac":
        if cfg.projection != "kronecker" or kfac_factors is None:
            raise ValueError(
                "estimator.preconditioner=kfac needs estimator.projection=kronecker (its layer statistics)"
            )
        return KFAC(kfac_factors["input_cov"], kfac_factors["grad_cov"], cfg.damping)
    return make_preconditioner(cfg.preconditioner, cfg.damping)
