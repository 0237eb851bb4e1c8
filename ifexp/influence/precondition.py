"""Preconditioners H for I(d, q) = phi(q)^T H^-1 phi(d), fitted once on the training features.

- identity (`grad_dot`): H = I.
- cosine (`grad_cos`): H = I on unit-normalised features of both sides.
- projected empirical Fisher (`proj_fisher`): H = Phi^T Phi / n + lambda I, lambda = damping x
  the mean eigenvalue of Phi^T Phi / n; Cholesky-factorised once.
"""

from __future__ import annotations

import torch


def _unit(features: torch.Tensor) -> torch.Tensor:
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)


class Preconditioner:
    name = "grad_dot"

    def fit(self, train_features: torch.Tensor) -> Preconditioner:
        return self

    def train_side(self, train_features: torch.Tensor) -> torch.Tensor:
        """What the training features look like in the inner product (cosine normalises them)."""
        return train_features

    def query_side(self, query_features: torch.Tensor) -> torch.Tensor:
        """H^-1 phi(q) for each query row."""
        return query_features


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

    def fit(self, train_features: torch.Tensor, chunk: int = 4096) -> ProjectedFisher:
        k = train_features.shape[1]
        fisher = torch.zeros(k, k, dtype=torch.float64)
        for start in range(0, train_features.shape[0], chunk):
            block = torch.as_tensor(train_features[start : start + chunk]).double()
            fisher += block.T @ block
        fisher /= train_features.shape[0]
        self.lam = self.damping * float(torch.diagonal(fisher).mean()) + 1e-12
        self.cholesky = torch.linalg.cholesky(fisher + self.lam * torch.eye(k, dtype=torch.float64))
        return self

    def query_side(self, query_features: torch.Tensor) -> torch.Tensor:
        if self.cholesky is None:
            raise RuntimeError("fit the preconditioner on the training features first")
        solved = torch.cholesky_solve(torch.as_tensor(query_features).double().T, self.cholesky)
        return solved.T.float()


def make_preconditioner(name: str, damping: float = 0.1) -> Preconditioner:
    if name == "grad_dot":
        return Preconditioner()
    if name == "grad_cos":
        return CosinePreconditioner()
    if name == "proj_fisher":
        return ProjectedFisher(damping)
    raise ValueError(f"preconditioner '{name}': expected grad_dot, grad_cos or proj_fisher")
