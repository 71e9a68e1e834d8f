"""Pins for gaps that the sampled mutation run found (quality/mutation-results.md): defaults and boundaries stated
in docstrings, the progress-bar paths, the editor's bookkeeping. Each expectation is written out by hand."""
from __future__ import annotations

import copy

import pytest
import torch
from tiny import REQUESTS, TEXT, assert_same_targets, tiny_model, tiny_tokenizer

from alphaedit_core.arch import ModelAdapter
from alphaedit_core.corpus import TextCorpus
from alphaedit_core.editor import Editor
from alphaedit_core.hparams import EditHParams
from alphaedit_core.projection import projector_from_cov
from alphaedit_core.prompts import template_groups
from alphaedit_core.stats import compute_second_moments
from alphaedit_core.targets import anchor_values

DOCS = [line for line in TEXT.split("\n") if line]
TEMPLATES = ["{}", "Because it rains. {}"]


def hp(**kw) -> EditHParams:
    base = dict(layers=[1, 2], v_lr=0.5, v_num_grad_steps=3, context_template_count=1, context_template_length=5,
                targets_chunk=4, L2=1.0, batch_size=3)
    return EditHParams(**{**base, **kw})


def editor(method="alphaedit", **kw) -> Editor:
    model = tiny_model("llama")
    d_ff = ModelAdapter.from_model(model).d_ff
    identity = projector_from_cov(torch.zeros(d_ff, d_ff), threshold=1.0, allow_degenerate=True)
    return Editor(model, tiny_tokenizer(), hp(), method=method, projectors={l: identity for l in (1, 2)},
                  covs={l: torch.eye(d_ff) for l in (1, 2)}, templates=TEMPLATES, **kw)


def test_energy_rule_keeps_directions_up_to_and_including_the_share():
    """diag(1, 1, 2, 4): cumulative shares 1/8, 2/8, 4/8, 1. 'At most 25% of tr C' keeps the first two."""
    p = projector_from_cov(torch.diag(torch.tensor([1.0, 1.0, 2.0, 4.0])), mode="energy", energy=0.25)
    assert p.n_kept == 2


def test_template_groups_with_one_sampled_template():
    assert template_groups(["{}"]) == [[0]]
    assert template_groups(["{}", "A. {}"]) == [[0], [1]]
    assert template_groups(["{}", "A. {}", "B. {}"]) == [[0], [1, 2]]


def test_nas_outlier_rule_defaults_and_boundary():
    """NAS skips a request whose ‖v*‖ exceeds 2 × the reference (strictly); other values are rescaled to it."""
    h0, v0 = torch.zeros(3, 4), torch.zeros(3, 4)
    z = torch.tensor([[2.5, 0, 0, 0], [2.0, 0, 0, 0], [0, 3.0, 0, 0]])  # v* = z here: norms 2.5, 2.0, 3.0
    out, skipped = anchor_values(z, h0, v0, reference=1.0)
    assert skipped.tolist() == [True, False, True]
    assert torch.equal(out[1], torch.tensor([1.0, 0, 0, 0]))  # at exactly 2x: rescaled, not skipped
    assert torch.equal(out[0], h0[0])  # skipped: z' = h0, no change asked
    _, skipped = anchor_values(z[:1] * 0.6, h0[:1], v0[:1], reference=1.0, skip=1.0)  # 1.5 > 1.0
    assert skipped.tolist() == [True]


def test_second_moments_with_the_progress_bar_on():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    on, n_on = compute_second_moments(model, tok, a, [1], TextCorpus(DOCS, "t"), n_tokens=50, seq_len=16,
                                      progress=True)
    off, n_off = compute_second_moments(model, tok, a, [1], TextCorpus(DOCS, "t"), n_tokens=50, seq_len=16,
                                        progress=False)
    assert n_on == n_off == 50 and torch.equal(on[1], off[1])


def test_run_with_the_progress_bar_on_and_batches_of_one():
    ed = editor(progress=True)
    reports = ed.run(REQUESTS[:2], batch_size=1)
    assert [r.edits_done for r in reports] == [1, 2] and ed.batches_done == 2


def test_a_default_editor_skips_the_diagnostics():
    report = editor(progress=False).edit_batch(REQUESTS[:1])
    assert report.condition == {}
    assert editor(progress=False, diagnostics=True).edit_batch(REQUESTS[:1]).condition.keys() == {1, 2}


def test_restore_forgets_the_batch_size():
    ed = editor(progress=False)
    ed.run(REQUESTS[:2], batch_size=2)
    ed.restore()
    assert ed.batch_size is None
    ed.run(REQUESTS[:3], batch_size=3)  # another batch size after a restore is a new run
    assert ed.batches_done == 1


