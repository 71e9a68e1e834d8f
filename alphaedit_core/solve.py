"""The closed-form weight updates of one layer: AlphaEdit and its MEMIT ablation. Pure functions over tensors.

Shapes: keys K [d_ff, n], residuals R [d_model, n], updates Δ [d_model, d_ff]. Solved in float64, on K's device
(the Editor puts every operand of layer l there, on l's device; operands found elsewhere are copied to it).

Norm constraint (ENCORE, Gupta et al. 2025, "an explicit Frobenius norm-constraint" in the editing objective): a
penalty μ‖Δ‖²_F on the update Δ = Ŵ − W of this batch (W: the weights before it), not on the edited matrix Ŵ
itself. That is what the authors' code solves (scalable-model-editing/knowledge-editing-regularization,
encore/encore_main.py: `cov += update_norm_lambda * I` inside MEMIT's (λC + K Kᵀ)⁻¹, with W the current weights;
update_norm_lambda 10 for GPT2-XL and Llama2-7B, 20 for Llama3-8B). μ = 0 is the plain solve, bit for bit.
"""
from __future__ import annotations

import torch

from .projection import Projector


def alphaedit_delta(K: torch.Tensor, R: torch.Tensor, P: Projector, cache_c: torch.Tensor | None, L2: float,
                    norm_constraint: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Δ = R Kᵀ P (K_p K_pᵀ P + K Kᵀ P + (L2 + μ) I)⁻¹ with μ = norm_constraint, computed as the reference does:
    Xᵀ with X = solve(P (K Kᵀ + cache_c) + (L2 + μ) I, P K Rᵀ) ([d_ff, d_model]).

    For L2 + μ > 0 the solution satisfies X = P X, so Δ = Δ P and Δ k = 0 for every k with P k = 0.
    It minimises, over Δ = Δ' P, ‖Δ K − R‖² + ‖Δ K_p‖² + L2 ‖Δ‖² + μ ‖Δ‖² (K_p K_pᵀ = cache_c; setting the
    gradient in Δ' to 0 and using Δ P = Δ gives Δ (M P + (L2 + μ) I) = R Kᵀ P). AlphaEdit's own L2 term already
    penalises ‖Δ‖²_F of the projected update, so ENCORE's constraint on it is the same as raising L2 to L2 + μ;
    ‖Δ‖ falls monotonically as μ grows (on range(P), Δ = R Kᵀ P (P M P + (L2 + μ) I)⁻¹, a ridge solution).
    Returns (Δ, the system matrix A [d_ff, d_ff])."""
    K = K.double()
    R = R.to(K.device, torch.float64)
    M = K @ K.T
    if cache_c is not None:
        M = M + cache_c.to(M.device, torch.float64)
    A = P.apply(M) + (L2 + norm_constraint) * torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    X = torch.linalg.solve(A, P.apply(K) @ R.T)
    return X.T, A


def memit_delta(K: torch.Tensor, R: torch.Tensor, C: torch.Tensor, mom2_update_weight: float,
                norm_constraint: float = 0.0, cache_c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Δ = R Kᵀ (λ C + K Kᵀ + μ I)⁻¹ with λ = mom2_update_weight, C = E[k kᵀ] (MEMIT) and μ = norm_constraint
    (ENCORE): the minimiser of ‖Δ K − R‖² + λ tr(Δ C Δᵀ) + μ ‖Δ‖²_F. μ = 0: MEMIT's solve, bit for bit.
    With `cache_c` [d_ff, d_ff] (the keys of earlier batches, Σ K_p K_pᵀ) the system is λ C + cache_c + K Kᵀ:
    the official repository's sequential MEMIT (`memit_seq_main.py`), which also keeps the earlier edits' keys
    where they were. Returns (Δ, the system matrix A)."""
    K = K.double()
    R = R.to(K.device, torch.float64)
    A = mom2_update_weight * C.to(K.device, torch.float64) + K @ K.T
    if cache_c is not None:
        A = A + cache_c.to(K.device, torch.float64)
    if norm_constraint:
        A = A + norm_constraint * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    adj = torch.linalg.solve(A, K)  # [d_ff, n]
    return R @ adj.T, A


def condition_number(A: torch.Tensor) -> float:
    """2-norm condition number σ_max / σ_min of the solved system."""
    s = torch.linalg.svdvals(A.double())
    return float(s[0] / s[-1])
