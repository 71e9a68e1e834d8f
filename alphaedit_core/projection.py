"""The null-space projector P of AlphaEdit.

From the second moment C = E[k kᵀ] ([d_ff, d_ff]) of the edited module's inputs: eigen-decompose C = U Λ Uᵀ and keep
the directions with small eigenvalue (the official rule: λ < `nullspace_threshold`, absolute; or, by share of
energy, the smallest directions that together hold at most a given share of tr C). P = U_keep U_keepᵀ projects
onto the space the preserved keys hardly touch, so an update Δ = Δ P leaves Δ k ≈ 0 for preserved keys k.

P is never stored densely: `basis` holds whichever of U_keep / U_drop has fewer columns, and P x is computed
from it (`P x = U_keep U_keepᵀ x` or `P x = x − U_drop U_dropᵀ x`).

A P that keeps no direction (Δ = 0: nothing is edited) or every direction (P = I: nothing is protected) is an
error unless asked for (`allow_degenerate=True`, e.g. the identity projector of tests and ablations); one that
keeps more than 99% or fewer than 1% of the directions gives a `ProjectorWarning` with the numbers.

On the CPU the eigendecomposition runs on one thread, whatever the process's thread count: LAPACK's threaded eigh
gives bases that differ in the last bits between one and two threads, so a checkpoint (which records a hash of the
bases) made by a one-thread stream process would otherwise be refused by a two-thread process on the same machine.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

NEAR_DEGENERATE = 0.01  # warn when the kept share is below this, or above 1 − this


class ProjectorWarning(UserWarning):
    """P keeps almost all or almost none of the directions."""


@dataclass
class Projector:
    basis: torch.Tensor  # [d_ff, r] orthonormal columns
    complement: bool  # True: basis spans the dropped (preserved) directions and P = I − B Bᵀ
    eigenvalues: torch.Tensor  # [d_ff] eigenvalues of C, ascending
    n_kept: int  # dim of range(P)

    @property
    def d(self) -> int:
        return self.basis.shape[0]

    @property
    def device(self) -> torch.device:
        return self.basis.device

    def to(self, device: torch.device | str) -> "Projector":
        """A copy with its tensors on `device` (the same tensors when they are there already): the Editor moves each
        layer's projector once to that layer's device."""
        return Projector(self.basis.to(device), self.complement, self.eigenvalues.to(device), self.n_kept)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """P x for x of shape [d_ff, ...] (columns are vectors); on x's device (the basis is copied there when it is
        elsewhere: place the projector with `to` to avoid that copy)."""
        b = self.basis.to(x.device, x.dtype)
        coef = b.T @ x
        return x - b @ coef if self.complement else b @ coef

    def dense(self) -> torch.Tensor:
        """P as a [d_ff, d_ff] matrix (for small models and tests)."""
        return self.apply(torch.eye(self.d, dtype=self.basis.dtype, device=self.basis.device))

    def energy_kept(self) -> float:
        """Share of tr C carried by the kept directions."""
        ev = self.eigenvalues.clamp_min(0)
        return float(ev[: self.n_kept].sum() / ev.sum())

    def key_ratio(self, keys: torch.Tensor) -> torch.Tensor:
        """‖P k‖ / ‖k‖ for keys [n, d_ff] -> [n] (on the projector's device)."""
        k = keys.T.to(self.basis.device, self.basis.dtype)
        return self.apply(k).norm(dim=0) / k.norm(dim=0)

    def state(self) -> dict[str, torch.Tensor]:
        return {"basis": self.basis, "complement": torch.tensor(self.complement), "eigenvalues": self.eigenvalues,
                "n_kept": torch.tensor(self.n_kept)}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "Projector":
        return cls(state["basis"], bool(state["complement"]), state["eigenvalues"], int(state["n_kept"]))


@dataclass
class Spectrum:
    """The eigendecomposition C = U Λ Uᵀ of one layer's key second moment, from which P is built at any rule."""
    eigenvalues: torch.Tensor  # [d_ff] float64, ascending
    vectors: torch.Tensor  # [d_ff, d_ff] float64, column i belongs to eigenvalues[i]
    who: str = "projector"  # names the layer in error messages


def decompose(cov: torch.Tensor, *, layer: int | str | None = None) -> Spectrum:
    """Eigendecompose C [d_ff, d_ff] (symmetrised, float64, one thread on the CPU), once for as many P as wanted.

    ValueError when C is not a finite square matrix. `layer` only names the layer in messages."""
    who = "projector" if layer is None else f"projector of layer {layer}"
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"{who}: C must be a square [d_ff, d_ff] matrix, got shape {list(cov.shape)}")
    if not bool(torch.isfinite(cov).all()):
        raise ValueError(f"{who}: C ({cov.shape[0]}x{cov.shape[1]}) is not finite: "
                         f"{int(torch.isnan(cov).sum())} NaN and {int(torch.isinf(cov).sum())} infinite entries")
    c = cov.to(torch.float64)
    c = (c + c.T) / 2
    with _one_thread(c.device):
        eigenvalues, vectors = torch.linalg.eigh(c)  # ascending
    return Spectrum(eigenvalues, vectors, who)