def test_memit_accepts_second_moments_of_layers_it_does_not_edit():
    model = tiny_model("llama")
    d_ff = ModelAdapter.from_model(model).d_ff
    ed = Editor(model, tiny_tokenizer(), hp(), method="memit", covs={l: torch.eye(d_ff) for l in (0, 1, 2, 3)},
                templates=TEMPLATES, progress=False)
    assert set(ed.covs) == {0, 1, 2, 3}


def test_prepare_names_the_layer_of_a_degenerate_projector(tmp_path):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    with pytest.raises(ValueError, match=r"^projector of layer 1 keeps 64 of 64 directions"):
        Editor.prepare(model, tok, hp(nullspace_threshold=1e6, mom2_n_tokens=60, mom2_seq_len=16),
                       corpus=TextCorpus(DOCS, "t"), fingerprint="tiny", stats_root=tmp_path, templates=TEMPLATES,
                       progress=False)


def test_batch_report_times_are_the_exact_sums_of_their_intervals(monkeypatch):
    """With a clock that advances by 1 at every reading, the report's seconds are counts of intervals, by hand:
    targets = 1 (t0 → t1); per edited layer one keys interval and one solve interval; one more keys interval for
    cache_c after the layer loop. Two layers: keys = 3, solve = 2."""
    import types

    from alphaedit_core import editor as editor_module

    ticks = iter(range(10_000))
    clock = types.SimpleNamespace(perf_counter=lambda: float(next(ticks)), time=__import__("time").time)
    ed = editor(progress=False)
    monkeypatch.setattr(editor_module, "time", clock)
    report = ed.edit_batch(REQUESTS[:2])
    assert (report.seconds_targets, report.seconds_keys, report.seconds_solve) == (1.0, 3.0, 2.0)


def test_fused_head_option_reaches_the_fused_loss(monkeypatch):
    """`compute_targets(fused_head=True)` must use the one-pass head (`_head_losses`), the default must not: z agrees
    to rounding either way, so only a call count tells an option that silently does nothing."""
    from alphaedit_core import targets as targets_module

    calls = {"n": 0}
    real = targets_module._head_losses

    def counted(*args, **kw):
        calls["n"] += 1
        return real(*args, **kw)

    monkeypatch.setattr(targets_module, "_head_losses", counted)
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    targets_module.compute_targets(model, tok, a, REQUESTS[:2], TEMPLATES, hp())
    assert calls["n"] == 0
    targets_module.compute_targets(model, tok, a, REQUESTS[:2], TEMPLATES, hp(), fused_head=True)
    assert calls["n"] > 0


def test_float64_second_moments_multiply_the_keys_in_float64():
    """`dtype=torch.float64` statistics: the float32 keys are cast before the product, so C equals the float64
    product of the very same keys (`corpus_keys` with no skip reads the same windows) to float64 rounding (1e-12);
    a float32 product is off by ~1e-7."""
    from alphaedit_core.stats import corpus_keys

    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    n = 80
    c64, counted = compute_second_moments(model, tok, a, [1], TextCorpus(DOCS, "t"), n_tokens=n, seq_len=16,
                                          batch_windows=3, dtype=torch.float64, progress=False)
    k = corpus_keys(model, tok, a, [1], TextCorpus(DOCS, "t"), skip_tokens=0, n_tokens=n, seq_len=16,
                    batch_windows=3)[1].double()
    expected = k.T @ k / n
    assert counted == n and c64[1].dtype == torch.float64
    assert float((c64[1] - expected).abs().max() / expected.abs().max()) < 1e-12


def test_projector_counts_eigenvalues_in_float64():
    """A float32 C with an eigenvalue within float32 rounding of the threshold: the kept count is that of the float64
    eigenvalues of C (computed here on their own), not of a float32 decomposition."""
    g = torch.Generator().manual_seed(0)
    d = 32
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    ev = torch.logspace(-3, 4, d, dtype=torch.float64)
    ev[10] = 0.02
    c32 = ((q * ev) @ q.T).float()
    e64 = torch.linalg.eigvalsh(c32.double())
    e32 = torch.linalg.eigh((c32 + c32.T) / 2)[0].double()  # what a float32 decomposition would count
    i = int((e64 - 0.02).abs().argmin())
    assert e64[i] != e32[i]  # the two decompositions disagree about this eigenvalue
    threshold = float(e64[i] + e32[i]) / 2  # between them: float64 and float32 count differently
    want = int((e64 < threshold).sum())
    assert want != int((e32 < threshold).sum())
    assert projector_from_cov(c32, threshold=threshold).n_kept == want


@pytest.mark.parametrize("fast", [True, False])
def test_a_loss_equal_to_the_early_stop_loss_does_not_stop(fast):
    """The official rule stops when loss < early_stop_loss, strictly. The step-0 loss of one request (deterministic:
    δ = 0) used as the threshold must not stop it at step 0, in the batched and the per-request optimiser."""
    from alphaedit_core import targets as targets_module

    find = targets_module.compute_targets if fast else targets_module.compute_targets_reference
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    first = find(model, tok, a, REQUESTS[:1], TEMPLATES, hp(v_num_grad_steps=1))
    assert first.steps.tolist() == [0]
    tie = float(first.loss[0])  # a float32 value, exactly representable as a float
    again = find(model, tok, a, REQUESTS[:1], TEMPLATES, hp(v_num_grad_steps=3, early_stop_loss=tie))
    assert again.steps.tolist()[0] >= 1


