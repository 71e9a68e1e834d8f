"""The MLP output that a post-MLP norm turns into a wanted change of the residual stream.

MEMIT and AlphaEdit assume that the edited matrix's output v = W k is added to the residual stream as it is, so a
wanted change r of the residual at a layer is asked of the matrix directly: ΔW k = r. That holds for LLaMA, Qwen2,
GPT-2 and GPT-J. Gemma2/3 normalise the MLP output before adding it (`post_feedforward_layernorm`, an RMSNorm):
the residual receives f(v) = g ⊙ v / rms(v) = √d · g ⊙ v / ‖v‖, whose size does not depend on ‖v‖ and is two
orders of magnitude above it on Gemma-3-270M, so ΔW k = r asks for a change in the wrong space and the update
diverges (benchmarks/results/postnorm-gemma3-270m.md).

For such a layer the residual is translated into the value space before the solve (`value_residual`). An RMSNorm
reaches only the outputs √d · g ⊙ s with ‖s‖ = 1, so the wanted output f(v) + r is replaced by the closest of them
(`closest_reachable`: least squares on the sphere, closed form up to one multiplier found by bisection), and v is
moved to c s at the scale c = ⟨s, v⟩ that changes it least (the output does not depend on c): ΔW k = c s − v.
What the norm cannot produce stays as residual, which the next layer's solve sees (the layers are solved in order,
each against the residual left, as in MEMIT). Without a post-MLP norm nothing changes.

Which layers have one is found by running the model once, not by names: the norm whose input is the MLP output
projection's output tensor.
"""
from __future__ import annotations

import torch
from torch import nn

from .arch import ArchitectureError, ModelAdapter, run_until


@torch.no_grad()
def post_mlp_norms(model: nn.Module, tok, adapter: ModelAdapter, layers: list[int]) -> dict[int, nn.Module]:
    """{layer: the norm applied to the output of that layer's MLP output projection} for the layers of `layers`
    that have one (Gemma2/3: `post_feedforward_layernorm`); empty for LLaMA, Qwen2, GPT-2. One short forward pass.
    Raises ArchitectureError for a post-MLP module that does not behave as an RMSNorm (`check_rms_norm`)."""
    outputs: dict[int, torch.Tensor] = {}
    seen: dict[int, nn.Module] = {}
    handles = []
    for l in layers:
        handles.append(adapter.mlp_out(l).register_forward_hook(
            lambda _m, _a, out, l=l: outputs.__setitem__(l, out)))
        for _name, child in adapter.layers[l].named_modules():
            if child is adapter.layers[l] or not _is_norm(child, adapter.d_model):
                continue
            handles.append(child.register_forward_hook(
                lambda m, args, _out, l=l: seen.__setitem__(l, m) if _is_input(args, outputs.get(l)) else None))
    ids = tok("The", return_tensors="pt").input_ids.to(adapter.input_device)
    try:
        run_until(model, adapter.layers[max(layers)], input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    for norm in seen.values():
        check_rms_norm(norm, adapter.d_model)
    return dict(sorted(seen.items()))


def _is_input(args: tuple, out: torch.Tensor | None) -> bool:
    """The module's first input is `out` (the same tensor, or an equal one of the same shape)."""
    if out is None or not args or not isinstance(args[0], torch.Tensor):
        return False
    x = args[0]
    return x is out or (x.shape == out.shape and x.device == out.device and torch.equal(x, out))


def _is_norm(module: nn.Module, d: int) -> bool:
    w = getattr(module, "weight", None)
    return "norm" in type(module).__name__.lower() and isinstance(w, torch.Tensor) and tuple(w.shape) == (d,)


def rms_gain(norm: nn.Module, d: int) -> torch.Tensor:
    """The elementwise gain g [d] of an RMSNorm f(x) = g ⊙ x / rms(x), read from the module's output (float64):
    whatever convention it stores its weight in (Gemma's 1 + w)."""
    w = norm.weight
    ones = torch.ones(1, d, device=w.device, dtype=w.dtype)
    eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 0.0)) or 0.0)
    return norm(ones)[0].double() * (1.0 + eps) ** 0.5


@torch.no_grad()
def check_rms_norm(norm: nn.Module, d: int, atol: float = 1e-4) -> None:
    """Refuse a module that is not an RMSNorm with elementwise gain (a LayerNorm subtracts the mean: its inverse
    is another): f(x) must equal g ⊙ x / rms(x) on random x, at two scales of x."""
    w = norm.weight
    g = rms_gain(norm, d).cpu()  # compared on the CPU, whatever device the norm is on
    x = torch.randn(4, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for scale in (1.0, 7.0):
        xs = (x * scale).to(w.device, w.dtype)
        want = g * (x * scale) / (x * scale).pow(2).mean(-1, keepdim=True).sqrt()
        got = norm(xs).double().cpu()
        if not torch.allclose(got, want.cpu(), rtol=1e-3, atol=atol * float(want.abs().max())):
            raise ArchitectureError(
                f"the norm after the MLP output ({type(norm).__name__}) does not behave as an RMSNorm with an "
                "elementwise gain; AlphaEdit's residual cannot be translated through it")


@torch.no_grad()
def closest_reachable(gain: torch.Tensor, y: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """Unit directions s [d, n] whose RMSNorm outputs D s (D = √d · diag(gain), gain [d]) are closest to the
    wanted outputs y [d, n]: argmin ‖D s − y‖ subject to ‖s‖ = 1, per column. The constrained least squares has
    the solution s = D y / (D² + μ) with the multiplier μ > −min D² that gives ‖s‖ = 1 (‖s‖ falls monotonically
    in μ there), found by bisection in float64."""
    d = gain.shape[0]
    D = gain.double()[:, None] * d**0.5  # [d, 1]
    Dy = D * y.double()  # [d, n]
    D2 = D.pow(2)
    lo = (-D2.min()).expand(y.shape[1]).clone()  # ‖s‖ → ∞ as μ → lo (unless y vanishes there)
    hi = Dy.norm(dim=0) + D2.max()  # ‖s‖ ≤ ‖D y‖ / (μ − max(−D²)) ≤ 1 here
    for _ in range(iters):
        mu = (lo + hi) / 2
        big = (Dy / (D2 + mu)).norm(dim=0) > 1
        lo, hi = torch.where(big, mu, lo), torch.where(big, hi, mu)
    s = Dy / (D2 + hi)
    return s / s.norm(dim=0).clamp_min(1e-300)


@torch.no_grad()
def value_residual(norm: nn.Module, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The change Δ [d, n] of the MLP output projection's output v [d, n] (one column per request) that moves the
    post-MLP norm's output f(v) as close as an RMSNorm allows to f(v) + r ([d, n]; see the module docstring):
    the direction s of `closest_reachable`, at the scale c = ⟨s, v⟩ that changes v least (‖v‖ when s turns away
    from v), Δ = c s − v. float64, on v's device. The norm's ε is left out of the inverse: it shrinks the output by
    sqrt(mean(x²) / (mean(x²) + ε)), 1 − 4·10⁻⁵ on Gemma-3-270M (mean(v²) ≈ 0.01, ε = 10⁻⁶), but not on a tiny
    random model whose MLP outputs are a thousand times smaller."""
    d = v.shape[0]
    g = rms_gain(norm, d).to(v.device)
    w = norm.weight
    vd = v.double()
    y = norm(v.T.to(w.device, w.dtype)).double().to(v.device).T  # f(v) [d, n], as the model computes it
    s = closest_reachable(g, y + r.double())
    c = (s * vd).sum(0)
    c = torch.where(c > 0, c, vd.norm(dim=0))
    return c * s - vd
