"""Exact invariants of the algorithm on tiny random models (seconds each)."""
import pytest
import torch

from tiny import ARCHS, REQUESTS, TEXT, tiny_model, tiny_tokenizer

from alphaedit_core.arch import ArchitectureError, ModelAdapter
from alphaedit_core.editor import Editor
from alphaedit_core.hparams import EditHParams
from alphaedit_core.keys import keys_and_outputs
from alphaedit_core.projection import Projector, projector_from_cov
from alphaedit_core.solve import alphaedit_delta, memit_delta
from alphaedit_core.targets import compute_targets, compute_targets_reference



def hp(**kw) -> EditHParams:
    base = dict(layers=[1, 2], v_lr=0.5, v_num_grad_steps=6, context_template_count=2, context_template_length=5,
                targets_chunk=4, L2=1.0, batch_size=3)
    return EditHParams(**{**base, **kw})


def identity_projectors(d_ff: int, layers) -> dict[int, Projector]:
    return {l: projector_from_cov(torch.zeros(d_ff, d_ff), threshold=1.0, allow_degenerate=True) for l in layers}


def corpus_keys(model, tok, adapter, layer) -> torch.Tensor:
    """Keys of the MLP output projection over the test text: [n_tokens, d_ff]."""
    store = {}
    h = adapter.mlp_out(layer).register_forward_pre_hook(lambda m, a: store.__setitem__("k", a[0]))
    with torch.no_grad():
        model(**tok(TEXT.split("\n"), return_tensors="pt", padding=True))
    h.remove()
    return store["k"].reshape(-1, adapter.d_ff)


def cov_projectors(model, tok, adapter, layers, rank_drop: int):
    """Projectors from a low-rank 'preserved' covariance: the top `rank_drop` directions of the text's keys."""
    out, covs = {}, {}
    for l in layers:
        k = corpus_keys(model, tok, adapter, l)
        u, s, _ = torch.linalg.svd(k.T.double(), full_matrices=False)
        c = (u[:, :rank_drop] * s[:rank_drop] ** 2) @ u[:, :rank_drop].T / len(k)
        covs[l] = c.float()
        out[l] = projector_from_cov(covs[l], threshold=1e-6)
    return out, covs


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_finds_modules(arch):
    model = tiny_model(arch)
    a = ModelAdapter.from_model(model)
    assert a.n_layers == 4 and a.d_model == 32
    assert a.d_ff == (128 if arch == "gpt2" else 64)
    assert a.weight_view(1).shape == (32, a.d_ff)
    name = a.mlp_out_names[1].rsplit(".", 1)[1]
    assert name == ("c_proj" if arch == "gpt2" else "down_proj")


def test_adapter_rejects_non_decoder():
    with pytest.raises(ArchitectureError, match="ModuleList"):
        ModelAdapter.from_model(_Fake())