# ------------------------------------------------------------------ gaps left open by the 15 % run, pinned since
def tiny_tokenizer_with(single: str, special_tokens: list[tuple[str, int]]):
    """A copy of the tiny tokenizer (the shared one is cached and stays as it is) whose post-processor is
    `TemplateProcessing(single=single, special_tokens=special_tokens)`."""
    from tokenizers import processors

    tok = copy.deepcopy(tiny_tokenizer())
    tok._tokenizer.post_processor = processors.TemplateProcessing(single=single, special_tokens=special_tokens)
    return tok


@pytest.mark.parametrize("template,subject,pos,token", [
    ("{}n is", "Berli", 3, "lin"),  # <s> B er lin Ġis: the subject ends inside "lin" (chars 3-6, subject ends at 5)
    ("{}ux speaks", "Danielle Darrie", 2, "ĠDarrieux"),  # <s> Danielle ĠDarrieux Ġs peak s
])
def test_subject_glued_to_the_text_after_it_ends_in_the_token_that_holds_its_last_character(template, subject, pos,
                                                                                            token):
    """Hand-read on the tiny tokenizer. Counting the tokens of prefix + subject (the slow tokenizers' rule) gives
    one past this token here ("Berli" alone is <s> B er li ...: 4 tokens), so a fast tokenizer sent down the slow
    path (prompts.subject_last_index's `is_fast` check) reads the wrong position."""
    from alphaedit_core.prompts import subject_last_index

    tok = tiny_tokenizer()
    ids, idx = subject_last_index(tok, template, subject)
    assert tok.convert_ids_to_tokens(ids)[pos] == token
    assert len(tok(template.split("{}")[0] + subject).input_ids) - 1 != pos  # the slow rule would miss it
    assert idx == pos


def test_an_appended_end_token_is_never_the_subjects_last_token():
    """A tokenizer whose post-processor appends </s> (offsets (0, 0), like <s>): the subject's last token is still
    the one holding its last character, not the zero-width </s> at the end."""
    from alphaedit_core.prompts import subject_last_index

    tok = tiny_tokenizer_with("<s> $A </s>", [("<s>", 1), ("</s>", 2)])
    ids, idx = subject_last_index(tok, "The capital of {}", "France")  # <s> The Ġcapital Ġof ĠF ran ce </s>
    assert tok.convert_ids_to_tokens(ids)[-1] == "</s>"
    assert idx == 6 and tok.convert_ids_to_tokens(ids)[idx] == "ce"


def test_per_request_targets_on_a_float64_model_equal_the_batched_ones():
    """δ is optimised in float32 and added to a float64 hidden state: the per-request optimiser (fast_targets=False)
    must cast it, as the batched one does; the two agree as on a float32 model."""
    from alphaedit_core.targets import compute_targets, compute_targets_reference

    model, tok = tiny_model("llama").double(), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    ref = compute_targets_reference(model, tok, a, REQUESTS[:2], TEMPLATES, hp())
    fast = compute_targets(model, tok, a, REQUESTS[:2], TEMPLATES, hp())
    assert_same_targets(fast, ref)


@pytest.mark.parametrize("bos", [False, True])
def test_batched_targets_with_one_token_subjects_at_the_start(bos):
    """One-token subjects that open the prompt: the KL rows ("{} is a") put the subject's last token at position 0
    without BOS (GPT-2's kind of tokenizer; their group has no prefix to cache, P = 0) and at 1 with it (the prefix
    is the BOS column alone, P = 1); with the bare template "{}" the rewriting rows do too. Batched targets must equal
    the per-request ones in both."""
    from alphaedit_core.requests import EditRequest
    from alphaedit_core.targets import compute_targets, compute_targets_reference

    model = tiny_model("llama")
    tok = tiny_tokenizer_with("<s> $A", [("<s>", 1)]) if bos else tiny_tokenizer_with("$A", [])
    requests = [EditRequest("{} speaks", "Danielle", "English", "French", case_id=0),
                EditRequest("{} was created by", "The", "Apple", "Google", case_id=1)]
    for r in requests:
        assert tok(r.prompt.format(r.subject)).input_ids[:2 if bos else 1] == tok(r.subject).input_ids
        assert len(tok(r.subject).input_ids) == 1 + bos  # one token (after <s>)
    a = ModelAdapter.from_model(model)
    ref = compute_targets_reference(model, tok, a, requests, ["{}"], hp())
    fast = compute_targets(model, tok, a, requests, ["{}"], hp())
    assert fast.steps.tolist() == ref.steps.tolist()
    assert_same_targets(fast, ref)
