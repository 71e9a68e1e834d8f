"""A post-MLP norm (Gemma2/3's post_feedforward_layernorm) between the edited matrix and the residual stream:
found by tracing, refused when it is not an RMSNorm, and the residual translated through it so that an edit lands.
Expectations come from hand-made norms and a planted, reachable target; none reuses postnorm.py's arithmetic."""
import math

import pytest
import torch
from torch import nn

from alphaedit_core import editor as editor_module
from alphaedit_core.arch import ArchitectureError, ModelAdapter
from alphaedit_core.editor import Editor
from alphaedit_core.hparams import EditHParams
from alphaedit_core.postnorm import check_rms_norm, closest_reachable, post_mlp_norms, rms_gain, value_residual
from alphaedit_core.requests import EditRequest
from alphaedit_core.targets import TargetResult
from tiny import tiny_model, tiny_tokenizer

REQS = [EditRequest("{} lives in", s, "Paris", "Rome", case_id=i) for i, s in enumerate(["Anna", "Bob", "Carl"])]


class HandRMSNorm(nn.Module):
    """y = gain ⊙ x / sqrt(mean(x²) + eps), written out."""

    def __init__(self, gain: torch.Tensor, eps: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(gain.clone())
        self.eps = eps

    def forward(self, x):
        return self.weight * x / (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()


def gains(d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(d, generator=g, dtype=torch.float64) * 20 + 0.05)  # anisotropic, as Gemma's (0.05 .. 20)


def test_the_gain_is_read_whatever_convention_the_weight_is_stored_in():
    g = gains()
    assert torch.allclose(rms_gain(HandRMSNorm(g, eps=1e-3), 16), g, rtol=1e-12)
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm  # y = norm(x) · (1 + weight)

    gemma = Gemma3RMSNorm(16, eps=1e-6).double()
    with torch.no_grad():
        gemma.weight.copy_(g - 1)
    assert torch.allclose(rms_gain(gemma, 16), g, rtol=1e-6)  # it normalises in float32


def test_a_reachable_change_is_met_exactly():
    """Plant the wanted output as the norm's output at another value: f(v + Δ) must equal it."""
    norm = HandRMSNorm(gains()).double()
    g = torch.Generator().manual_seed(1)
    v = torch.randn(16, 5, generator=g, dtype=torch.float64)
    other = v + 0.3 * torch.randn(16, 5, generator=g, dtype=torch.float64)
    f = lambda x: norm(x.T).T  # noqa: E731
    r = f(other) - f(v)
    delta = value_residual(norm, v, r)
    assert torch.allclose(f(v + delta), f(other), rtol=1e-8, atol=1e-8)
    # and changes v least along the reached direction: v + Δ is v's projection on that direction
    s = (v + delta) / (v + delta).norm(dim=0)
    assert torch.allclose(v + delta, s * (s * v).sum(0), atol=1e-10)


def test_no_wanted_change_asks_for_no_change():
    norm = HandRMSNorm(gains()).double()
    v = torch.randn(16, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert value_residual(norm, v, torch.zeros(16, 3, dtype=torch.float64)).abs().max() < 1e-9


def test_the_closest_reachable_output_beats_every_other_unit_direction():
    """A second method: random search on the sphere never finds an output closer to y than `closest_reachable`;
    in two dimensions, a fine grid of angles agrees with it."""
    d = 6
    gain = gains(d, seed=3)
    y = torch.randn(d, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 30
    s = closest_reachable(gain, y)
    D = gain[:, None] * math.sqrt(d)
    best = (D * s - y).norm()
    cand = torch.randn(d, 20000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    cand = cand / cand.norm(dim=0)
    assert (D * cand - y).norm(dim=0).min() >= best - 1e-9
    gain2, y2 = torch.tensor([3.0, 0.5], dtype=torch.float64), torch.tensor([[2.0], [9.0]], dtype=torch.float64)
    angles = torch.linspace(0, 2 * math.pi, 200001, dtype=torch.float64)
    grid = torch.stack([angles.cos(), angles.sin()])
    dist = (gain2[:, None] * math.sqrt(2) * grid - y2).norm(dim=0)
    s2 = closest_reachable(gain2, y2)
    assert torch.allclose(s2[:, 0], grid[:, dist.argmin()], atol=1e-4)


def test_a_layernorm_after_the_mlp_is_refused():
    ln = nn.LayerNorm(16)
    with torch.no_grad():
        ln.weight.copy_(gains().float())
        ln.bias.zero_()
    with pytest.raises(ArchitectureError, match="RMSNorm"):
        check_rms_norm(ln, 16)
    check_rms_norm(HandRMSNorm(gains()).float(), 16)  # an RMSNorm passes


@pytest.mark.parametrize("arch, found", [("llama", False), ("qwen2", False), ("gpt2", False), ("gemma3", True)])
def test_the_post_mlp_norm_is_found_by_tracing(arch, found):
    model, tok = tiny_model(arch), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    norms = post_mlp_norms(model, tok, a, [0, 1, 2])
    if not found:
        assert norms == {}
    else:
        assert norms == {l: model.model.layers[l].post_feedforward_layernorm for l in (0, 1, 2)}


def planted_target(model, tok, a, layer, bump):
    """z: the output of `layer` at the bare prompts when W_layer is moved by `bump` [d, d_ff]: reachable by an
    edit of that one layer by construction."""
    from alphaedit_core.keys import keys_and_outputs

    W = a.weight_view(layer)
    _, h0 = keys_and_outputs(model, tok, a, REQS, ["{}"], [layer], out_layer=layer)
    with torch.no_grad():
        W += bump
    _, z = keys_and_outputs(model, tok, a, REQS, ["{}"], [layer], out_layer=layer)
    with torch.no_grad():
        W -= bump
    return z, h0


@pytest.mark.parametrize("translate", [True, False])
def test_an_edit_through_the_post_norm_reaches_a_reachable_target(monkeypatch, translate):
    """On a tiny Gemma3, a target that one edit of the last layer can reach (planted by moving that layer's
    weights) is reached by MEMIT with a vanishing ridge when the residual is translated through the norm; asked of
    the matrix directly (the pre-fix editor), the same edit lands far from it."""
    model, tok = tiny_model("gemma3"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    L = 2
    for layer in model.model.layers:  # the tiny model's MLP outputs (~1e-3) are where ε = 1e-6 matters; Gemma's are
        layer.post_feedforward_layernorm.eps = 1e-12  # ~0.1 (see value_residual)
    bump = 0.05 * torch.randn(a.d_model, a.d_ff, generator=torch.Generator().manual_seed(7))
    z, h0 = planted_target(model, tok, a, L, bump)
    n = len(REQS)
    monkeypatch.setattr(editor_module, "compute_targets", lambda *args, **kw: TargetResult(
        z=z, h0=h0, steps=torch.zeros(n), loss=torch.zeros(n)))
    hp = EditHParams(layers=[L], mom2_update_weight=1e-9, context_template_count=1, context_template_length=5)
    ed = Editor(model, tok, hp, method="memit", covs={L: torch.eye(a.d_ff)}, templates=["{}"], progress=False)
    assert set(ed.post_norms) == {L}
    if not translate:
        ed.post_norms = {}
    report = ed.edit_batch(REQS)
    assert (z - h0).norm(dim=-1).min() > 0.1  # the target asks for a real change
    if translate:
        assert report.residual_left < 1e-3
    else:
        assert report.residual_left > 0.5


def test_without_a_post_norm_the_residual_is_asked_of_the_matrix_unchanged(monkeypatch):
    """LLaMA: the translation is never called, so the official algorithm's numbers are untouched."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    called = []
    monkeypatch.setattr(editor_module, "value_residual", lambda *args: called.append(1))
    hp = EditHParams(layers=[1, 2], v_num_grad_steps=3, context_template_count=1, context_template_length=5)
    ed = Editor(model, tok, hp, method="memit", covs={l: torch.eye(a.d_ff) for l in hp.layers}, templates=["{}"],
                progress=False)
    ed.edit_batch(REQS[:2])
    assert ed.post_norms == {} and called == []


def test_norm_anchoring_is_refused_where_the_mlp_output_is_normalised():
    """NAS's v* = v0 + (z − h0) mixes a pre-norm value with a residual change on Gemma: refused, not run wrong."""
    model, tok = tiny_model("gemma3"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    hp = EditHParams(layers=[1, 2], value_anchor="nas", context_template_count=1, context_template_length=5)
    with pytest.raises(ValueError, match="value_anchor='nas'.*normalise"):
        Editor(model, tok, hp, method="memit", covs={l: torch.eye(a.d_ff) for l in hp.layers}, templates=["{}"],
               progress=False)
