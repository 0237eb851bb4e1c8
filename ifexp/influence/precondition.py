"""Preconditioners H for I(d, q) = phi(q)^T H^-1 phi(d), fitted once on the training features.

- identity (`grad_dot`): H = I.
- cosine (`grad_cos`): H = I on unit-normalised features of both sides.
- projected empirical Fisher (`proj_fisher`): H = Phi^T Phi / n + lambda I, lambda = damping x
  the mean non-zero eigenvalue of Phi^T Phi / n (trace / min(n, k)); Cholesky-factorised once.
- per-layer K-FAC in the projected space (`kfac`, with the Kronecker projection).

Each is a `Preconditioner` subclass that declares its `name` (estimator.preconditioner); defining
it registers it in `PRECONDITIONERS`, as kronfluence's factor configs do.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ifexp.registry import Registry

# estimator.preconditioner -> its class, in definition order
PRECONDITIONERS: Registry[type[Preconditioner]] = Registry("estimator.preconditioner")


def _unit(features: torch.Tensor) -> torch.Tensor:
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)


class Preconditioner:
    """H = I unless a subclass says otherwise. A subclass that sets `name` is registered under it."""

    name: ClassVar[str]
    # the estimator.projection whose statistics it needs (None: any projection)
    needs_projection: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            PRECONDITIONERS.register(cls.name, cls)

    @classmethod
    def from_config(cls, damping: float, kfac_factors: dict[str, dict] | None = None) -> Preconditioner:
        """An unfitted preconditioner; kfac_factors: {"input_cov": ..., "grad_cov": ...} (kfac only)."""
        return cls()

    def fit(self, train_features: torch.Tensor) -> Preconditioner:
        return self

    def train_side(self, train_features: torch.Tensor) -> torch.Tensor:
        """What the training features look like in the inner product (cosine normalises them)."""
        return train_features

    def query_side(self, query_features: torch.Tensor) -> torch.Tensor:
        """H^-1 phi(q) for each query row."""
        return query_features


class Identity(Preconditioner):
    name = "grad_dot"


class CosinePreconditioner(Preconditioner):
    name = "grad_cos"

    def train_side(self, train_features: torch.Tensor) -> torch.Tensor:
        return _unit(train_features)

    def query_side(self, query_features: torch.Tensor) -> torch.Tensor:
        return _unit(query_features)


class ProjectedFisher(Preconditioner):
    name = "proj_fisher"

    def __init__(self, damping: float = 0.1):
        self.damping = damping
        self.cholesky: torch.Tensor | None = None
        self.lam = 0.0

    @classmethod
    def from_config(cls, damping: float, kfac_factors: dict[str, dict] | None = None) -> ProjectedFisher:
        return cls(damping)

    def fit(self, train_features, chunk: int = 4096) -> ProjectedFisher:
        """Fit on (N, k) features: a tensor, an array or anything sliced by rows (a store's
        StoredRows), read `chunk` rows at a time. The chunk is fixed, not a memory setting: the sum
        of the chunks' products, and so the fit, is the same on every call. Holds the k x k
        Fisher and its Cholesky factor (2 x 8 k^2 bytes: 1 GiB at k = 8192) and one chunk."""
        k = train_features.shape[1]
        fisher = torch.zeros(k, k, dtype=torch.float64)
        for start in range(0, train_features.shape[0], chunk):
            block = torch.as_tensor(train_features[start : start + chunk]).double()
            fisher += block.T @ block
        fisher /= train_features.shape[0]
        # Damping relative to the mean *non-zero* eigenvalue: with N < k the Fisher has rank N, and
        # the mean over all k eigenvalues would shrink lambda by N/k (measured: LDS then falls below
        # grad_dot). The floor only guards an all-zero Fisher (gradients can be ~1e-10 in scale).
        rank = min(train_features.shape[0], k)
        self.lam = max(self.damping * float(torch.trace(fisher)) / rank, 1e-300)
        fisher.diagonal().add_(self.lam)  # + lam I, in place: the same values without a k x k identity
        self.cholesky = torch.linalg.cholesky(fisher)
        return self

    def query_side(self, query_features: torch.Tensor) -> torch.Tensor:
        if self.cholesky is None:
            raise RuntimeError("fit the preconditioner on the training features first")
        solved = torch.cholesky_solve(torch.as_tensor(query_features).double().T, self.cholesky)
        return solved.T.float()


class KFAC(Preconditioner):
    """Per-layer K-FAC in the projected (Kronecker) space: F_layer ~ A (x) G, with A = E[a a^T]
    over projected layer inputs and G = E[g g^T] over projected output gradients. For a feature
    block Phi (k_out x k_in), H^-1 Phi = (G + lambda_G I)^-1 Phi (A + lambda_A I)^-1, each damping
    relative to its factor's mean eigenvalue. Needs the KroneckerProjector's statistics.
    """

    name = "kfac"
    needs_projection = "kronecker"

    @classmethod
    def from_config(cls, damping: float, kfac_factors: dict[str, dict] | None = None) -> KFAC:
        if kfac_factors is None:
            raise ValueError("kfac needs the Kronecker projector's statistics: build it with KFAC(...) or kfac_factors")
        return cls(kfac_factors["input_cov"], kfac_factors["grad_cov"], damping)

    def __init__(self, input_cov: dict, grad_cov: dict, damping: float = 0.1):
        self.damping = damping
        self.blocks = []  # (k_out, k_in, G^-1, A^-1) per layer, in feature order
        for name in input_cov:
            inverses = []
            for factor in (torch.as_tensor(grad_cov[name]), torch.as_tensor(input_cov[name])):
                factor = factor.double()
                lam = max(damping * float(torch.diagonal(factor).mean()), 1e-300)
                inverses.append(torch.linalg.inv(factor + lam * torch.eye(factor.shape[0], dtype=torch.float64)))
            self.blocks.append((inverses[0].shape[0], inverses[1].shape[0], *inverses))

    def query_side(self, query_features: torch.Tensor) -> torch.Tensor:
        query_features = torch.as_tensor(query_features).double()
        parts, start = [], 0
        for k_out, k_in, grad_inverse, input_inverse in self.blocks:
            block = query_features[:, start : start + k_out * k_in].reshape(-1, k_out, k_in)
            parts.append((grad_inverse @ block @ input_inverse).flatten(1))
            start += k_out * k_in
        if start != query_features.shape[1]:
            raise ValueError(f"kfac: features have {query_features.shape[1]} dims, the factors cover {start}")
        return torch.cat(parts, dim=1).float()


def make_preconditioner(name: str, damping: float = 0.1, kfac_factors: dict[str, dict] | None = None) -> Preconditioner:
    """An unfitted preconditioner by its registered name (kfac: with the Kronecker projector's factors)."""
    return PRECONDITIONERS[name].from_config(damping, kfac_factors)
