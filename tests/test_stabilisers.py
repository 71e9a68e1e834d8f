"""The stabilisers of long sequential streams (issue 16), on small random problems and tiny random models (seconds):
ENCORE's most-probable early stopping (MPES) and Frobenius-norm constraint, and Norm-Anchor Scaling (NAS)."""
import re

import pytest
import torch

from tiny import ARCHS, REQUESTS, assert_same_targets, tiny_model, tiny_model_sharp_head, tiny_tokenizer

from alphaedit_core import checkpoint as ckpt
from alphaedit_core.arch import ModelAdapter, layer_output, replace_layer_output
from alphaedit_core.editor import Editor
from alphaedit_core.hparams import ADDED_FIELDS, EditHParams
from alphaedit_core.projection import Projector, projector_from_cov
from alphaedit_core.prompts import context_templates, subject_last_index, target_ids
from alphaedit_core.requests import EditRequest
from alphaedit_core.solve import alphaedit_delta, memit_delta
from alphaedit_core.targets import (anchor_reference, anchor_values, compute_targets, compute_targets_reference,
                                    mlp_outputs, value_vectors)


# --- norm constraint (solve.py) -------------------------------------------------------------------------------
def problem(seed: int = 0, d: int = 6, d_ff: int = 12, n: int = 4, n_cache: int = 5):
    """A random AlphaEdit/MEMIT problem in float64: keys K [d_ff, n], residuals R [d, n], a projector P that drops
    4 random directions, cache_c = L Lᵀ, and an SPD second moment C."""
    g = torch.Generator().manual_seed(seed)
    K = torch.randn(d_ff, n, generator=g, dtype=torch.float64)
    R = torch.randn(d, n, generator=g, dtype=torch.float64)
    U = torch.linalg.qr(torch.randn(d_ff, d_ff, generator=g, dtype=torch.float64)).Q
    # P = I − U₄U₄ᵀ with a float64 basis (projector_from_cov stores float32: P would be idempotent to 1e-8 only)
    P = Projector(U[:, :4], complement=True, eigenvalues=torch.zeros(d_ff), n_kept=d_ff - 4)
    Lc = torch.randn(d_ff, n_cache, generator=g, dtype=torch.float64)
    B = torch.randn(d_ff, d_ff, generator=g, dtype=torch.float64)
    C = B @ B.T / d_ff + 0.1 * torch.eye(d_ff, dtype=torch.float64)
    return K, R, P, Lc, C


def test_norm_constraint_zero_is_the_plain_solve():
    K, R, P, Lc, C = problem()
    cache = Lc @ Lc.T
    plain, A = alphaedit_delta(K, R, P, cache, 10.0)
    zero, A0 = alphaedit_delta(K, R, P, cache, 10.0, 0.0)
    assert torch.equal(plain, zero) and torch.equal(A, A0)
    # the formula before the option existed, written out
    M = K @ K.T + cache
    before = torch.linalg.solve(P.apply(M) + 10.0 * torch.eye(M.shape[0], dtype=M.dtype), P.apply(K) @ R.T).T
    assert torch.equal(zero, before)
    plain, A = memit_delta(K, R, C, 15000.0)
    zero, A0 = memit_delta(K, R, C, 15000.0, 0.0)
    assert torch.equal(plain, zero) and torch.equal(A, A0)


@pytest.mark.parametrize("method", ["alphaedit", "memit"])
def test_norm_constraint_shrinks_the_update_monotonically(method):
    K, R, P, Lc, C = problem(1)
    weights = [0.0, 0.01, 0.3, 1.0, 3.0, 10.0, 100.0, 1e4]
    if method == "alphaedit":
        norms = [float(alphaedit_delta(K, R, P, Lc @ Lc.T, 1.0, mu)[0].norm()) for mu in weights]
    else:
        norms = [float(memit_delta(K, R, C, 0.5, mu)[0].norm()) for mu in weights]
    assert all(a > b for a, b in zip(norms, norms[1:])), norms
    assert norms[-1] < 0.01 * norms[0]


