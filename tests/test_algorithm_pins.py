"""Pins of the algorithm against independent expectations, on tiny random models (seconds each).

Every expectation here is computed by code in this file that shares nothing with `alphaedit_core` beyond the
model and the tokenizer: the subject's last-token position by counting the tokens of the text up to the subject
(and hand-read positions on the tiny tokenizer), keys by a forward pre-hook on the MLP output module found by its
attribute path, the target loss as a plain full forward of the HF model with a hook that adds δ, torch's own
Adam, the second moments by an explicit float64 loop, the closed-form updates as dense inverses. Each test names
the planted bug it catches (the issue "Trustworthy long runs", part 4; `quality/planted_bugs.md` records which
test caught which bug in a scratch copy of the package).

The library API is used only as the thing under test: `ModelAdapter` is built because the library's functions
take one, never to locate a module or read an activation for an expectation.
"""
from __future__ import annotations

import math

import pytest
import torch

from tiny import TEXT, tiny_model, tiny_tokenizer

from alphaedit_core.arch import ModelAdapter
from alphaedit_core.corpus import TextCorpus
from alphaedit_core.editor import Editor
from alphaedit_core.hparams import EditHParams
from alphaedit_core.keys import keys_and_outputs
from alphaedit_core.projection import Projector, projector_from_cov, subspace_cosine
from alphaedit_core.prompts import context_templates, subject_last_index, target_ids, tokenize
from alphaedit_core.requests import EditRequest
from alphaedit_core.solve import alphaedit_delta, condition_number, memit_delta
from alphaedit_core.stats import compute_second_moments, corpus_keys
from alphaedit_core.targets import compute_targets, compute_targets_reference

DOCS = [line for line in TEXT.split("\n") if line]
BOS = 1  # the tiny tokenizer's "<s>", put first by its post-processor

REQUESTS = [
    EditRequest("The capital of {} is", "France", "Rome", "Paris", case_id=0),  # subject in the middle
    EditRequest("{} speaks", "Danielle Darrieux", "English", "French", case_id=1),  # at the start, 2 tokens
    EditRequest("The mother tongue of {}", "Danielle Darrieux", "Spanish", "French", case_id=2),  # at the end
    EditRequest("The official religion of {} is", "Edwin of Northumbria", "Islam", "Christianity", case_id=3),
    EditRequest("{} was created by", "Apple A5", "Google", "Apple", case_id=4),
]
TEMPLATES = ["{}", "Because it rains. {}", "You know what I mean. {}"]  # fixed context templates (no sampling)


# ================================================================================================ own helpers
def my_subject_last(tok, text_with_slot: str, subject: str) -> tuple[list[int], int]:
    """Ids of the text with the subject filled in, and the subject's last-token position, found by counting the
    tokens of the text cut right after the subject (the tokenizer splits words at spaces, so the cut text is a
    prefix of the full one; checked)."""
    before, after = text_with_slot.split("{}", 1)
    ids = tok(before + subject + after).input_ids
    head = tok(before + subject).input_ids
    assert ids[: len(head)] == head, (text_with_slot, subject)
    return ids, len(head) - 1


def down_proj(model, layer: int) -> torch.nn.Module:
    """The MLP output projection by its attribute path (LLaMA-like or GPT-2)."""
    if hasattr(model, "transformer"):
        return model.transformer.h[layer].mlp.c_proj
    return model.model.layers[layer].mlp.down_proj


def block(model, layer: int) -> torch.nn.Module:
    return model.transformer.h[layer] if hasattr(model, "transformer") else model.model.layers[layer]


def w_of(model, layer: int) -> torch.Tensor:
    """The edited matrix as [d_model, d_ff], a copy."""
    m = down_proj(model, layer)
    w = m.weight.detach().clone()
    return w if isinstance(m, torch.nn.Linear) else w.T.contiguous()


def set_w(model, layer: int, w: torch.Tensor) -> None:
    m = down_proj(model, layer)
    with torch.no_grad():
        m.weight.copy_(w if isinstance(m, torch.nn.Linear) else w.T)


@torch.no_grad()
def my_activations(model, ids: list[int], layers: list[int], out_layers: list[int] = ()):
    """One unpadded forward: inputs of the MLP output projection at `layers` ([seq, d_ff] each) and outputs of the
    decoder blocks `out_layers` ([seq, d_model] each)."""
    keys, outs, handles = {}, {}, []
    for l in layers:
        handles.append(down_proj(model, l).register_forward_pre_hook(
            lambda _m, args, l=l: keys.__setitem__(l, args[0][0].detach().clone())))
    for l in out_layers:
        handles.append(block(model, l).register_forward_hook(
            lambda _m, _a, out, l=l: outs.__setitem__(l, (out[0] if isinstance(out, tuple) else out)[0].clone())))
    try:
        model(input_ids=torch.tensor([ids]))
    finally:
        for h in handles:
            h.remove()
    return keys, outs


def my_keys(model, tok, requests, templates, layers) -> dict[int, torch.Tensor]:
    """Keys at the subject's last token, averaged as the reference's compute_ks: the bare template alone, the
    sampled ones together, then the mean of the two group means. {layer: [n, d_ff]} (float64)."""
    out = {l: [] for l in layers}
    for r in requests:
        per_t = {l: [] for l in layers}
        for t in templates:
            ids, pos = my_subject_last(tok, t.format(r.prompt), r.subject)
            keys, _ = my_activations(model, ids, layers)
            for l in layers:
                per_t[l].append(keys[l][pos].double())
        for l in layers:
            ks = per_t[l]
            out[l].append(ks[0] if len(ks) == 1 else (ks[0] + torch.stack(ks[1:]).mean(0)) / 2)
    return {l: torch.stack(v) for l, v in out.items()}


