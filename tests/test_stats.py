"""Second-moment statistics, their cache and the projector built from them."""
import shutil

import pytest
import torch

from tiny import TEXT, tiny_model, tiny_tokenizer

from alphaedit_core.arch import ModelAdapter
from alphaedit_core.corpus import TextCorpus
from alphaedit_core.models import model_fingerprint
from alphaedit_core.projection import decompose, projector_from_cov, projector_from_spectrum, subspace_cosine
from alphaedit_core.stats import StaleStatsError, StatsKey, compute_second_moments, corpus_keys, layer_stats

DOCS = [line for line in TEXT.split("\n") if line]


def keys_by_hand(model, tok, adapter, layer, docs):
    out = []
    for d in docs:
        store = {}
        h = adapter.mlp_out(layer).register_forward_pre_hook(lambda m, a: store.__setitem__("k", a[0]))
        with torch.no_grad():
            model(**tok(d, return_tensors="pt"))
        h.remove()
        out.append(store["k"][0])
    return torch.cat(out).double()


def test_second_moment_is_the_mean_of_k_kT_over_real_tokens():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    covs, counted = compute_second_moments(model, tok, a, [1, 3], TextCorpus(DOCS, "t"), n_tokens=None,
                                           seq_len=256, batch_windows=2, progress=False)
    for l in (1, 3):
        k = keys_by_hand(model, tok, a, l, DOCS)
        assert counted == len(k)
        torch.testing.assert_close(covs[l].double(), k.T @ k / len(k), atol=1e-6, rtol=1e-5)


def test_token_budget_is_exact():
    model, tok = tiny_model("gpt2"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    _, counted = compute_second_moments(model, tok, a, [0], TextCorpus(DOCS, "t"), n_tokens=37, seq_len=8,
                                        progress=False)
    assert counted == 37


def test_cache_is_reused_and_a_stale_file_is_refused(tmp_path):
    """(e) another model, layer or corpus never silently reuses a statistics file."""
    tok = tiny_tokenizer()
    m0, m1 = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    a0, a1 = ModelAdapter.from_model(m0), ModelAdapter.from_model(m1)
    corpus, other = TextCorpus(DOCS, "t"), TextCorpus(DOCS[:-1], "t")
    kw = dict(n_tokens=180, seq_len=64, root=tmp_path, progress=False)
    f0, f1 = model_fingerprint(m0), model_fingerprint(m1)
    assert f0 != f1 and corpus.identity != other.identity
    first = layer_stats(m0, tok, a0, [1], corpus, fingerprint=f0, **kw)
    files = list(tmp_path.rglob("*.safetensors"))
    assert len(files) == 1
    again = layer_stats(m0, tok, a0, [1], corpus, fingerprint=f0, **kw)  # read back, not recomputed
    assert torch.equal(first[1], again[1]) and len(list(tmp_path.rglob("*.safetensors"))) == 1
    # a different model / corpus / layer / budget has a different key and a different file
    key = StatsKey(f0, a0.mlp_out_names[1], corpus.identity, 180, 64, "float32")
    others = [StatsKey(f1, a1.mlp_out_names[1], corpus.identity, 180, 64, "float32"),
              StatsKey(f0, a0.mlp_out_names[1], other.identity, 180, 64, "float32"),
              StatsKey(f0, a0.mlp_out_names[2], corpus.identity, 180, 64, "float32"),
              StatsKey(f0, a0.mlp_out_names[1], corpus.identity, 100, 64, "float32")]
    assert len({k.path(tmp_path) for k in others + [key]}) == 5
    # a stale file placed where another model's statistics belong is refused, naming the mismatch
    stale = others[0].path(tmp_path)
    stale.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(key.path(tmp_path), stale)
    with pytest.raises(StaleStatsError, match="model"):
        layer_stats(m1, tok, a1, [1], corpus, fingerprint=f1, **kw)
    stale = others[1].path(tmp_path)
    stale.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(key.path(tmp_path), stale)
    with pytest.raises(StaleStatsError, match="corpus"):
        layer_stats(m0, tok, a0, [1], other, fingerprint=f0, **kw)


def test_projector_annihilates_preserved_directions_and_stores_the_smaller_basis():
    torch.manual_seed(0)
    d = 24
    u = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))[0]
    ev = torch.cat([torch.full((6,), 1e-4), torch.logspace(-1, 1, d - 6, dtype=torch.float64)])
    cov = (u * ev) @ u.T
    p = projector_from_cov(cov, threshold=2e-2)
    assert p.n_kept == 6 and not p.complement and p.basis.shape == (d, 6)
    P = p.dense().double()
    torch.testing.assert_close(P @ P, P, atol=1e-6, rtol=0)
    torch.testing.assert_close(P, P.T, atol=1e-6, rtol=0)
    big = u[:, 6:]  # the preserved (large-variance) directions are annihilated
    assert (P @ big).abs().max() < 1e-6
    q = projector_from_cov(cov, threshold=5.0)  # keeps most directions: stores the complement instead
    assert q.complement and q.basis.shape[1] == d - q.n_kept
    assert torch.allclose(q.dense().double() @ u[:, -1], torch.zeros(d, dtype=torch.float64), atol=1e-6)
    e = projector_from_cov(cov, mode="energy", energy=0.05)
    assert e.energy_kept() <= 0.05 and e.n_kept > 6
    assert subspace_cosine(p, p) == pytest.approx(1.0, abs=1e-6)
    ratios = p.key_ratio(big.T.float())
    assert ratios.max() < 1e-5


def test_one_decomposition_serves_a_threshold_sweep():
    """A sweep builds every P from one eigendecomposition: each equals the P built from C on its own, and the number
    kept is the count of the planted eigenvalues below the threshold (the spectrum is not changed by its use)."""
    torch.manual_seed(1)
    d = 20
    u = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))[0]
    ev = torch.logspace(-4, 1, d, dtype=torch.float64)  # 1e-4 ... 10, ascending
    cov = (u * ev) @ u.T
    spectrum = decompose(cov, layer=3)
    for t in [1e-5, 1e-3, 2e-2, 0.5, 20.0]:
        swept = projector_from_spectrum(spectrum, threshold=t, allow_degenerate=True)
        alone = projector_from_cov(cov, threshold=t, allow_degenerate=True)
        assert swept.n_kept == int((ev < t).sum())
        assert swept.complement == alone.complement and torch.equal(swept.basis, alone.basis)
    energy = projector_from_spectrum(spectrum, mode="energy", energy=0.01)
    assert energy.n_kept == int((ev.cumsum(0) / ev.sum() <= 0.01).sum())
    with pytest.raises(ValueError, match="layer 3"):
        projector_from_spectrum(spectrum, threshold=1e-9)


def test_heldout_keys_skip_the_statistics_tokens():
    model, tok = tiny_model("qwen2"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    corpus = TextCorpus(DOCS, "t")
    everything = corpus_keys(model, tok, a, [1], corpus, skip_tokens=0, n_tokens=60, seq_len=1000)[1]
    later = corpus_keys(model, tok, a, [1], corpus, skip_tokens=20, n_tokens=40, seq_len=1000)[1]
    assert everything.shape == (60, 64) and later.shape == (40, 64)
