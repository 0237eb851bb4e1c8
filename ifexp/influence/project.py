"""Random projections of per-example gradients to k dimensions, behind one interface.

Every projector maps the recorded layer inputs / output gradients of a batch (capture.py) to
features phi (B, k) with E[phi(a) . phi(b)] = g(a) . g(b). All are seeded and deterministic;
none stores a dense d x k matrix:

- ExactProjector: no projection (small models, tests).
- DenseProjector: Gaussian or Rademacher, regenerated block by block from the seed.
- SparseJLProjector: sparse sign hashing (each coordinate to one bucket with a random sign).
- KroneckerProjector: LoGra-style; per layer, project inputs (k_in x in) and output gradients
  (k_out x out) and take the per-example outer product. Equals (P_out kron P_in) vec(grad),
  but the per-example gradient is never formed.

Each class declares the estimator.projection values it serves (`projections`) and how it is built
from an estimator config (`from_config`); defining it registers it in `PROJECTIONS`.

A projector works layer by layer (`project_layer`: one layer's part of every example's feature,
from that layer's inputs and output gradients) and then joins the parts in layer order (`join`),
so feature extraction can project each layer as its gradient arrives in the backward pass and keep
nothing else (capture.LayerRecorder's `on_layer`); `projector(recorder)` does both at once on a
recorder that kept the whole batch.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ifexp.influence.capture import LayerRecorder
from ifexp.registry import Registry
from ifexp.schema import EstimatorConfig

# estimator.projection -> the class that builds it, in definition order
PROJECTIONS: Registry[type[Projector]] = Registry("estimator.projection")


def _generator(seed: int, *salt: int) -> torch.Generator:
    # A distinct, reproducible stream per (seed, layer, block).
    value = seed
    for s in salt:
        value = (value * 1_000_003 + s + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


class Projector:
    """Maps a recorded batch to (B, k) features. A subclass that sets `projections` is registered
    under each of them."""

    k: int
    projections: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.__dict__.get("projections", ()):
            PROJECTIONS.register(name, cls)

    @classmethod
    def from_config(cls, cfg: EstimatorConfig, layer_shapes: dict[str, tuple[int, int]]) -> Projector:
        """The projector cfg.projection names, for trainable layers of these (out, in) shapes."""
        raise NotImplementedError

    def project_layer(
        self, index: int, name: str, inputs: torch.Tensor, grads: torch.Tensor, token_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Layer `name` (the index-th trainable layer)'s part of the batch's features, (B, ...)."""
        raise NotImplementedError

    def join(self, parts: list[torch.Tensor], token_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, k) features from every layer's part, in layer order: their sum, always in that order."""
        total = parts[0].clone()
        for part in parts[1:]:
            total += part
        return total

    def __call__(self, recorder: LayerRecorder) -> torch.Tensor:
        """The features of a batch that `recorder` kept whole."""
        parts = [
            self.project_layer(index, name, recorder.inputs[name], recorder.output_grads[name], recorder.token_mask)
            for index, name in enumerate(recorder.layers)
        ]
        return self.join(parts, recorder.token_mask)