def my_outputs(model, tok, requests, layer) -> torch.Tensor:
    """Decoder-block `layer` output at the subject's last token of the bare prompt: [n, d_model] (float64)."""
    rows = []
    for r in requests:
        ids, pos = my_subject_last(tok, r.prompt, r.subject)
        rows.append(my_activations(model, ids, [], [layer])[1][layer][pos].double())
    return torch.stack(rows)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def identity_projector(d_ff: int) -> Projector:
    """P = I: every direction kept, stored as an empty complement basis."""
    return Projector(torch.zeros(d_ff, 0), True, torch.zeros(d_ff), d_ff)


def hparams(**kw) -> EditHParams:
    base = dict(layers=[1, 2], v_lr=0.05, v_num_grad_steps=4, context_template_count=2, context_template_length=5,
                targets_chunk=2, L2=1e-3, batch_size=3, early_stop_loss=1e-9, clamp_norm_factor=4.0)
    return EditHParams(**{**base, **kw})


# ================================================================================ subject's last-token position
# Hand-read on the tiny tokenizer (tokens printed with tok.convert_ids_to_tokens; <s> is position 0):
HAND_POSITIONS = [
    ("{} speaks", "Danielle Darrieux", 2, "ĠDarrieux"),  # start: <s> Danielle ĠDarrieux Ġs peak s
    ("The capital of {} is", "France", 6, "ce"),  # middle, subject in 3 tokens: ĠF ran ce
    ("I like {}", "Toko Yasuda", 10, "uda"),  # end: ... ĠTok o ĠY as uda
    ("The official religion of {} is", "Edwin of Northumbria", 12, "ĠNorthumbria"),
    ("{} was created by", "Apple A5", 4, "5"),  # <s> Ap ple ĠA 5 Ġw ...
    ("{}", "Berlin", 3, "lin"),  # the subject alone: <s> B er lin
    ("Because it rains. {} is located in", "Berlin", 11, "lin"),  # a context template's prefix
    ("{} is a", "Toko Yasuda", 6, "uda"),  # the KL prompt
    ("The mother tongue of {}", "Danielle Darrieux", 13, "ĠDarrieux"),
]


@pytest.mark.parametrize("template,subject,pos,token", HAND_POSITIONS)
def test_subject_last_index_matches_hand_read_positions(template, subject, pos, token):
    """Bug pinned: the subject's last-token position off by one in prompts.py."""
    tok = tiny_tokenizer()
    ids, idx = subject_last_index(tok, template, subject)
    assert ids == tok(template.format(subject)).input_ids
    assert tok.convert_ids_to_tokens(ids)[pos] == token  # the hand reading itself
    assert my_subject_last(tok, template, subject)[1] == pos  # the counting rule agrees with the hand reading
    assert idx == pos


def test_tokenize_pads_right_and_appends_suffixes():
    tok = tiny_tokenizer()
    t = tokenize(tok, ["{} speaks", "The capital of {} is"], ["Danielle Darrieux", "France"], [[7, 8], []])
    a = tok("Danielle Darrieux speaks").input_ids + [7, 8]
    b = tok("The capital of France is").input_ids
    assert t.lengths == [len(a), len(b)] and t.subject_last == [2, 6]
    width = max(len(a), len(b))
    assert t.input_ids.shape == (2, width)
    assert t.input_ids[0, : len(a)].tolist() == a and t.input_ids[1, : len(b)].tolist() == b
    assert t.input_ids[0, len(a):].eq(tok.pad_token_id).all() and t.input_ids[1, len(b):].eq(tok.pad_token_id).all()
    assert t.attention_mask.sum(1).tolist() == [len(a), len(b)]
    assert t.attention_mask[1, : len(b)].eq(1).all() and t.attention_mask[1, len(b):].eq(0).all()


def test_target_ids_are_the_spaced_target_without_bos():
    tok = tiny_tokenizer()
    for target in ("Rome", " Rome ", "Edwin of Northumbria"):
        full = tok(" " + target.strip()).input_ids
        assert full[0] == BOS
        assert target_ids(tok, target) == full[1:]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_keys_and_outputs_equal_hooked_keys_at_the_counted_position(arch):
    """Bug pinned: the subject position off by one (prompts.py), and keys/outputs read elsewhere (keys.py)."""
    model, tok = tiny_model(arch), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    keys, out = keys_and_outputs(model, tok, a, REQUESTS, TEMPLATES, [1, 2], out_layer=2)
    mine = my_keys(model, tok, REQUESTS, TEMPLATES, [1, 2])
    for l in (1, 2):
        assert keys[l].shape == (len(REQUESTS), a.d_ff)
        assert rel(keys[l], mine[l]) < 1e-5
    assert rel(out, my_outputs(model, tok, REQUESTS, 2)) < 1e-5
    # the same keys one position later are far away: the comparison can tell an off-by-one
    shifted = []
    for r in REQUESTS:
        ids, pos = my_subject_last(tok, r.prompt, r.subject)
        shifted.append(my_activations(model, ids, [1])[0][1][pos - 1].double())
    bare, _ = keys_and_outputs(model, tok, a, REQUESTS, ["{}"], [1])
    assert rel(bare[1], my_keys(model, tok, REQUESTS, ["{}"], [1])[1]) < 1e-5
    assert rel(torch.stack(shifted), bare[1].double()) > 0.05
    # an output layer below the deepest key layer, and several passes (rows_per_pass)
    keys, out = keys_and_outputs(model, tok, a, REQUESTS, TEMPLATES, [2], out_layer=1, rows_per_pass=4)
    assert rel(keys[2], mine[2]) < 1e-5 and rel(out, my_outputs(model, tok, REQUESTS, 1)) < 1e-5
    keys, out = keys_and_outputs(model, tok, a, REQUESTS, TEMPLATES, [1])
    assert out is None and rel(keys[1], mine[1]) < 1e-5


