"""The plug-in comparison's methods (P4): MEMIT with its update projected (Δ ← Δ P) and the official sequential
MEMIT (λ C + cache_c + K Kᵀ). Each is pinned by an identity with another method that shares none of its new code."""
from __future__ import annotations

import pytest
import torch
from tiny import REQUESTS, tiny_model, tiny_tokenizer

from alphaedit_core.arch import ModelAdapter
from alphaedit_core.editor import Editor
from alphaedit_core.hparams import EditHParams
from alphaedit_core.projection import projector_from_cov
from alphaedit_core.solve import memit_delta
from alphaedit_core import sweeps


def hp(**kw) -> EditHParams:
    base = dict(layers=[1, 2], v_lr=0.5, v_num_grad_steps=6, context_template_count=2, context_template_length=5,
                targets_chunk=4, L2=1.0, batch_size=3)
    return EditHParams(**{**base, **kw})


def identity_projector(d_ff: int):
    return projector_from_cov(torch.zeros(d_ff, d_ff), threshold=1.0, allow_degenerate=True)


def planted_projector(d_ff: int, kept: int, seed: int = 0):
    """A projector onto `kept` random orthonormal directions (the eigenvectors given eigenvalue 0)."""
    q, _ = torch.linalg.qr(torch.randn(d_ff, d_ff, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    eig = torch.ones(d_ff, dtype=torch.float64)
    eig[:kept] = 0.0
    return projector_from_cov(q @ torch.diag(eig) @ q.T, threshold=0.5), q[:, :kept]


def run(method: str, *, projector=None, cov=None, batches=2, **kw) -> tuple[list[dict], Editor]:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    h = hp(**kw)
    ed = Editor(model, tok, h, method=method, progress=False,
                projectors={l: projector or identity_projector(a.d_ff) for l in h.layers},
                covs={l: (torch.eye(a.d_ff) if cov is None else cov) for l in h.layers})
    out = []
    for b in range(batches):
        ed.edit_batch(REQUESTS[3 * b: 3 * b + 3])
        out.append({l: d.clone() for l, d in ed.weight_deltas().items()})
    return out, ed


def test_memit_delta_with_cache_equals_memit_with_the_cache_folded_into_c():
    """λ C + cache_c + K Kᵀ = λ (C + cache_c / λ) + K Kᵀ: the same Δ from the plain solve."""
    g = torch.Generator().manual_seed(1)
    K, R = torch.randn(10, 4, generator=g), torch.randn(6, 4, generator=g)
    B = torch.randn(10, 7, generator=g)
    C, cache = torch.eye(10) + 0.1 * torch.ones(10, 10), (B @ B.T).double()
    with_cache, A = memit_delta(K, R, C, 5.0, cache_c=cache)
    folded, _ = memit_delta(K, R, C.double() + cache / 5.0, 5.0)
    torch.testing.assert_close(with_cache, folded, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(A, 5.0 * C.double() + cache + K.double() @ K.double().T)


def test_sequential_memit_is_alphaedit_when_p_is_identity_and_c_is_identity():
    """AlphaEdit's system P (K Kᵀ + cache_c) + L2 I with P = I is K Kᵀ + cache_c + L2 I; sequential MEMIT's with
    C = I and λ = L2 is the same: two batches must give the same weights (the second reads cache_c)."""
    seq, ed_seq = run("memit_seq", mom2_update_weight=0.01, L2=0.01)
    alpha, ed_alpha = run("alphaedit", mom2_update_weight=0.01, L2=0.01)
    plain, _ = run("memit", mom2_update_weight=0.01, L2=0.01)
    for l in (1, 2):
        scale = alpha[1][l].norm()
        assert (seq[1][l] - alpha[1][l]).norm() < 1e-5 * scale
        torch.testing.assert_close(ed_seq.cache_c[l], ed_alpha.cache_c[l])
        assert (seq[0][l] - plain[0][l]).norm() < 1e-5 * scale  # first batch: cache_c is still 0
        assert (seq[1][l] - plain[1][l]).norm() > 1e-2 * scale  # second batch: the earlier keys count


def test_projected_memit_is_memit_when_p_is_identity():
    projected, _ = run("memit_projected", batches=1, mom2_update_weight=2.0)
    plain, _ = run("memit", batches=1, mom2_update_weight=2.0)
    for l in (1, 2):
        torch.testing.assert_close(projected[0][l], plain[0][l], rtol=0, atol=1e-6)


def test_projected_memit_updates_only_inside_p_and_its_first_layer_is_memit_times_p():
    d_ff = ModelAdapter.from_model(tiny_model("llama")).d_ff
    P, basis = planted_projector(d_ff, kept=d_ff // 2)
    dense = (basis @ basis.T).float()
    projected, ed = run("memit_projected", projector=P, mom2_update_weight=2.0)
    plain, _ = run("memit", batches=1, mom2_update_weight=2.0)
    assert not ed.cache_c  # no accumulated constraint
    for l in (1, 2):
        d = projected[1][l]
        assert (d - d @ dense).norm() < 1e-3 * d.norm()  # Δ (I − P) = 0 up to float32 rounding of W − W⁰
        assert d.norm() > 0
    # layer 1 is solved first, on the unedited model: its update is MEMIT's, projected
    torch.testing.assert_close(projected[0][1], plain[0][1] @ dense, rtol=1e-4, atol=1e-6)


def test_the_plugin_methods_need_what_they_read():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    h = hp()
    a = ModelAdapter.from_model(model)
    with pytest.raises(ValueError, match="memit_projected needs a projector"):
        Editor(model, tok, h, method="memit_projected", covs={l: torch.eye(a.d_ff) for l in h.layers},
               progress=False)
    with pytest.raises(ValueError, match="memit_seq needs the second moments"):
        Editor(model, tok, h, method="memit_seq", projectors={l: identity_projector(a.d_ff) for l in h.layers},
               progress=False)


ROW = dict(diff=0.05, ci_low=0.02, ci_high=0.08)
ZERO = dict(diff=0.0, ci_low=-0.02, ci_high=0.02)
NEG = dict(diff=-0.05, ci_low=-0.08, ci_high=-0.02)


@pytest.mark.parametrize("rows, verdict", [
    (dict(efficacy=ZERO, rewrite_acc=ZERO, specificity=ROW, locality=ZERO), "reproduced"),
    (dict(efficacy=NEG, rewrite_acc=ZERO, specificity=ROW, locality=ROW), "partly reproduced"),
    (dict(efficacy=ROW, rewrite_acc=ROW, specificity=ZERO, locality=NEG), "not reproduced"),
    ({}, "not testable here"),
])
def test_p4_verdict_rule(rows, verdict):
    assert sweeps.p4_plugin(rows, edits=200)["verdict"] == verdict


def test_lower_drift_counts_as_better_in_the_p4_evidence():
    out = sweeps.p4_plugin(dict(specificity=ROW, drift=NEG), dict(specificity=ZERO), edits=200)
    assert "drift -0.05 [-0.08, -0.02] (better)" in out["evidence"]
    assert "Sequential MEMIT" in out["evidence"]


def test_plugin_methods_get_only_their_default_point():
    grid = sweeps.operating_grid(dict(L2=10.0, clamp_norm_factor=4.0, seed=0, mom2_update_weight=15000.0),
                                 l2s=[1.0], lambdas=[1500.0], clamps=[0.75], seeds=[1],
                                 methods=("alphaedit", "memit", "memit_projected", "memit_seq"))
    plugin = [s for s in grid if s.method in sweeps.PLUGIN_METHODS]
    assert [(s.id, s.knob) for s in plugin] == [("memit_projected-default", "default"),
                                                ("memit_seq-default", "default")]
    assert {s.knob for s in grid if s.method == "memit"} == {"default", "mom2_update_weight", "clamp_norm_factor",
                                                              "seed"}
