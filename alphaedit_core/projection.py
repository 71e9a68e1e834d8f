"""The null-space projector P of AlphaEdit.

From the second moment C = E[k kᵀ] ([d_ff, d_ff]) of the edited module's inputs: eigen-decompose C = U Λ Uᵀ and keep
the directions with small eigenvalue (the official rule: λ < `nullspace_threshold`, absolute; or, by share of
energy, the smallest directions that together hold at most a given share of tr C). P = U_keep U_keepᵀ projects
onto the space the preserved keys hardly touch, so an update Δ = Δ P leaves Δ k ≈ 0 for preserved keys k.

P is never stored densely: `basis` holds whichever of U_keep / U_drop has fewer columns, and P x is computed
from it (`P x = U_keep U_keepᵀ x` or `P x = x − U_drop U_dropᵀ x`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Projector:
    basis: torch.Tensor  # [d_ff, r] orthonormal columns
    complement: bool  # True: basis spans the dropped (preserved) directions and P = I − B Bᵀ
    eigenvalues: torch.Tensor  # [d_ff] eigenvalues of C, ascending
    n_kept: int  # dim of range(P)

    @property
    def d(self) -> int:
        return self.basis.shape[0]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """P x for x of shape [d_ff, ...] (columns are vectors)."""
        b = self.basis.to(x.dtype)
        coef = b.T @ x
        return x - b @ coef if self.complement else b @ coef

    def dense(self) -> torch.Tensor:
        """P as a [d_ff, d_ff] matrix (for small models and tests)."""
        return self.apply(torch.eye(self.d, dtype=self.basis.dtype))

    def energy_kept(self) -> float:
        """Share of tr C carried by the kept directions."""
        ev = self.eigenvalues.clamp_min(0)
        return float(ev[: self.n_kept].sum() / ev.sum())

    def key_ratio(self, keys: torch.Tensor) -> torch.Tensor:
        """‖P k‖ / ‖k‖ for keys [n, d_ff] -> [n]."""
        k = keys.T.to(self.basis.dtype)
        return self.apply(k).norm(dim=0) / k.norm(dim=0)

    def state(self) -> dict[str, torch.Tensor]:
        return {"basis": self.basis, "complement": torch.tensor(self.complement), "eigenvalues": self.eigenvalues,
                "n_kept": torch.tensor(self.n_kept)}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "Projector":
        return cls(state["basis"], bool(state["complement"]), state["eigenvalues"], int(state["n_kept"]))


def projector_from_cov(
    cov: torch.Tensor, *, threshold: float = 2e-2, mode: str = "threshold", energy: float = 0.01
) -> Projector:
    """Build P from C [d_ff, d_ff]. `mode="threshold"`: keep eigenvalues < threshold (absolute, official);
    `mode="energy"`: keep the smallest directions whose eigenvalues sum to at most `energy` · tr C."""
    c = cov.to(torch.float64)
    c = (c + c.T) / 2
    eigenvalues, vectors = torch.linalg.eigh(c)  # ascending
    if mode == "threshold":
        n_kept = int((eigenvalues < threshold).sum())
    elif mode == "energy":
        share = eigenvalues.clamp_min(0).cumsum(0) / eigenvalues.clamp_min(0).sum()
        n_kept = int((share <= energy).sum())
    else:
        raise ValueError(f"unknown projector mode {mode!r}: use 'threshold' or 'energy'")
    d = c.shape[0]
    complement = n_kept > d - n_kept
    basis = vectors[:, n_kept:] if complement else vectors[:, :n_kept]
    return Projector(basis.to(torch.float32).contiguous(), complement, eigenvalues.to(torch.float32), n_kept)


def subspace_cosine(a: Projector, b: Projector) -> float:
    """Mean squared cosine of the principal angles between range(P_a) and range(P_b):
    tr(P_a P_b) / max(rank) — 1 for identical kept spaces, ~r/d for unrelated ones."""
    pa, pb = a.dense().to(torch.float64), b.dense().to(torch.float64)
    return float(torch.trace(pa @ pb) / max(a.n_kept, b.n_kept, 1))