# ================================================================================================ target values
def my_target(model, tok, request: EditRequest, templates: list[str], hp: EditHParams, *, shift: int = 0,
              label_shift: int = 0):
    """z for one request from the formula of targets.py's docstring / REFERENCE.md, with torch's Adam:
    loss = mean_t NLL(target | template_t) + kl_factor · KL(p_δ ‖ p_0 on "{s} is a") + v_weight_decay · ‖δ‖/‖h0‖²,
    δ added to the output of decoder block L at the subject's last token; the loss read from the model's own
    logits (v_loss_layer = last layer). `shift` moves the δ position, `label_shift` the positions whose logits
    are scored (to show that the test can see an off-by-one).
    Returns (z, loss of the last evaluation, updates taken)."""
    assert hp.v_loss_layer in (-1, model.config.num_hidden_layers - 1)
    L = hp.layers[-1]
    tgt = tok(" " + request.target_new.strip()).input_ids
    assert tgt[0] == BOS
    tgt = tgt[1:]
    rows = []
    for t in templates:
        ids, pos = my_subject_last(tok, t.format(request.prompt), request.subject)
        rows.append((ids + tgt[:-1], pos + shift, [len(ids) - 1 + label_shift + k for k in range(len(tgt))]))
    kl_ids, kl_pos = my_subject_last(tok, "{} is a", request.subject)

    def logprobs(ids, pos, delta):
        onehot = torch.zeros(len(ids), 1)
        onehot[pos] = 1.0

        def add(_m, _a, out):
            h = out[0] if isinstance(out, tuple) else out
            h = h + onehot * delta
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handle = block(model, L).register_forward_hook(add)
        try:
            return model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
        finally:
            handle.remove()

    ids0, pos0 = my_subject_last(tok, request.prompt, request.subject)
    h0 = my_activations(model, ids0, [], [L])[1][L][pos0]
    with torch.no_grad():
        kl_ref = logprobs(kl_ids, kl_pos + shift, torch.zeros(h0.shape[0]))[kl_pos + shift]

    def loss_of(delta):
        nll = 0.0
        for ids, pos, label_pos in rows:
            lp = logprobs(ids, pos, delta)
            nll = nll + sum(-lp[p, y] for p, y in zip(label_pos, tgt)) / len(tgt)
        nll = nll / len(rows)
        lp = logprobs(kl_ids, kl_pos + shift, delta)[kl_pos + shift]
        kl = (lp.exp() * (lp - kl_ref)).sum()
        return nll + hp.kl_factor * kl + hp.v_weight_decay * delta.norm() / h0.norm() ** 2

    delta = torch.zeros(h0.shape[0], requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.v_lr)  # torch defaults: betas (0.9, 0.999), eps 1e-8
    for it in range(hp.v_num_grad_steps):
        opt.zero_grad()
        loss = loss_of(delta)
        if loss.item() < hp.early_stop_loss or it == hp.v_num_grad_steps - 1:
            break
        loss.backward()
        opt.step()
        with torch.no_grad():
            cap = hp.clamp_norm_factor * h0.norm()
            if delta.norm() > cap:
                delta.mul_(cap / delta.norm())
    return (h0 + delta).detach(), loss.item(), it


@pytest.fixture(scope="module")
def target_setup():
    """Qwen2 (untied head) with its head scaled so that the logits respond to the hidden state: every term of the
    loss and the δ position then move z by hundreds of times the tolerance (see the sensitivity test)."""
    model, tok = tiny_model("qwen2"), tiny_tokenizer()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(30)
    hp = hparams(v_weight_decay=0.5, kl_factor=0.5)
    mine = [my_target(model, tok, r, TEMPLATES, hp) for r in REQUESTS]
    return model, tok, hp, mine


@pytest.mark.parametrize("find", [compute_targets, compute_targets_reference], ids=["batched", "per_request"])
def test_targets_equal_an_independent_implementation(target_setup, find):
    """Bugs pinned: the weight-decay term dropped; the subject position off by one (prompts.py); an off-by-one in
    targets.py's label / δ positions; the KL term, the Adam update or the clamp changed."""
    model, tok, hp, mine = target_setup
    a = ModelAdapter.from_model(model)
    res = find(model, tok, a, REQUESTS, TEMPLATES, hp)
    z = torch.stack([m[0] for m in mine])
    assert res.steps.tolist() == [m[2] for m in mine] == [hp.v_num_grad_steps - 1] * len(REQUESTS)
    assert rel(res.h0, my_outputs(model, tok, REQUESTS, hp.layers[-1])) < 1e-5
    assert rel(res.z - res.h0, z - res.h0) < 1e-3  # the optimised δ, to 0.1 %
    torch.testing.assert_close(res.loss, torch.tensor([m[1] for m in mine]), atol=1e-4, rtol=1e-4)


def test_target_comparison_is_sensitive_to_each_planted_bug(target_setup):
    """The tolerances of the test above (1e-3 relative on δ, 1e-4 on the loss) are far below what each planted bug
    changes, for every request: checked on our own implementation with the term dropped or the position moved."""
    model, tok, hp, mine = target_setup
    variants = [dict(hp=hp.replace(v_weight_decay=0.0)), dict(hp=hp.replace(kl_factor=0.0)), dict(hp=hp, shift=1),
                dict(hp=hp, shift=-1), dict(hp=hp, label_shift=-1)]
    for r, (z, loss, _) in zip(REQUESTS, mine):
        h0 = my_outputs(model, tok, [r], hp.layers[-1])[0].float()
        for v in variants:
            kw = dict(v)
            z2, loss2, _ = my_target(model, tok, r, TEMPLATES, kw.pop("hp"), **kw)
            seen = max(rel(z2 - h0, z - h0) / 1e-3, abs(loss2 - loss) / (1e-4 + 1e-4 * abs(loss)))
            assert seen > 20, (r.case_id, v, seen)