class _Fake(torch.nn.Module):
    def __init__(self):
        super().__init__()

    @property
    def config(self):
        class C:
            hidden_size, num_hidden_layers = 8, 3

            def get_text_config(self):
                return self
        return C()


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_targets_equal_per_request(arch):
    """(c) the cached, batched optimisation gives the per-request reference's z, for every architecture."""
    model, tok = tiny_model(arch), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    h = hp(early_stop_loss=7.5)  # some requests stop early, others run to the end: chunks get rebuilt
    ed = Editor(model, tok, h, projectors=identity_projectors(a.d_ff, h.layers), progress=False)
    ref = compute_targets_reference(model, tok, a, REQUESTS, ed.templates, h)
    fast = compute_targets(model, tok, a, REQUESTS, ed.templates, h)
    assert ref.steps.tolist() == fast.steps.tolist()
    torch.testing.assert_close(fast.h0, ref.h0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.z, ref.z, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(fast.loss, ref.loss, atol=1e-4, rtol=1e-4)


def test_targets_reduce_the_loss_and_respect_the_clamp():
    model, tok = tiny_model("qwen2"), tiny_tokenizer()
    with torch.no_grad():  # a random head is nearly flat: make the logits respond to the hidden state
        model.get_output_embeddings().weight.mul_(100)
    a = ModelAdapter.from_model(model)
    h = hp(v_num_grad_steps=2, v_weight_decay=0.0, clamp_norm_factor=100.0)
    ed = Editor(model, tok, h, projectors=identity_projectors(a.d_ff, h.layers), progress=False)
    short = compute_targets(model, tok, a, REQUESTS, ed.templates, h)
    long = compute_targets(model, tok, a, REQUESTS, ed.templates, h.replace(v_num_grad_steps=15))
    assert (long.loss < short.loss).all() and (short.loss - long.loss).mean() > 0.5
    h = hp(v_num_grad_steps=15)
    long = compute_targets(model, tok, a, REQUESTS, ed.templates, h)
    norms = (long.z - long.h0).norm(dim=-1)
    assert (norms <= h.clamp_norm_factor * long.h0.norm(dim=-1) * (1 + 1e-5)).all()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_preserved_keys_unchanged(arch):
    """(a) after AlphaEdit, W k = W⁰ k for every key in P's preserved space (P k = 0), to float tolerance,
    while keys outside it do change."""
    model, tok = tiny_model(arch), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    h = hp()
    projectors, _ = cov_projectors(model, tok, a, h.layers, rank_drop=a.d_ff // 2)
    ed = Editor(model, tok, h, projectors=projectors, progress=False)
    ed.run(REQUESTS, batch_size=3)  # two batches: cache_c is used in the second
    for l, delta in ed.weight_deltas().items():
        P = projectors[l]
        preserved = P.basis if P.complement else torch.linalg.svd(torch.eye(a.d_ff) - P.dense())[0][:, : a.d_ff - P.n_kept]
        assert P.apply(preserved).abs().max() < 1e-5
        assert (delta @ preserved).abs().max() < 1e-6 * max(1.0, float(delta.abs().max()))
        assert delta.norm() > 1e-3
    # the preserved directions of the text's keys pass through unchanged: outputs on that text barely move
    for l in h.layers:
        k = corpus_keys(model, tok, a, l)
        kp = k - projectors[l].apply(k.T).T  # component in the preserved space
        assert (ed.weight_deltas()[l] @ kp.T).abs().max() < 1e-5


def test_key_maps_to_target_as_l2_vanishes():
    """(b) one layer, P = I, no templates, L2 → 0: the edited layer's output at the subject equals z."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    h = hp(layers=[2], context_template_count=0, L2=1e-8, v_num_grad_steps=8)
    ed = Editor(model, tok, h, projectors=identity_projectors(a.d_ff, h.layers), progress=False)
    report = ed.edit_batch(REQUESTS[:4])
    assert report.residual_left < 1e-4


def test_solve_maps_keys_exactly_in_range_of_p():
    torch.manual_seed(0)
    d_ff, d, n = 16, 6, 3
    basis = torch.linalg.qr(torch.randn(d_ff, d_ff, dtype=torch.float64))[0]
    P = Projector(basis[:, :10], False, torch.zeros(d_ff), 10)  # range(P): 10 directions
    K = basis[:, :10] @ torch.randn(10, n, dtype=torch.float64)
    R = torch.randn(d, n)
    delta, _ = alphaedit_delta(K, R, P, None, L2=1e-10)
    torch.testing.assert_close(delta @ K.double(), R.double(), atol=1e-6, rtol=1e-6)
    # and Δ = Δ P exactly: nothing reaches the preserved space even with a non-zero cache and L2
    C = torch.randn(d_ff, d_ff)
    delta, _ = alphaedit_delta(torch.randn(d_ff, n), R, P, C @ C.T, L2=10.0)
    assert (delta @ basis[:, 10:].double()).abs().max() < 1e-10


def test_memit_and_alphaedit_differ_exactly_where_they_should():
    """(d) same targets; with P = I, C = I and λ = L2 the two updates coincide, and in a sequence only the
    accumulated constraint cache_c separates AlphaEdit from its cache-free ablation."""
    torch.manual_seed(0)
    K, R = torch.randn(12, 4), torch.randn(5, 4)
    I = projector_from_cov(torch.zeros(12, 12), threshold=1.0, allow_degenerate=True)
    a_delta, _ = alphaedit_delta(K, R, I, None, L2=3.0)
    m_delta, _ = memit_delta(K, R, torch.eye(12), 3.0)
    torch.testing.assert_close(a_delta, m_delta, atol=1e-12, rtol=1e-10)

    tok = tiny_tokenizer()
    runs = {}
    for method in ("alphaedit", "alphaedit_no_cache", "memit"):
        model = tiny_model("llama")
        a = ModelAdapter.from_model(model)
        h = hp(L2=0.01, mom2_update_weight=0.01)
        ed = Editor(model, tok, h, method=method, projectors=identity_projectors(a.d_ff, h.layers),
                    covs={l: torch.eye(a.d_ff) for l in h.layers}, progress=False)
        first = ed.edit_batch(REQUESTS[:3])
        after_one = ed.weight_deltas()
        ed.edit_batch(REQUESTS[3:])
        runs[method] = (after_one, ed.weight_deltas(), first)
    for l in (1, 2):
        scale = runs["memit"][1][l].norm()
        assert (runs["alphaedit"][0][l] - runs["memit"][0][l]).norm() < 1e-4 * scale
        assert (runs["alphaedit_no_cache"][1][l] - runs["memit"][1][l]).norm() < 1e-4 * scale
        assert (runs["alphaedit"][1][l] - runs["memit"][1][l]).norm() > 1e-2 * scale


def test_same_seed_same_edits_other_seed_other_templates():
    """(f) determinism: the same seed gives bit-identical edits; the context templates depend on the seed."""
    tok = tiny_tokenizer()
    out = []
    for seed in (0, 0, 1):
        model = tiny_model("llama")
        a = ModelAdapter.from_model(model)
        h = hp(seed=seed)
        ed = Editor(model, tok, h, projectors=identity_projectors(a.d_ff, h.layers), progress=False)
        ed.edit_batch(REQUESTS[:3])
        out.append((ed.templates, ed.weight_deltas()))
    assert out[0][0] == out[1][0] and out[0][0] != out[2][0]
    for l in (1, 2):
        assert torch.equal(out[0][1][l], out[1][1][l])


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    """(g) a run stopped after one batch and resumed from its checkpoint ends with the same weights and cache_c
    as an uninterrupted run; restore() gives back the original weights exactly."""
    tok = tiny_tokenizer()

    def editor():
        model = tiny_model("llama")
        a = ModelAdapter.from_model(model)
        projectors, _ = cov_projectors(model, tok, a, [1, 2], rank_drop=20)
        return Editor(model, tok, hp(batch_size=2), projectors=projectors, progress=False)

    full = editor()
    full.run(REQUESTS)
    first = editor()
    first.run(REQUESTS, checkpoint=tmp_path / "ck", stop_after=1)
    assert first.batches_done == 1
    resumed = editor()
    resumed.run(REQUESTS, checkpoint=tmp_path / "ck")
    assert resumed.batches_done == 3 and resumed.case_ids == [r.case_id for r in REQUESTS]
    for l in (1, 2):
        assert torch.equal(full.adapter.weight_view(l), resumed.adapter.weight_view(l))
        assert torch.equal(full.cache_c[l], resumed.cache_c[l])
    original = {l: w.clone() for l, w in full.original.items()}
    full.restore()
    for l in (1, 2):
        assert torch.equal(full.adapter.weight_view(l), original[l])
    with pytest.raises(ValueError, match="other requests"):
        editor().run(list(reversed(REQUESTS)), checkpoint=tmp_path / "ck")


def test_keys_average_templates_like_the_reference():
    model, tok = tiny_model("qwen2"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    templates = ["{}", "A b. {}", "The c. {}"]
    keys, _ = keys_and_outputs(model, tok, a, REQUESTS[:2], templates, [1])
    single = [keys_and_outputs(model, tok, a, REQUESTS[:2], [t], [1])[0][1] for t in templates]
    expected = 0.5 * single[0] + 0.5 * (single[1] + single[2]) / 2
    torch.testing.assert_close(keys[1], expected, atol=1e-5, rtol=1e-5)


def test_editor_rejects_missing_statistics():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    with pytest.raises(ValueError, match="projector"):
        Editor(model, tok, hp(), progress=False)
    with pytest.raises(ValueError, match="second moments"):
        Editor(model, tok, hp(), method="memit", progress=False)
    with pytest.raises(ValueError, match="unknown method"):
        Editor(model, tok, hp(), method="rome", progress=False)
    with pytest.raises(ValueError, match="layers"):
        Editor(model, tok, hp(layers=[2, 7]), progress=False)
