"""The closed-form weight updates of one layer: AlphaEdit and its MEMIT ablation. Pure functions over tensors.

Shapes: keys K [d_ff, n], residuals R [d_model, n], updates Δ [d_model, d_ff]. Solved in float64.
"""
from __future__ import annotations

import torch

from .projection import Projector


def alphaedit_delta(K: torch.Tensor, R: torch.Tensor, P: Projector, cache_c: torch.Tensor | None, L2: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Δ = R Kᵀ P (K_p K_pᵀ P + K Kᵀ P + L2 I)⁻¹, computed as the reference does:
    Xᵀ with X = solve(P (K Kᵀ + cache_c) + L2 I, P K Rᵀ) ([d_ff, d_model]).

    For L2 > 0 the solution satisfies X = P X, so Δ = Δ P and Δ k = 0 for every k with P k = 0.
    Returns (Δ, the system matrix A [d_ff, d_ff])."""
    K, R = K.double(), R.double()
    M = K @ K.T
    if cache_c is not None:
        M = M + cache_c.double()
    A = P.apply(M) + L2 * torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    X = torch.linalg.solve(A, P.apply(K) @ R.T)
    return X.T, A


def memit_delta(K: torch.Tensor, R: torch.Tensor, C: torch.Tensor, mom2_update_weight: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Δ = R Kᵀ (λ C + K Kᵀ)⁻¹ with λ = mom2_update_weight and C = E[k kᵀ] (MEMIT).
    Returns (Δ, the system matrix A = λ C + K Kᵀ)."""
    K, R = K.double(), R.double()
    A = mom2_update_weight * C.double() + K @ K.T
    adj = torch.linalg.solve(A, K)  # [d_ff, n]
    return R @ adj.T, A


def condition_number(A: torch.Tensor) -> float:
    """2-norm condition number σ_max / σ_min of the solved system."""
    s = torch.linalg.svdvals(A.double())
    return float(s[0] / s[-1])