def test_targets_with_early_stop_and_a_binding_clamp(target_setup):
    """Requests stop at their own step (chunks rebuilt) and the norm clamp binds: still the independent z."""
    model, tok, hp, _ = target_setup
    a = ModelAdapter.from_model(model)
    base = hp.replace(clamp_norm_factor=0.05, v_num_grad_steps=5)
    first = [my_target(model, tok, r, TEMPLATES, base.replace(v_num_grad_steps=1))[1] for r in REQUESTS]
    # a stop threshold between the requests' initial losses: three stop at once, so that the chunk of five is
    # rebuilt for the two others (fewer than half active), which run all steps
    ordered = sorted(first)
    cut = (ordered[2] + ordered[3]) / 2
    assert ordered[3] - ordered[2] > 1e-3
    h = base.replace(early_stop_loss=cut, targets_chunk=5)
    mine = [my_target(model, tok, r, TEMPLATES, h) for r in REQUESTS]
    assert sorted({m[2] for m in mine}) == [0, 4]  # 0: stopped before any update
    for find in (compute_targets, compute_targets_reference):
        res = find(model, tok, a, REQUESTS, TEMPLATES, h)
        assert res.steps.tolist() == [m[2] for m in mine]
        z = torch.stack([m[0] for m in mine])
        assert rel(res.z - res.h0, z - res.h0) < 1e-3
        norms = (res.z - res.h0).norm(dim=-1)
        moved = res.steps > 0
        torch.testing.assert_close(norms[moved], 0.05 * res.h0.norm(dim=-1)[moved], rtol=1e-4, atol=0)


# =================================================================================== the update, layer by layer
@pytest.mark.parametrize("method", ["alphaedit", "memit"])
def test_residual_is_split_over_the_remaining_layers(method):
    """Bug pinned: the residual split across layers. With P = I (or C = I, λ → 0), L2 → 0 and one template, each
    layer's update maps its key exactly to its share: Δ_i k_i = (z − cur_i) / (number of layers left), with k_i
    and cur_i (the output of the last edited layer L at the subject) read after the updates of the layers before
    i. Consequently the last layer closes the gap: after the edit the output of L at the subject is z."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    layers = [0, 1, 2]
    L = layers[-1]
    hp = hparams(layers=layers, L2=1e-12, mom2_update_weight=1e-12)
    requests = REQUESTS[:4]
    z = compute_targets(model, tok, a, requests, ["{}"], hp).z.double()  # deterministic: the editor's own z
    original = {l: w_of(model, l) for l in layers}
    ed = Editor(model, tok, hp, method=method, projectors={l: identity_projector(a.d_ff) for l in layers},
                covs={l: torch.eye(a.d_ff) for l in layers}, templates=["{}"], progress=False)
    ed.edit_batch(requests)
    final = {l: w_of(model, l) for l in layers}
    h0 = my_outputs(model, tok, requests, L)  # edited model
    assert rel(h0, z) < 1e-4  # the last layer closes the gap
    for i, l in enumerate(layers):
        for j in layers:  # the model as the editor saw it before updating layer l
            set_w(model, j, final[j] if j < l else original[j])
        cur = my_outputs(model, tok, requests, L)
        k = my_keys(model, tok, requests, ["{}"], [l])[l]  # [n, d_ff]
        moved = (final[l].double() - original[l].double()) @ k.T  # Δ_l k  [d, n]
        share = (z - cur).T / (len(layers) - i)
        assert rel(moved, share) < 1e-3, (l, rel(moved, share))
        if i < len(layers) - 1:  # a split by the wrong count is far outside the tolerance
            assert rel(moved, (z - cur).T / (len(layers) - i + 1)) > 0.1
            assert rel(moved, (z - cur).T) > 0.1
    for l in layers:
        set_w(model, l, final[l])


def test_cache_c_holds_the_keys_of_the_edited_model():
    """Bug pinned: cache_c built from keys taken before the edit instead of after. After each batch,
    cache_c[l] grows by K Kᵀ with K the template-averaged keys recomputed on the edited model."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    hp = hparams(L2=1e-2)
    ed = Editor(model, tok, hp, projectors={l: identity_projector(a.d_ff) for l in hp.layers}, templates=TEMPLATES,
                progress=False)
    before = my_keys(model, tok, REQUESTS[:3], TEMPLATES, hp.layers)
    assert all(float(ed.cache_c[l].abs().max()) == 0.0 for l in hp.layers)
    ed.edit_batch(REQUESTS[:3])
    after = my_keys(model, tok, REQUESTS[:3], TEMPLATES, hp.layers)
    for l in hp.layers:
        expected = after[l].T @ after[l]
        assert ed.cache_c[l].shape == (a.d_ff, a.d_ff)
        assert rel(ed.cache_c[l], expected) < 1e-5, l
    # the first edited layer's keys cannot change (its own update comes after its input); the second's do:
    l = hp.layers[-1]
    assert rel(before[l].T @ before[l], after[l].T @ after[l]) > 1e-2
    # a second batch adds its own keys, again read after its edit
    first = {l: ed.cache_c[l].double().clone() for l in hp.layers}
    ed.edit_batch(REQUESTS[3:])
    more = my_keys(model, tok, REQUESTS[3:], TEMPLATES, hp.layers)
    for l in hp.layers:
        assert rel(ed.cache_c[l], first[l] + more[l].T @ more[l]) < 1e-5, l