def test_norm_constraint_alphaedit_equals_least_squares():
    """The closed form equals the minimiser found by lstsq on the stacked system, over X with Δ = X P:
    ‖X P K − R‖² + ‖X P L‖² + (L2 + μ)‖X P‖²  (cache_c = L Lᵀ); Δ stays in P's range."""
    K, R, P, Lc, _ = problem(2)
    Pd = P.dense().double()
    for L2, mu in [(1.0, 0.0), (1.0, 2.5), (10.0, 20.0)]:
        delta, _ = alphaedit_delta(K, R, P, Lc @ Lc.T, L2, mu)
        stacked = torch.cat([K.T @ Pd, Lc.T @ Pd, (L2 + mu) ** 0.5 * Pd])
        rhs = torch.cat([R.T, torch.zeros(Lc.shape[1] + Pd.shape[0], R.shape[0], dtype=R.dtype)])
        Xt = torch.linalg.lstsq(stacked, rhs, rcond=1e-10, driver="gelsd").solution  # [d_ff, d], min-norm
        torch.testing.assert_close(delta, (Pd @ Xt).T, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(delta @ Pd, delta, atol=1e-9, rtol=1e-7)


def test_norm_constraint_memit_equals_least_squares():
    """Δ = R Kᵀ (λC + K Kᵀ + μI)⁻¹ minimises ‖Δ K − R‖² + λ‖Δ L‖² + μ‖Δ‖² (C = L Lᵀ): lstsq on the stacked
    system, and plain gradient descent on the objective."""
    K, R, _, _, C = problem(3)
    Lc = torch.linalg.cholesky(C)
    lam, mu = 0.7, 1.9
    delta, _ = memit_delta(K, R, C, lam, mu)
    eye = torch.eye(C.shape[0], dtype=C.dtype)
    stacked = torch.cat([K.T, lam ** 0.5 * Lc.T, mu ** 0.5 * eye])
    rhs = torch.cat([R.T, torch.zeros(2 * C.shape[0], R.shape[0], dtype=R.dtype)])
    torch.testing.assert_close(delta, torch.linalg.lstsq(stacked, rhs).solution.T, atol=1e-9, rtol=1e-7)
    X = torch.zeros_like(delta, requires_grad=True)
    opt = torch.optim.LBFGS([X], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def objective():
        opt.zero_grad()
        f = ((X @ K - R) ** 2).sum() + lam * ((X @ Lc) ** 2).sum() + mu * (X ** 2).sum()
        f.backward()
        return f

    opt.step(objective)
    torch.testing.assert_close(X.detach(), delta, atol=1e-6, rtol=1e-5)


# --- value-norm anchoring (targets.anchor_values) ---------------------------------------------------------------
def values(seed: int = 0, n: int = 5, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g) for _ in range(3))  # h0, v0, v*


def test_anchor_leaves_a_value_at_the_reference_norm_unchanged():
    h0, v0, v = values()
    z = h0 - v0 + v
    for i in range(len(z)):
        out, skipped = anchor_values(z[i : i + 1], h0[i : i + 1], v0[i : i + 1], float(v[i].norm()))
        assert not skipped.any()
        assert (out - z[i : i + 1]).abs().max() <= 1e-6


def test_anchor_halves_a_value_of_twice_the_reference_and_keeps_its_direction():
    h0, v0, v = values(1)
    z = h0 - v0 + v
    ref = float(v[0].norm()) / 2
    out, skipped = anchor_values(z, h0, v0, ref, skip=0.0)  # skip 0: no outlier rule
    new = value_vectors(out, h0, v0)
    assert not skipped.any()
    torch.testing.assert_close(new.norm(dim=-1), torch.full((len(z),), ref), atol=1e-5, rtol=1e-6)
    assert abs(float(new[0].norm()) - float(v[0].norm()) / 2) <= 1e-5
    torch.testing.assert_close(torch.cosine_similarity(new, v, dim=-1), torch.ones(len(z)), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[0], h0[0] - v0[0] + v[0] / 2, atol=1e-5, rtol=1e-6)


def test_anchor_skips_values_beyond_the_outlier_factor():
    """NAS's guard: ‖v*‖ > 2 × the reference leaves the request unedited (v* = v0, so z = h0)."""
    h0, v0, v = values(2)
    ref = float(v.norm(dim=-1).median())
    v[0] *= 3 * ref / v[0].norm()
    z = h0 - v0 + v
    out, skipped = anchor_values(z, h0, v0, ref, skip=2.0)
    assert skipped.tolist() == [True] + [bool(x) for x in (v[1:].norm(dim=-1) > 2 * ref)]
    torch.testing.assert_close(out[0], h0[0], atol=1e-6, rtol=0)
    kept = ~skipped
    torch.testing.assert_close(value_vectors(out, h0, v0)[kept].norm(dim=-1), torch.full((int(kept.sum()),), ref))


def test_anchor_reference_is_the_upper_trimmed_mean():
    assert anchor_reference(torch.arange(1.0, 21.0)) == pytest.approx(10.0)  # 20 values: the largest dropped
    assert anchor_reference(torch.tensor([1.0, 2.0, 100.0])) == pytest.approx(103 / 3)  # floor(0.15) = 0 dropped


@torch.no_grad()
def test_mlp_outputs_are_the_mlp_share_of_the_layer_output():
    """v0 is the MLP output projection's output at the subject's last token; for LLaMA, h0 − v0 is the residual
    stream entering the MLP block (the input of post_attention_layernorm)."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    L = 2
    v0 = mlp_outputs(model, tok, a, REQUESTS, "{}", L)
    store = {}
    norm = a.layers[L].post_attention_layernorm
    hooks = [norm.register_forward_pre_hook(lambda _m, args: store.__setitem__("mid", args[0])),
             a.layers[L].register_forward_hook(lambda _m, _a, out: store.__setitem__("out", layer_output(out)))]
    try:
        for i, r in enumerate(REQUESTS):
            ids, idx = subject_last_index(tok, r.prompt, r.subject)
            model(input_ids=torch.tensor([ids]))
            torch.testing.assert_close(store["out"][0, idx] - store["mid"][0, idx], v0[i], atol=1e-5, rtol=1e-5)
    finally:
        for h in hooks:
            h.remove()


def identity_projectors(d_ff: int, layers):
    return {l: projector_from_cov(torch.zeros(d_ff, d_ff), threshold=1.0, allow_degenerate=True) for l in layers}


def small_hp(**kw) -> EditHParams:
    base = dict(layers=[1, 2], v_lr=0.5, v_num_grad_steps=6, context_template_count=2, context_template_length=5,
                targets_chunk=4, L2=1.0, batch_size=3)
    return EditHParams(**{**base, **kw})


def test_editor_anchors_to_the_first_batch_of_the_unedited_model(tmp_path):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    h = small_hp(value_anchor="nas", value_anchor_skip=0.0)
    ed = Editor(model, tok, h, projectors=identity_projectors(a.d_ff, h.layers), progress=False)
    first = REQUESTS[:3]
    tr = compute_targets(model, tok, a, first, ed.templates, h)  # on the unedited model
    v0 = mlp_outputs(model, tok, a, first, ed.templates[0], h.layers[-1])
    expected = anchor_reference(value_vectors(tr.z, tr.h0, v0).norm(dim=-1))
    ed.run(REQUESTS, batch_size=3, checkpoint=tmp_path / "ck")
    assert ed.anchor_norm == pytest.approx(expected, rel=1e-5)
    assert all(r.anchor_skipped == 0 for r in ed.reports)
    # every value vector of a later batch, on the edited model, is rescaled to the reference
    tr = compute_targets(model, tok, a, REQUESTS[3:], ed.templates, h)
    z, skipped = ed._anchor(REQUESTS[3:], tr.z, tr.h0)
    v0 = mlp_outputs(model, tok, a, REQUESTS[3:], ed.templates[0], h.layers[-1])
    torch.testing.assert_close(value_vectors(z, tr.h0, v0).norm(dim=-1), torch.full((3,), ed.anchor_norm))
    # a resumed run reads the reference from the checkpoint; an unedited-model reference cannot be made later
    other = Editor(tiny_model("llama"), tok, h, projectors=identity_projectors(a.d_ff, h.layers), progress=False)
    other.load(tmp_path / "ck")
    assert other.anchor_norm == ed.anchor_norm and other.batches_done == 2
    ed.save_snapshot(tmp_path / "snap")
    fresh = Editor(tiny_model("llama"), tok, h, projectors=identity_projectors(a.d_ff, h.layers), progress=False)
    fresh.load_snapshot(tmp_path / "snap")
    assert fresh.anchor_norm == ed.anchor_norm
    other.anchor_norm = None
    with pytest.raises(RuntimeError, match="unedited model"):
        other.edit_batch(REQUESTS[3:])


def test_anchor_off_changes_nothing_and_reports_the_target_shift():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    h = small_hp()
    ed = Editor(model, tok, h, projectors=identity_projectors(a.d_ff, h.layers), progress=False)
    tr = compute_targets(model, tok, a, REQUESTS[:3], ed.templates, h)
    z, skipped = ed._anchor(REQUESTS[:3], tr.z, tr.h0)
    assert z is tr.z and not skipped.any() and ed.anchor_norm is None
    report = ed.edit_batch(REQUESTS[:3])
    assert report.target_shift_mean == pytest.approx(float((tr.z - tr.h0).norm(dim=-1).mean()), rel=1e-5)
    assert "value_anchor_norm" not in ed._anchor_meta()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The batched-vs-reference comparisons below hold to 1e-5 with one thread; with two, the different reduction
    order of the multithreaded matmuls alone moved qwen2's z by 1.03e-5 (measured). Same bound, fixed rounding."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- most-probable early stopping (targets.py) ------------------------------------------------------------------
# prompts ending at the subject (the label is read where δ is added) and short objects: the new object becomes the
# argmax within a few steps for some of them, never for others
PLANTED = [
    EditRequest("{}", "Tokyo", "capital", "Japan", case_id=0),
    EditRequest("{}", "France", "Paris", "Spain", case_id=1),
    EditRequest("The capital of {}", "Spain", "is", "Madrid", case_id=2),
    EditRequest("{} is the", "Berlin", "capital", "city", case_id=3),
]


def planted_setup(arch: str):
    model, tok = tiny_model_sharp_head(arch), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    # early_stop_loss tiny: only MPES (or the cap) stops a request
    h = EditHParams(layers=[1, 2], v_lr=0.3, v_num_grad_steps=10, context_template_count=2,
                    context_template_length=5, targets_chunk=3, L2=1.0, batch_size=3, early_stop_loss=1e-9)
    templates = context_templates(model, tok, length=h.context_template_length, count=h.context_template_count,
                                  seed_words=h.context_template_seeds, seed=h.seed)
    return model, tok, a, h, templates


@torch.no_grad()
def argmax_everywhere(model, tok, a, layer: int, templates, request, delta) -> bool:
    """With δ added to layer `layer`'s output at the subject's last token, is every token of the new object the
    argmax of the full model's logits, teacher-forced, on every rewriting prompt?"""
    tgt = target_ids(tok, request.target_new)
    for t in templates:
        ids, idx = subject_last_index(tok, t.format(request.prompt), request.subject)

        def add(_m, _a, out):
            h = layer_output(out).clone()
            h[0, idx] += delta
            return replace_layer_output(out, h)

        handle = a.layers[layer].register_forward_hook(add)
        try:
            logits = model(input_ids=torch.tensor([ids + tgt[:-1]])).logits[0]
        finally:
            handle.remove()
        if not torch.equal(logits[len(ids) - 1 : len(ids) - 1 + len(tgt)].argmax(-1), torch.tensor(tgt)):
            return False
    return True


def argmax_history(model, tok, a, h, templates) -> list[list[bool]]:
    """For each request and each step s (after s Adam updates of the loss rule), the argmax condition, checked by a
    plain forward of the full model: a loop independent of the stopping code."""
    out = [[] for _ in PLANTED]
    for s in range(h.v_num_grad_steps):
        r = compute_targets_reference(model, tok, a, PLANTED, templates, h.replace(v_num_grad_steps=s + 1))
        assert r.steps.tolist() == [s] * len(PLANTED)
        for i, req in enumerate(PLANTED):
            out[i].append(argmax_everywhere(model, tok, a, h.layers[-1], templates, req, r.z[i] - r.h0[i]))
    return out


def expected_stop(history: list[bool], count: int, cap: int) -> int:
    hits = [s for s, ok in enumerate(history) if ok]
    return hits[count - 1] if len(hits) >= count and hits[count - 1] < cap else cap


@pytest.fixture(scope="module", params=ARCHS)
def planted(request):
    model, tok, a, h, templates = planted_setup(request.param)
    return model, tok, a, h, templates, argmax_history(model, tok, a, h, templates)


@pytest.mark.parametrize("count", [1, 2])
def test_mpes_stops_when_the_object_is_first_the_argmax_everywhere(planted, count):
    model, tok, a, h, templates, history = planted
    cap = h.v_num_grad_steps - 1
    want = [expected_stop(hist, count, cap) for hist in history]
    assert any(0 < s < cap for s in want), "the planted case must stop some request midway"
    hm = h.replace(target_stop="most_probable", most_probable_count=count)
    ref = compute_targets_reference(model, tok, a, PLANTED, templates, hm)
    fast = compute_targets(model, tok, a, PLANTED, templates, hm)
    fused = compute_targets(model, tok, a, PLANTED, templates, hm, fused_head=True)  # the one-pass head's argmax
    assert ref.steps.tolist() == want
    assert fast.steps.tolist() == want
    assert fused.steps.tolist() == want
    assert_same_targets(fast, ref)
    assert_same_targets(fused, ref)


@pytest.fixture(scope="module")
def both_rules(planted):
    """The loss rule and MPES (per-request reference) on the planted requests and the tiny rewrites, with the loss
    threshold (a) out of reach and (b) halfway down the largest drop of the loss (one request stops midway by it)."""
    model, tok, a, h, templates, _ = planted
    requests = PLANTED + REQUESTS
    first = compute_targets_reference(model, tok, a, requests, templates, h.replace(v_num_grad_steps=1))
    full = compute_targets_reference(model, tok, a, requests, templates, h)
    i = int((first.loss - full.loss).argmax())
    runs = []
    for threshold in (h.early_stop_loss, float(first.loss[i] + full.loss[i]) / 2):
        hl = h.replace(early_stop_loss=threshold)
        hm = hl.replace(target_stop="most_probable")
        loss_rule = full if threshold == h.early_stop_loss else compute_targets_reference(
            model, tok, a, requests, templates, hl)
        runs.append((hm, loss_rule, compute_targets_reference(model, tok, a, requests, templates, hm)))
    return model, tok, a, templates, requests, runs


def test_mpes_never_outlasts_the_loss_rule(both_rules):
    *_, runs = both_rules
    for hm, loss_rule, mpes in runs:
        assert (mpes.steps <= hm.v_num_grad_steps - 1).all()
        assert (mpes.steps <= loss_rule.steps).all()
        same = mpes.steps == loss_rule.steps  # the same trajectory until the stop: the same z where stops agree
        assert (mpes.z[same] - loss_rule.z[same]).abs().max() <= 1e-6
    cap = runs[0][0].v_num_grad_steps - 1
    assert (runs[0][2].steps < runs[0][1].steps).any()  # MPES stops some request earlier
    assert (runs[1][1].steps < cap).any()  # and the loss threshold stops some request in the second case


@pytest.mark.parametrize("chunk", [1, 4])
def test_mpes_batched_equals_reference(both_rules, chunk):
    model, tok, a, templates, requests, runs = both_rules
    for hm, _, ref in runs:
        fast = compute_targets(model, tok, a, requests, templates, hm.replace(targets_chunk=chunk))
        assert fast.steps.tolist() == ref.steps.tolist()
        assert_same_targets(fast, ref)


# --- hparams and checkpoints -------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, message", [
    ("target_stop", "argmax", "must be one of ('loss', 'most_probable')"),
    ("most_probable_count", 0, "must be a positive integer"),
    ("norm_constraint", -1.0, "must be >= 0 (0: the plain solve)"),
    ("value_anchor", "on", "must be one of ('off', 'nas')"),
    ("value_anchor_skip", 0.5, "must be 0 (never skip) or > 1 (a multiple of the reference norm)"),
])
def test_bad_stabiliser_hparams_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=re.escape(f"hparams field {field!r}={value!r}: {message}")):
        EditHParams(**{field: value})