def _example_gradients(inputs: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """(B, out * in): each example's weight gradient of one Linear layer, flattened."""
    return torch.einsum("bto,bti->boi", grads.float(), inputs.float()).flatten(1)


class SparseJLProjector(Projector):
    """Count-sketch: coordinate i goes to bucket h(i) with sign s(i); phi = sum_i s(i) g_i e_h(i)."""

    projections = ("sjlt",)

    @classmethod
    def from_config(cls, cfg: EstimatorConfig, layer_shapes: dict[str, tuple[int, int]]) -> SparseJLProjector:
        return cls(cfg.k, cfg.seed)

    def __init__(self, k: int, seed: int = 0):
        self.k, self.seed = k, seed
        self._hashes: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def hashes(self, layer_index: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (layer_index, dim)
        if key not in self._hashes:
            generator = _generator(self.seed, layer_index)
            buckets = torch.randint(0, self.k, (dim,), generator=generator)
            signs = torch.randint(0, 2, (dim,), generator=generator).float() * 2 - 1
            self._hashes[key] = (buckets, signs)
        return self._hashes[key]

    def project_one(self, layer_index: int, grads: torch.Tensor) -> torch.Tensor:
        """(B, k) sketch of one layer's (B, d) flat gradients."""
        buckets, signs = (t.to(grads.device) for t in self.hashes(layer_index, grads.shape[1]))
        features = torch.zeros(grads.shape[0], self.k, device=grads.device)
        return features.index_add_(1, buckets, grads.float() * signs)

    def project_flat(self, flat: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.join([self.project_one(index, grads) for index, grads in enumerate(flat.values())], None)

    def project_layer(self, index, name, inputs, grads, token_mask) -> torch.Tensor:
        return self.project_one(index, _example_gradients(inputs, grads))


class DenseProjector(Projector):
    """phi = P g with P ~ N(0, 1/k) (or +-1/sqrt(k)), generated in column blocks on the fly."""

    projections = ("gaussian", "rademacher")  # the kind of P

    @classmethod
    def from_config(cls, cfg: EstimatorConfig, layer_shapes: dict[str, tuple[int, int]]) -> DenseProjector:
        return cls(cfg.k, cfg.seed, kind=cfg.projection)

    def __init__(self, k: int, seed: int = 0, kind: str = "gaussian", block: int = 65536):
        if kind not in self.projections:
            raise ValueError(f"dense projection kind '{kind}': expected one of {', '.join(self.projections)}")
        self.k, self.seed, self.kind, self.block = k, seed, kind, block

    def block_matrix(self, layer_index: int, block_index: int, width: int) -> torch.Tensor:
        generator = _generator(self.seed, layer_index, block_index)
        if self.kind == "gaussian":
            matrix = torch.randn(width, self.k, generator=generator)
        else:
            matrix = torch.randint(0, 2, (width, self.k), generator=generator, dtype=torch.int8).float() * 2 - 1
        return matrix / math.sqrt(self.k)

    def project_one(self, layer_index: int, grads: torch.Tensor) -> torch.Tensor:
        """(B, k) projection of one layer's (B, d) flat gradients."""
        features = torch.zeros(grads.shape[0], self.k, device=grads.device)
        for block_index, start in enumerate(range(0, grads.shape[1], self.block)):
            part = grads[:, start : start + self.block]
            features += part @ self.block_matrix(layer_index, block_index, part.shape[1]).to(part.device)
        return features

    def project_flat(self, flat: dict[str, torch.Tensor]) -> torch.Tensor:
        """flat: layer name -> (B, d_layer) gradients, in a fixed layer order."""
        return self.join([self.project_one(index, grads) for index, grads in enumerate(flat.values())], None)

    def project_layer(self, index, name, inputs, grads, token_mask) -> torch.Tensor:
        return self.project_one(index, _example_gradients(inputs, grads))


class KroneckerProjector(Projector):
    """Per layer: phi_layer = P_out G^T A P_in^T (k_out x k_in), concatenated over layers.

    A side whose dimension is already <= its k is left unprojected (identity), so small LoRA
    ranks are kept exactly.
    """

    projections = ("kronecker",)

    @classmethod
    def from_config(cls, cfg: EstimatorConfig, layer_shapes: dict[str, tuple[int, int]]) -> KroneckerProjector:
        return cls(layer_shapes, cfg.k_in, cfg.k_out, cfg.seed)

    def __init__(self, layer_shapes: dict[str, tuple[int, int]], k_in: int = 16, k_out: int = 16, seed: int = 0):
        self.seed = seed
        # K-FAC statistics in the projected space, summed over real tokens: E[a a^T], E[g g^T].
        self.input_cov: dict[str, torch.Tensor] = {}
        self.grad_cov: dict[str, torch.Tensor] = {}
        self.n_tokens = 0
        self.in_proj: dict[str, torch.Tensor | None] = {}
        self.out_proj: dict[str, torch.Tensor | None] = {}
        self.layer_order = list(layer_shapes)  # the order of the feature blocks
        self.k = 0
        for layer_index, (name, (out_dim, in_dim)) in enumerate(layer_shapes.items()):
            generator = _generator(seed, layer_index)
            self.in_proj[name] = (
                torch.randn(k_in, in_dim, generator=generator) / math.sqrt(k_in) if in_dim > k_in else None
            )
            self.out_proj[name] = (
                torch.randn(k_out, out_dim, generator=generator) / math.sqrt(k_out) if out_dim > k_out else None
            )
            self.k += min(k_in, in_dim) * min(k_out, out_dim)

    def project_layer(self, index, name, inputs, grads, token_mask) -> torch.Tensor:
        inputs, grads = inputs.float(), grads.float()
        if self.in_proj[name] is not None:
            inputs = inputs @ self.in_proj[name].to(inputs.device).T
        if self.out_proj[name] is not None:
            grads = grads @ self.out_proj[name].to(grads.device).T
        self._accumulate(name, inputs, grads, token_mask)
        return torch.einsum("bto,bti->boi", grads, inputs).flatten(1)

    def join(self, parts: list[torch.Tensor], token_mask: torch.Tensor | None) -> torch.Tensor:
        if token_mask is not None:
            self.n_tokens += int(token_mask.sum())
        # Streamed extraction projects each layer as its gradient arrives (backward order), which
        # is the order the statistics were first inserted in; KFAC pairs the i-th statistics with
        # the i-th feature block, so keep them in feature order (blocks of equal size would
        # otherwise be misassigned without an error).
        for stats in (self.input_cov, self.grad_cov):
            for name in self.layer_order:
                if name in stats:
                    stats[name] = stats.pop(name)
        return torch.cat(parts, dim=1)

    def _accumulate(self, name: str, inputs: torch.Tensor, grads: torch.Tensor, mask: torch.Tensor | None) -> None:
        if mask is not None:
            inputs = inputs * mask[..., None].to(inputs.dtype)
        inputs, grads = inputs.reshape(-1, inputs.shape[-1]).double(), grads.reshape(-1, grads.shape[-1]).double()
        self.input_cov[name] = self.input_cov.get(name, 0) + inputs.T @ inputs
        self.grad_cov[name] = self.grad_cov.get(name, 0) + grads.T @ grads

    def block_shapes(self) -> dict[str, tuple[int, int]]:
        """(k_out, k_in) of each layer's feature block, in feature order."""
        return {name: (self.grad_cov[name].shape[0], self.input_cov[name].shape[0]) for name in self.input_cov}

    def explicit_matrix(self, name: str, out_dim: int, in_dim: int) -> torch.Tensor:
        """The (k_out k_in) x (out in) matrix this projector applies to vec(grad) (tests only)."""
        p_out = self.out_proj[name] if self.out_proj[name] is not None else torch.eye(out_dim)
        p_in = self.in_proj[name] if self.in_proj[name] is not None else torch.eye(in_dim)
        return torch.kron(p_out, p_in)


class ExactProjector(Projector):
    """No projection: the full per-example gradient (small models and tests)."""

    projections = ("none",)

    @classmethod
    def from_config(cls, cfg: EstimatorConfig, layer_shapes: dict[str, tuple[int, int]]) -> ExactProjector:
        return cls(layer_shapes)

    def __init__(self, layer_shapes: dict[str, tuple[int, int]]):
        self.k = sum(out_dim * in_dim for out_dim, in_dim in layer_shapes.values())

    def project_layer(self, index, name, inputs, grads, token_mask) -> torch.Tensor:
        return _example_gradients(inputs, grads)

    def join(self, parts: list[torch.Tensor], token_mask: torch.Tensor | None) -> torch.Tensor:
        return torch.cat(parts, dim=1)