def test_restore_resets_everything_and_a_rerun_equals_a_fresh_editor():
    """Bug pinned: restore() not resetting cache_c."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    hp = hparams(L2=1e-3)
    proj = {l: identity_projector(a.d_ff) for l in hp.layers}
    originals = {l: w_of(model, l) for l in range(4)}
    ed = Editor(model, tok, hp, projectors=proj, templates=TEMPLATES, progress=False)
    ed.run(REQUESTS[:4], batch_size=2)
    edited = {l: w_of(model, l) for l in hp.layers}
    assert all(not torch.equal(edited[l], originals[l]) for l in hp.layers)
    ed.restore()
    for l in range(4):
        assert torch.equal(w_of(model, l), originals[l]), l
    for l in hp.layers:
        assert float(ed.cache_c[l].abs().max()) == 0.0
    assert ed.batches_done == 0 and ed.case_ids == [] and ed.reports == []
    again = ed.run(REQUESTS[:4], batch_size=2)
    rerun = {l: w_of(model, l) for l in hp.layers}
    rerun_c = {l: ed.cache_c[l].clone() for l in hp.layers}
    # a fresh editor on a fresh copy of the same model
    model2 = tiny_model("llama")
    fresh = Editor(model2, tok, hp, projectors=proj, templates=TEMPLATES, progress=False)
    ref = fresh.run(REQUESTS[:4], batch_size=2)
    for l in hp.layers:
        assert torch.equal(rerun[l], w_of(model2, l)), l
        assert torch.equal(rerun_c[l], fresh.cache_c[l]), l
    assert [r.edits_done for r in again] == [r.edits_done for r in ref] == [2, 4]
    # a stale cache_c would have changed the second run: the same edit made with the first run's cache differs
    stale = Editor(tiny_model("llama"), tok, hp, projectors=proj, templates=TEMPLATES, progress=False)
    for l in hp.layers:
        stale.cache_c[l] = rerun_c[l].clone()
    stale.run(REQUESTS[:4], batch_size=2)
    assert max(rel(w_of(stale.model, l) - originals[l], rerun[l] - originals[l]) for l in hp.layers) > 1e-2


def test_layer_range_is_checked_at_the_model_depth():
    """Bug pinned: the layer-range check off by one. A 4-layer model accepts layer 3 and refuses layer 4."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    assert a.n_layers == 4
    EditHParams(layers=[3]).check_model(4)
    with pytest.raises(ValueError, match="only 4 layers"):
        EditHParams(layers=[4]).check_model(4)
    with pytest.raises(ValueError, match="only 4 layers"):
        EditHParams(layers=[1, 4]).check_model(4)
    for ok in (-4, -1, 3):
        EditHParams(layers=[0], v_loss_layer=ok).check_model(4)
    for bad in (-5, 4):
        with pytest.raises(ValueError, match="v_loss_layer"):
            EditHParams(layers=[0], v_loss_layer=bad).check_model(4)
    with pytest.raises(ValueError, match="below the last edited layer"):
        EditHParams(layers=[2], v_loss_layer=1).check_model(4)
    proj = {l: identity_projector(a.d_ff) for l in range(5)}
    with pytest.raises(ValueError, match="only 4 layers"):
        Editor(model, tok, hparams(layers=[4]), projectors=proj, templates=["{}"], progress=False)
    # the last layer itself can be edited, and the edit reaches its targets (P = I, L2 → 0)
    hp = hparams(layers=[3], L2=1e-12)
    ed = Editor(model, tok, hp, projectors=proj, templates=["{}"], progress=False)
    z = compute_targets(model, tok, a, REQUESTS[:3], ["{}"], hp).z
    report = ed.edit_batch(REQUESTS[:3])
    assert rel(my_outputs(model, tok, REQUESTS[:3], 3), z) < 1e-4
    assert report.residual_left < 1e-4


