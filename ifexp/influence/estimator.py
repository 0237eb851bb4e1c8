"""Build an estimator's projector and preconditioner from its config.

The projections (`project.PROJECTIONS`) and preconditioners (`precondition.PRECONDITIONERS`) are
registries: a class that declares its name is an allowed estimator.projection /
estimator.preconditioner value (`choices`, read by ifexp.validation) and is built from here.
"""

from __future__ import annotations

from torch import nn

from ifexp.influence.capture import trainable_linears
from ifexp.influence.precondition import PRECONDITIONERS, Preconditioner, make_preconditioner
from ifexp.influence.project import PROJECTIONS, Projector
from ifexp.schema import EstimatorConfig, IfexpError


def choices() -> dict[str, tuple[str, ...]]:
    """The registered projections and preconditioners, as config keys -> allowed values."""
    return {"estimator.projection": tuple(PROJECTIONS), "estimator.preconditioner": tuple(PRECONDITIONERS)}


def _projection_mismatch(cfg: EstimatorConfig) -> str | None:
    """What is wrong when the preconditioner is fitted from another projection's statistics."""
    needed = PRECONDITIONERS[cfg.preconditioner].needs_projection if cfg.preconditioner in PRECONDITIONERS else None
    if needed is not None and cfg.projection != needed:
        return f"estimator.preconditioner={cfg.preconditioner} needs estimator.projection={needed}"
    return None


def check(cfg: EstimatorConfig) -> None:
    """What schema.validate cannot say without the registries: the preconditioner's projection."""
    mismatch = _projection_mismatch(cfg)
    if mismatch:
        raise IfexpError(mismatch)


def layer_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {name: tuple(layer.weight.shape) for name, layer in trainable_linears(model).items()}


def make_projector(cfg: EstimatorConfig, model: nn.Module) -> Projector:
    """The projector cfg.projection names, for the model's trainable layers."""
    return PROJECTIONS[cfg.projection].from_config(cfg, layer_shapes(model))


def make_estimator_preconditioner(cfg: EstimatorConfig, kfac_factors: dict[str, dict] | None = None) -> Preconditioner:
    """kfac_factors: {"input_cov": ..., "grad_cov": ...} as saved beside a Kronecker feature store."""
    mismatch = _projection_mismatch(cfg)
    if mismatch:
        raise ValueError(f"{mismatch} (its layer statistics)")
    return make_preconditioner(cfg.preconditioner, cfg.damping, kfac_factors)
