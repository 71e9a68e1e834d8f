"""The fast target optimisation (row groups by suffix width, KL rows cut at the subject, one pass of the LM head with
logsumexp for the NLL) gives the per-request reference's z (within 1e-3 of
the largest update: float32 reassociation, see tiny.assert_same_targets) and the same number of Adam steps, on every
architecture, for several chunk sizes, with requests that stop early (chunks rebuilt) and requests that run to the
end."""
import pytest
import torch

from tiny import ARCHS, REQUESTS as TINY_REQUESTS, assert_same_targets, tiny_model_sharp_head, tiny_tokenizer

from alphaedit_core.arch import ModelAdapter
from alphaedit_core.hparams import EditHParams
from alphaedit_core.prompts import context_templates
from alphaedit_core.requests import EditRequest
from alphaedit_core.targets import GROUPINGS, compute_targets, compute_targets_reference

REQUESTS = [
    *TINY_REQUESTS,
    EditRequest("{}", "Tokyo", "London", "Japan", case_id=6),  # the prompt ends at the subject: a suffix of 1
]


def setup(arch: str):
    model, tok = tiny_model_sharp_head(arch), tiny_tokenizer()  # requests stop at different steps
    a = ModelAdapter.from_model(model)
    h = EditHParams(layers=[1, 2], v_lr=0.05, v_num_grad_steps=10, context_template_count=2,
                    context_template_length=5, targets_chunk=4, L2=1.0, batch_size=3)
    templates = context_templates(model, tok, length=h.context_template_length, count=h.context_template_count,
                                  seed_words=h.context_template_seeds, seed=h.seed)
    first = compute_targets_reference(model, tok, a, REQUESTS, templates, h.replace(v_num_grad_steps=1))
    full = compute_targets_reference(model, tok, a, REQUESTS, templates, h.replace(early_stop_loss=1e-9))
    # the early-stop threshold halfway down the largest drop of the loss: that request stops midway, others stop
    # at once or run all steps
    i = int((first.loss - full.loss).argmax())
    h = h.replace(early_stop_loss=float(first.loss[i] + full.loss[i]) / 2)
    return model, tok, a, h, templates


@pytest.fixture(scope="module", params=ARCHS)
def case(request):
    model, tok, a, h, templates = setup(request.param)
    ref = compute_targets_reference(model, tok, a, REQUESTS, templates, h)
    return model, tok, a, h, templates, ref


@pytest.mark.parametrize("chunk", [1, 3, 4, 7])
def test_fast_targets_equal_reference(case, chunk):
    model, tok, a, h, templates, ref = case
    fast = compute_targets(model, tok, a, REQUESTS, templates, h.replace(targets_chunk=chunk))
    assert fast.steps.tolist() == ref.steps.tolist()
    # the case mixes requests that take Adam updates and requests that stop early (the chunk is rebuilt)
    assert ref.steps.max() > 0 and ref.steps.min() < h.v_num_grad_steps - 1
    assert_same_targets(fast, ref)
    torch.testing.assert_close(fast.loss, ref.loss, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("grouping", GROUPINGS)
@pytest.mark.parametrize("fused_head", [True, False])
def test_every_layout_equals_reference(case, grouping, fused_head):
    model, tok, a, h, templates, ref = case
    fast = compute_targets(model, tok, a, REQUESTS, templates, h, grouping=grouping, fused_head=fused_head)
    assert fast.steps.tolist() == ref.steps.tolist()
    assert_same_targets(fast, ref)


def test_rebuild_keeps_the_result():
    """Rebuilding a chunk after every stop (rebuild_below=1) or never (0) changes nothing beyond rounding."""
    model, tok, a, h, templates = setup("llama")
    never = compute_targets(model, tok, a, REQUESTS, templates, h.replace(targets_chunk=7), rebuild_below=0.0)
    always = compute_targets(model, tok, a, REQUESTS, templates, h.replace(targets_chunk=7), rebuild_below=1.0)
    assert never.steps.tolist() == always.steps.tolist()
    assert_same_targets(never, always)


def test_unknown_grouping_is_rejected():
    model, tok, a, h, templates = setup("llama")
    with pytest.raises(ValueError, match="grouping"):
        compute_targets(model, tok, a, REQUESTS[:1], templates, h, grouping="bogus")