def test_batch_report_matches_own_measurements():
    """The per-batch report: norms, residual left, solve condition, steps and loss of the targets."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    hp = hparams(L2=1e-2)
    originals = {l: w_of(model, l) for l in hp.layers}
    z = compute_targets(model, tok, a, REQUESTS[:3], TEMPLATES, hp)
    k1 = my_keys(model, tok, REQUESTS[:3], TEMPLATES, [1])[1]  # the first layer's keys (unchanged by the edit)
    ed = Editor(model, tok, hp, projectors={l: identity_projector(a.d_ff) for l in hp.layers}, templates=TEMPLATES,
                diagnostics=True, progress=False)
    r = ed.edit_batch(REQUESTS[:3])
    after = {l: w_of(model, l) for l in hp.layers}
    assert (r.batch, r.n_requests, r.edits_done) == (0, 3, 3)
    assert r.target_steps_mean == pytest.approx(float(z.steps.float().mean()))
    assert r.target_loss_mean == pytest.approx(float(z.loss.mean()), rel=1e-5)
    for l in hp.layers:
        assert r.delta_norm[l] == pytest.approx(float((after[l] - originals[l]).double().norm()), rel=1e-4)
        assert r.total_norm[l] == pytest.approx(float((after[l] - originals[l]).double().norm()), rel=1e-4)
        assert r.weight_norm[l] == pytest.approx(float(originals[l].double().norm()), rel=1e-6)
    s = torch.linalg.eigvalsh(k1.T @ k1)  # A = K Kᵀ + L2 I (P = I, empty cache): cond = (s_max + L2) / L2
    assert r.condition[1] == pytest.approx(float((s[-1] + hp.L2) / hp.L2), rel=1e-3)
    out = my_outputs(model, tok, REQUESTS[:3], hp.layers[-1]).float()
    left = ((z.z - out).norm(dim=-1) / (z.z - z.h0).norm(dim=-1)).mean()
    assert r.residual_left == pytest.approx(float(left), rel=1e-3, abs=1e-6)
    assert r.seconds_targets > 0 and r.seconds_keys > 0 and r.seconds_solve > 0
    # a second batch: delta_norm is this batch's step, total_norm the distance from the original weights
    before2 = {l: w_of(model, l) for l in hp.layers}
    r2 = ed.edit_batch(REQUESTS[3:])
    for l in hp.layers:
        w = w_of(model, l)
        assert r2.delta_norm[l] == pytest.approx(float((w - before2[l]).double().norm()), rel=1e-4)
        assert r2.total_norm[l] == pytest.approx(float((w - originals[l]).double().norm()), rel=1e-4)
    assert (r2.batch, r2.n_requests, r2.edits_done) == (1, 2, 5) and ed.batches_done == 2
    assert ed.case_ids == [q.case_id for q in REQUESTS] and ed.reports == [r, r2]
    with pytest.raises(ValueError, match="empty"):
        ed.edit_batch([])


def test_run_batches_stops_and_calls_back():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    hp = hparams(batch_size=2)
    ed = Editor(model, tok, hp, projectors={l: identity_projector(a.d_ff) for l in hp.layers}, templates=TEMPLATES,
                progress=False)
    seen = []
    ed.run(REQUESTS, stop_after=2, on_batch=lambda e, batch, rep: seen.append(([q.case_id for q in batch], rep.batch)))
    assert seen == [([0, 1], 0), ([2, 3], 1)] and ed.batches_done == 2
    assert ed.run(REQUESTS, deadline=0.0) == ed.reports and ed.batches_done == 2  # past deadline: no new batch
    ed.restore()
    ed.run(REQUESTS, batch_size=4)
    assert [len(r.delta_norm) for r in ed.reports] == [2, 2] and ed.case_ids == [0, 1, 2, 3, 4]
    assert [r.n_requests for r in ed.reports] == [4, 1]


# ============================================================================================ the closed forms
def _random_projector(d: int, kept: int, complement: bool, seed: int = 0) -> tuple[Projector, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    P = u[:, :kept] @ u[:, :kept].T
    basis = u[:, kept:] if complement else u[:, :kept]
    return Projector(basis, complement, torch.zeros(d), kept), P


@pytest.mark.parametrize("complement", [False, True])
def test_alphaedit_delta_equals_the_dense_closed_form(complement):
    """Δ = R Kᵀ P (K_p K_pᵀ P + K Kᵀ P + L2 I)⁻¹ (REFERENCE.md, step 5), as a dense inverse in float64."""
    g = torch.Generator().manual_seed(1)
    d_ff, d, n = 20, 6, 4
    proj, P = _random_projector(d_ff, 13, complement)
    K = torch.randn(d_ff, n, generator=g, dtype=torch.float64)
    R = torch.randn(d, n, generator=g, dtype=torch.float64)
    Kp = torch.randn(d_ff, 30, generator=g, dtype=torch.float64)
    I = torch.eye(d_ff, dtype=torch.float64)
    for cache, L2 in ((None, 0.7), (Kp @ Kp.T, 0.7), (Kp @ Kp.T, 10.0)):
        C = torch.zeros(d_ff, d_ff, dtype=torch.float64) if cache is None else cache
        expected = R @ K.T @ P @ torch.linalg.inv(C @ P + K @ K.T @ P + L2 * I)
        delta, A = alphaedit_delta(K.float(), R.float(), proj, None if cache is None else cache.float(), L2)
        assert delta.shape == (d, d_ff)
        assert rel(delta, expected) < 1e-5
        assert rel(A, P @ (C + K @ K.T) + L2 * I) < 1e-5
    # float64 inputs stay float64 end to end
    delta, _ = alphaedit_delta(K, R, proj, Kp @ Kp.T, 0.7)
    assert rel(delta, R @ K.T @ P @ torch.linalg.inv((Kp @ Kp.T + K @ K.T) @ P + 0.7 * I)) < 1e-10


def test_memit_delta_equals_the_dense_closed_form():
    """Δ = R Kᵀ (λ C + K Kᵀ)⁻¹ (MEMIT)."""
    g = torch.Generator().manual_seed(2)
    d_ff, d, n = 20, 6, 4
    K = torch.randn(d_ff, n, generator=g, dtype=torch.float64)
    R = torch.randn(d, n, generator=g, dtype=torch.float64)
    X = torch.randn(d_ff, 50, generator=g, dtype=torch.float64)
    C = X @ X.T / 50
    for lam in (0.3, 15.0):
        expected = R @ K.T @ torch.linalg.inv(lam * C + K @ K.T)
        delta, A = memit_delta(K.float(), R.float(), C.float(), lam)
        assert delta.shape == (d, d_ff)
        assert rel(delta, expected) < 1e-5
        assert rel(A, lam * C + K @ K.T) < 1e-6
    A = torch.diag(torch.tensor([4.0, 2.0, 0.5], dtype=torch.float64))
    assert condition_number(A) == pytest.approx(8.0)


def _spectrum_cov(d: int, eigenvalues: torch.Tensor, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    return (u * eigenvalues) @ u.T, u


def test_projector_equals_own_eigendecomposition():
    """P = U_keep U_keepᵀ for the eigenvalues below the threshold (absolute) or, in energy mode, for the smallest
    directions holding at most that share of the trace; both storage forms; the diagnostics."""
    d = 16
    ev = torch.tensor([1e-5, 2e-4, 3e-3, 1e-2, 1.5e-2, 0.03, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 2.0, 3.0, 4.0, 5.0],
                      dtype=torch.float64)
    cov, u = _spectrum_cov(d, ev)
    for kw, kept in ((dict(threshold=2e-2), 5), (dict(threshold=0.5), 10), (dict(threshold=4.5), 15),
                     (dict(mode="energy", energy=0.01), 7), (dict(mode="energy", energy=0.5), 14)):
        if kw.get("mode") == "energy":  # own rule: the smallest eigenvalues whose sum is <= energy · trace
            share = torch.cumsum(ev, 0) / ev.sum()
            assert int((share <= kw["energy"]).sum()) == kept
        else:
            assert int((ev < kw["threshold"]).sum()) == kept
        p = projector_from_cov(cov.float(), **kw)
        assert p.n_kept == kept and p.d == d
        assert p.complement == (kept > d - kept)
        assert p.basis.shape == (d, d - kept if p.complement else kept)
        P = u[:, :kept] @ u[:, :kept].T
        assert (p.dense().double() - P).abs().max() < 1e-5
        x = torch.randn(d, 3, dtype=torch.float64)
        assert (p.apply(x) - P @ x).abs().max() < 1e-5
        assert p.energy_kept() == pytest.approx(float(ev[:kept].sum() / ev.sum()), rel=1e-5)
        keys = torch.randn(5, d)
        assert torch.allclose(p.key_ratio(keys).double(), (P @ keys.T.double()).norm(dim=0) / keys.double().norm(dim=1),
                              atol=1e-5)
        assert torch.allclose(torch.sort(p.eigenvalues.double()).values, ev, rtol=1e-4, atol=1e-6)
        q = Projector.from_state(p.state())
        assert q.complement == p.complement and q.n_kept == p.n_kept and torch.equal(q.basis, p.basis)
        assert torch.equal(q.eigenvalues, p.eigenvalues)
    with pytest.raises(ValueError, match="mode"):
        projector_from_cov(cov, mode="other")
    # the defaults: the official absolute threshold 2e-2, energy share 0.01, degenerate projectors refused
    assert projector_from_cov(cov).n_kept == 5
    assert projector_from_cov(cov, mode="energy").n_kept == 7
    with pytest.raises(ValueError, match=r"^projector keeps 16 of 16"):
        projector_from_cov(cov, threshold=10.0)
    with pytest.raises(ValueError, match=r"^projector of layer 3 keeps 0 of 16"):
        projector_from_cov(cov, threshold=1e-9, layer=3)
    assert projector_from_cov(cov, threshold=10.0, allow_degenerate=True).n_kept == 16
    # "below the threshold" is strict: an eigenvalue equal to it is not kept (a diagonal C has exact eigenvalues)
    diag = torch.diag(torch.tensor([0.5, 0.25, 1.0, 2.0, 0.125, 4.0], dtype=torch.float64))
    assert projector_from_cov(diag, threshold=0.5).n_kept == 2
    # C must be a finite square matrix
    with pytest.raises(ValueError, match=r"^projector: C must be a square \[d_ff, d_ff\] matrix, got shape \[16, 15\]"):
        projector_from_cov(cov[:, :15])
    with pytest.raises(ValueError, match=r"^projector: C must be a square .* got shape \[16\]"):
        projector_from_cov(cov[0])
    bad = cov.clone()
    bad[0, 1], bad[2, 3] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"^projector: C \(16x16\) is not finite: 1 NaN and 1 infinite entries"):
        projector_from_cov(bad)
    a = projector_from_cov(cov, threshold=2e-2)
    b = projector_from_cov(cov, threshold=0.5)
    # tr(P_a P_b) / max rank: range(P_a) ⊂ range(P_b) gives 5 / 10, in either order
    assert subspace_cosine(a, b) == pytest.approx(0.5, abs=1e-5)
    assert subspace_cosine(b, a) == pytest.approx(0.5, abs=1e-5)
    assert subspace_cosine(b, b) == pytest.approx(1.0, abs=1e-5)
    one = Projector(u[:, :1].float(), False, ev.float(), 1)  # rank 1
    assert subspace_cosine(one, one) == pytest.approx(1.0, abs=1e-5)
    zero = Projector(torch.zeros(d, 0), False, ev.float(), 0)  # P = 0: no shared direction, and no 0 / 0
    assert subspace_cosine(zero, zero) == 0.0
    # a float64 basis works in float64: the dense matrix and the key ratios keep its precision
    for complement in (False, True):
        p64, P64 = _random_projector(d, 6, complement)
        assert p64.dense().dtype == torch.float64 and (p64.dense() - P64).abs().max() < 1e-12
        keys = torch.randn(4, d, dtype=torch.float32)
        ratio = p64.key_ratio(keys)
        assert ratio.dtype == torch.float64
        assert torch.allclose(ratio, (P64 @ keys.T.double()).norm(dim=0) / keys.double().norm(dim=1), atol=1e-12)


# ==================================================================================== second moments, held-out
def my_window_keys(model, tok, docs, layers, seq_len=None) -> dict[int, torch.Tensor]:
    """Keys of every token of the corpus windows, in corpus order, float64: {layer: [tokens, d_ff]}. A window
    is a document's tokens (with the tokenizer's BOS) or, with `seq_len`, BOS + the next seq_len − 1 tokens."""
    out = {l: [] for l in layers}
    for doc in docs:
        ids = tok(doc).input_ids
        assert ids[0] == BOS
        body = ids[1:]
        step = len(body) if seq_len is None else seq_len - 1
        for start in range(0, len(body), step):
            keys, _ = my_activations(model, [BOS] + body[start : start + step], layers)
            for l in layers:
                out[l].append(keys[l].double())
    return {l: torch.cat(v) for l, v in out.items()}


@pytest.mark.parametrize("seq_len,budget", [(1000, None), (1000, 150), (9, 100)])
def test_second_moments_equal_an_explicit_float64_loop(seq_len, budget):
    """Bug pinned: the second moments divided by n + 1 (or any other count): C = Σ k kᵀ / n over the first
    `budget` non-padding tokens (None: all of them), to a relative 1e-6 of the matrix and 1e-5 of its largest
    entry (dividing by n + 1 is off by 1/n, here > 5e-3)."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    keys = my_window_keys(model, tok, DOCS, [1, 3], None if seq_len == 1000 else seq_len)
    n = len(keys[1]) if budget is None else budget
    assert n <= len(keys[1]) < 2 * n + 100
    covs, counted = compute_second_moments(model, tok, a, [1, 3], TextCorpus(DOCS, "t"), n_tokens=n,
                                           seq_len=seq_len, batch_windows=3, progress=False)
    assert counted == n
    for l in (1, 3):
        k = keys[l][:n]
        expected = k.T @ k / n
        assert covs[l].dtype == torch.float32 and covs[l].shape == (a.d_ff, a.d_ff)
        assert rel(covs[l], expected) < 1e-6, rel(covs[l], expected)
        assert (covs[l].double() - expected).abs().max() < 1e-5 * expected.abs().max()
        assert rel(expected * n / (n + 1), expected) > 1000 * 1e-6  # the planted bug is far outside the tolerance
    covs64, _ = compute_second_moments(model, tok, a, [1], TextCorpus(DOCS, "t"), n_tokens=n, seq_len=seq_len,
                                       dtype=torch.float64, progress=False)
    assert covs64[1].dtype == torch.float64 and rel(covs64[1], keys[1][:n].T @ keys[1][:n] / n) < 1e-6
    with pytest.raises(ValueError, match="no tokens"):
        compute_second_moments(model, tok, a, [1], TextCorpus([], "empty"), n_tokens=10, seq_len=8, progress=False)


