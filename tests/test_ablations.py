"""The ablation "AlphaEdit's constraint without P" (`nullspace_mode="identity"`, P = I): the projector it builds
and the update it gives, against hand-written linear algebra in numpy that shares no code with the solver."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from tiny import REQUESTS, TEXT, tiny_model, tiny_tokenizer

from alphaedit_core.arch import ModelAdapter
from alphaedit_core.corpus import TextCorpus
from alphaedit_core.editor import Editor
from alphaedit_core.hparams import EditHParams
from alphaedit_core.projection import projector_from_cov
from alphaedit_core.solve import alphaedit_delta


def spd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, 3 * d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / (3 * d)


def test_identity_mode_keeps_every_direction_silently_and_applies_as_identity():
    c = spd(12, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither the degenerate error nor the near-degenerate warning
        p = projector_from_cov(c, mode="identity")
    assert p.n_kept == p.d == 12 and abs(p.energy_kept() - 1.0) < 1e-6
    m = torch.randn(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(p.apply(m), m, rtol=0, atol=1e-12)
    keys = torch.randn(7, 12, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(p.key_ratio(keys), torch.ones(7), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="'threshold', 'energy' or 'identity'"):
        projector_from_cov(c, mode="identy")


def test_alphaedit_with_p_identity_is_a_ridge_that_remembers_the_earlier_keys():
    """Δ = R Kᵀ (K Kᵀ + K_p K_pᵀ + L2 I)⁻¹: no C anywhere, only the earlier edits' keys K_p and the ridge."""
    g = np.random.default_rng(3)
    d_ff, d_model, n, n_prev, L2 = 10, 6, 4, 5, 2.5
    K, R, Kp = g.normal(size=(d_ff, n)), g.normal(size=(d_model, n)), g.normal(size=(d_ff, n_prev))
    expected = R @ K.T @ np.linalg.inv(K @ K.T + Kp @ Kp.T + L2 * np.eye(d_ff))
    p = projector_from_cov(spd(d_ff, 4), mode="identity")
    delta, _ = alphaedit_delta(torch.from_numpy(K), torch.from_numpy(R), p, torch.from_numpy(Kp @ Kp.T), L2)
    np.testing.assert_allclose(delta.numpy(), expected, rtol=1e-9, atol=1e-12)
    # P = I does not protect C's small directions: the update has a component along every eigenvector of C
    c = spd(d_ff, 4).numpy()
    _, vectors = np.linalg.eigh(c)
    assert np.abs(expected @ vectors[:, :3]).max() > 1e-3


def test_prepare_builds_p_identity_from_the_hparams(tmp_path):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    hp = EditHParams(layers=[1, 2], v_lr=0.5, v_num_grad_steps=4, context_template_count=0, targets_chunk=4,
                     L2=1.0, batch_size=3, mom2_n_tokens=120, mom2_seq_len=9, nullspace_mode="identity")
    docs = [line for line in TEXT.split("\n") if line]
    ed = Editor.prepare(model, tok, hp, corpus=TextCorpus(docs, "t"), fingerprint="tiny", stats_root=tmp_path,
                        progress=False)
    assert all(ed.projectors[l].n_kept == a.d_ff for l in hp.layers)
    with pytest.raises(ValueError, match="nullspace_mode"):
        EditHParams(nullspace_mode="identiy").validate()