def projector_from_spectrum(
    spectrum: Spectrum, *, threshold: float = 2e-2, mode: str = "threshold", energy: float = 0.01,
    allow_degenerate: bool = False,
) -> Projector:
    """P from a decomposed C at one rule (see `projector_from_cov`): a threshold sweep decomposes C once."""
    eigenvalues, vectors = spectrum.eigenvalues, spectrum.vectors
    if mode == "threshold":
        n_kept = int((eigenvalues < threshold).sum())
    elif mode == "energy":
        share = eigenvalues.clamp_min(0).cumsum(0) / eigenvalues.clamp_min(0).sum()
        n_kept = int((share <= energy).sum())
    elif mode == "identity":
        n_kept = vectors.shape[0]
    else:
        raise ValueError(f"unknown projector mode {mode!r}: use 'threshold', 'energy' or 'identity'")
    d = vectors.shape[0]
    complement = n_kept > d - n_kept
    basis = vectors[:, n_kept:] if complement else vectors[:, :n_kept]
    p = Projector(basis.to(torch.float32).contiguous(), complement, eigenvalues.to(torch.float32), n_kept)
    check_kept(p, rule=_rule(mode, threshold, energy), allow_degenerate=allow_degenerate or mode == "identity",
               who=spectrum.who)
    return p


def projector_from_cov(
    cov: torch.Tensor, *, threshold: float = 2e-2, mode: str = "threshold", energy: float = 0.01,
    allow_degenerate: bool = False, layer: int | str | None = None,
) -> Projector:
    """Build P from C [d_ff, d_ff]. `mode="threshold"`: keep eigenvalues < threshold (absolute, official);
    `mode="energy"`: keep the smallest directions whose eigenvalues sum to at most `energy` · tr C;
    `mode="identity"`: keep every direction, P = I (the ablation "AlphaEdit's constraint without P": with it
    AlphaEdit's update is R Kᵀ (K Kᵀ + cache_c + L2 I)⁻¹, which remembers the earlier edits' keys and nothing of C).

    ValueError when C is not a finite square matrix, and when P keeps 0 or all d_ff directions unless
    `allow_degenerate=True` (then P = 0 or P = I, silently); `ProjectorWarning` when it keeps more than 99% or
    fewer than 1% of them (but not none or all). `layer` only names the layer in these messages.
    `decompose` + `projector_from_spectrum`, for several rules on one C."""
    return projector_from_spectrum(decompose(cov, layer=layer), threshold=threshold, mode=mode, energy=energy,
                                   allow_degenerate=allow_degenerate)


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run the block on one intra-op thread when `device` is the CPU (bit-identical bases whatever the process's
    thread count); restore the thread count after."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _rule(mode: str, threshold: float, energy: float) -> str:
    return {"threshold": f"threshold={threshold:g}", "energy": f"energy={energy:g}"}.get(mode, mode)


def check_kept(p: Projector, *, rule: str = "", allow_degenerate: bool = False, who: str = "projector") -> None:
    """Raise ValueError when P keeps 0 or all d directions (unless `allow_degenerate`); `ProjectorWarning`
    when it keeps fewer than 1% or more than 99% of them."""
    d, k = p.d, p.n_kept
    ev = p.eigenvalues.double()
    numbers = (f"keeps {k} of {d} directions ({k / max(d, 1):.2%}), {_energy(p):.2%} of tr C; eigenvalues of C "
               f"from {float(ev[0]):.3g} to {float(ev[-1]):.3g}" + (f", {rule}" if rule else ""))
    if k in (0, d):
        if allow_degenerate:
            return
        what = "no direction: every update would be 0" if k == 0 else "every direction: P = I protects nothing"
        raise ValueError(f"{who} {numbers}: it keeps {what}. Check the statistics and the null-space "
                         f"threshold (hparams field 'nullspace_threshold' / 'nullspace_energy'), or pass "
                         f"allow_degenerate=True if this is intended")
    if k < NEAR_DEGENERATE * d or k > (1 - NEAR_DEGENERATE) * d:
        warnings.warn(f"{who} {numbers}: almost {'nothing' if k < d / 2 else 'everything'} is kept",
                      ProjectorWarning, stacklevel=3)


def _energy(p: Projector) -> float:
    """Share of tr C in the kept directions; 0 for C = 0."""
    ev = p.eigenvalues.double().clamp_min(0)
    total = float(ev.sum())
    return float(ev[: p.n_kept].sum()) / total if total > 0 else 0.0


def subspace_cosine(a: Projector, b: Projector) -> float:
    """Mean squared cosine of the principal angles between range(P_a) and range(P_b):
    tr(P_a P_b) / max(rank) — 1 for identical kept spaces, ~r/d for unrelated ones."""
    pa = a.dense().to(torch.float64)
    pb = b.dense().to(pa.device, torch.float64)
    return float(torch.trace(pa @ pb) / max(a.n_kept, b.n_kept, 1))