def test_heldout_keys_are_the_keys_after_the_skipped_tokens():
    """Bug pinned: the held-out keys not skipped. With a skip ending at a document boundary, corpus_keys equals
    the keys of the tokens that follow; with a cut inside a document, every later document's keys still match."""
    model, tok = tiny_model("qwen2"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    corpus = TextCorpus(DOCS, "t")
    keys = my_window_keys(model, tok, DOCS, [1, 2])
    lengths = [len(tok(d).input_ids) for d in DOCS]
    skip = lengths[0] + lengths[1]
    n = lengths[2] + lengths[3] + 5  # ends inside the fifth document
    got = corpus_keys(model, tok, a, [1, 2], corpus, skip_tokens=skip, n_tokens=n, seq_len=1000, batch_windows=2)
    for l in (1, 2):
        assert got[l].shape == (n, a.d_ff)
        assert rel(got[l], keys[l][skip : skip + n]) < 1e-5
        assert rel(got[l], keys[l][:n]) > 0.05  # not skipping is visible
    one = corpus_keys(model, tok, a, [1], corpus, skip_tokens=skip, n_tokens=n, seq_len=1000, batch_windows=1)
    assert rel(one[1], keys[1][skip : skip + n]) < 1e-5  # one window per pass, the skip ending on a boundary
    with pytest.raises(ValueError):  # a budget of no token is refused
        corpus_keys(model, tok, a, [1], corpus, skip_tokens=skip, n_tokens=0, seq_len=1000)
    # skip 0: the first tokens
    got0 = corpus_keys(model, tok, a, [1], corpus, skip_tokens=0, n_tokens=n, seq_len=1000)
    assert rel(got0[1], keys[1][:n]) < 1e-5
    # a cut inside the second document: the rest of it comes first, then the later documents as they are
    cut = lengths[0] + 4
    rest = lengths[1] - 4
    got = corpus_keys(model, tok, a, [1], corpus, skip_tokens=cut, n_tokens=rest + lengths[2], seq_len=1000)
    assert got[1].shape == (rest + lengths[2], a.d_ff)
    assert rel(got[1][rest:], keys[1][lengths[0] + lengths[1] : lengths[0] + lengths[1] + lengths[2]]) < 1e-5


def test_prepare_builds_statistics_and_projectors_from_the_hparams(tmp_path):
    """Editor.prepare: the second moments of the configured corpus budget and window, and P by the configured rule."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    layers, n, seq_len = [1, 2], 120, 9
    keys = my_window_keys(model, tok, DOCS, layers, seq_len=seq_len)
    C = {l: keys[l][:n].T @ keys[l][:n] / n for l in layers}
    ev = {l: torch.linalg.eigvalsh(C[l]) for l in layers}
    # a threshold between two eigenvalues of layer 1, far (relative 1e-3) from every eigenvalue of both layers
    gaps = [float((ev[1][i] + ev[1][i + 1]) / 2) for i in range(30, 50)]
    threshold = next(t for t in gaps if all(float(((e - t) / t).abs().min()) > 1e-3 for e in ev.values()))
    kept = {l: int((ev[l] < threshold).sum()) for l in layers}
    assert all(5 <= k <= 60 for k in kept.values()), kept
    hp = hparams(layers=layers, mom2_n_tokens=n, mom2_seq_len=seq_len, nullspace_threshold=threshold)
    m = Editor.prepare(model, tok, hp, method="memit", corpus=TextCorpus(DOCS, "t"), fingerprint="tiny",
                       stats_root=tmp_path, templates=TEMPLATES, progress=False)
    assert m.method == "memit" and not m.projectors  # MEMIT keeps C, no P
    for l in layers:
        assert rel(m.covs[l], C[l]) < 1e-6
    assert len(list(tmp_path.rglob("*.safetensors"))) == len(layers)
    ed = Editor.prepare(model, tok, hp, corpus=TextCorpus(DOCS, "t"), fingerprint="tiny", stats_root=tmp_path,
                        templates=TEMPLATES, progress=False)
    for l in layers:
        assert ed.projectors[l].n_kept == kept[l]
        # projection_check's C2: AlphaEdit's P is the one built from MEMIT's C
        assert torch.equal(ed.projectors[l].basis, projector_from_cov(m.covs[l], threshold=threshold).basis)
    assert ed.method == "alphaedit" and ed.templates == TEMPLATES
    assert not ed.covs  # AlphaEdit solves with P and cache_c: it keeps no [d_ff, d_ff] C per layer
    assert len(list(tmp_path.rglob("*.safetensors"))) == len(layers)  # read back from the cache, not recomputed
    e = Editor.prepare(model, tok, hp.replace(nullspace_mode="energy", nullspace_energy=0.2),
                       corpus=TextCorpus(DOCS, "t"), fingerprint="tiny", stats_root=tmp_path, templates=TEMPLATES,
                       progress=False)
    for l in layers:
        share = torch.cumsum(ev[l].clamp_min(0), 0) / ev[l].clamp_min(0).sum()
        assert e.projectors[l].n_kept == int((share <= 0.2).sum())
    m2 = Editor.prepare(model, tok, hp, method="memit", corpus=TextCorpus(DOCS, "t"), fingerprint="tiny",
                        stats_root=tmp_path, templates=TEMPLATES, progress=False)
    assert all(torch.equal(m2.covs[l], m.covs[l]) for l in layers)  # read back from the cache


# ============================================================================================ context templates
def test_context_templates_follow_the_seeded_top5_sampling():
    """["{}"] + prefixes sampled top-5 from the model with a seeded generator, `length` tokens each (seed word
    included), braces replaced by spaces, ". {}" appended."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    seeds, length, count, seed = ["The", "Because"], 6, 3, 5
    got = context_templates(model, tok, length=length, count=count, seed_words=seeds, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    expected = ["{}"]
    for i in range(count):
        ids = tok(seeds[i % len(seeds)]).input_ids
        while len(ids) < length:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            values, indices = torch.topk(logits, 5)
            ids.append(int(indices[torch.multinomial(torch.softmax(values, -1), 1, generator=gen)]))
        expected.append(tok.decode(ids, skip_special_tokens=True).replace("{", " ").replace("}", " ") + ". {}")
    assert got == expected
    assert len(tok(got[1][: -len(". {}")]).input_ids) >= 2