def test_mpes_count_beyond_the_step_cap_is_refused():
    with pytest.raises(ValueError, match="'most_probable_count'=6: can never be reached within v_num_grad_steps=5"):
        EditHParams(target_stop="most_probable", most_probable_count=6, v_num_grad_steps=5)


def test_stabiliser_fields_at_default_leave_the_identity_of_earlier_runs_unchanged():
    plain = EditHParams.load("smollm2-135m-instruct")
    assert not set(ADDED_FIELDS) & set(plain.to_dict())  # the dict (checkpoint identity, run digest) of before
    for field, value in [("target_stop", "most_probable"), ("most_probable_count", 2), ("norm_constraint", 20.0),
                         ("value_anchor", "nas"), ("value_anchor_skip", 3.0)]:
        h = plain.replace(**{field: value})
        assert h.to_dict()[field] == value
        assert EditHParams.from_dict(h.to_dict()) == h


def test_checkpoint_of_another_stabiliser_setting_is_refused(tmp_path):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    h = small_hp()
    ed = Editor(model, tok, h, projectors=identity_projectors(a.d_ff, h.layers), progress=False)
    ed.run(REQUESTS[:3], batch_size=3, checkpoint=tmp_path / "ck")
    for field, value, shown in [("norm_constraint", 5.0, "5.0"), ("target_stop", "most_probable", "'most_probable'")]:
        other = Editor(tiny_model("llama"), tok, h.replace(**{field: value}),
                       projectors=identity_projectors(a.d_ff, h.layers), templates=ed.templates, progress=False)
        message = rf"other hparams \({field}: checkpoint None, this run {shown}\)"  # absent from the old identity
        with pytest.raises(ckpt.CheckpointMismatch, match=message):
            other.load(tmp_path / "ck")
    same = Editor(tiny_model("llama"), tok, h, projectors=identity_projectors(a.d_ff, h.layers), templates=ed.templates,
                  progress=False)
    same.load(tmp_path / "ck")
    assert same.batches_done == 1
