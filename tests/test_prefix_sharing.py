"""The shared-prefix scoring pass (each prompt once, targets as cache continuations, greedy answers decoded from the
same pass) gives the numbers of the plain one-sequence-per-pair pass, on every supported architecture."""
from __future__ import annotations

import pytest
import torch
from tiny import ARCHS, tiny_model, tiny_tokenizer

from alphaedit_core.data import load_offline_counterfact, load_offline_zsre
from alphaedit_core.metrics import compute_baseline, evaluate, generate, score_pairs
from alphaedit_core.metrics.scoring import Probe, can_share_prefix, score_and_decode

PROMPTS = ["the cat sat on", "a dog ran", "paris is the capital of the country of", "x"]
TARGETS = ["the mat", "france", "a", "dog ran to the cat and sat"]  # 1 to many tokens, slots with mixed lengths


@pytest.mark.parametrize("arch", ARCHS)
def test_shared_prefix_scores_equal_full_pass(arch):
    model, tok = tiny_model(arch), tiny_tokenizer()
    assert can_share_prefix(model)
    pairs = [Probe(p, t) for p in PROMPTS for t in TARGETS] + [Probe("zebra", "a")]  # a prompt with one target
    shared = score_pairs(model, tok, pairs, shared_prefix=True, batch_size=3)
    full = score_pairs(model, tok, pairs, shared_prefix=False, batch_size=5)
    assert set(shared) == set(full) == set(pairs)
    for p in pairs:
        assert shared[p].target_ids == full[p].target_ids
        assert shared[p].argmax == full[p].argmax
        torch.testing.assert_close(torch.tensor(shared[p].logprobs), torch.tensor(full[p].logprobs),
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_answers_decoded_with_the_scores_equal_generate(arch):
    model, tok = tiny_model(arch), tiny_tokenizer()
    pairs = [Probe(p, t) for p in PROMPTS[:3] for t in TARGETS[:2]]
    wanted = PROMPTS[1:] + ["zebra"]  # some scored, some only answered, one scored but not answered
    scores, answers = score_and_decode(model, tok, pairs, wanted, max_new_tokens=6, batch_size=2)
    assert set(answers) == set(wanted)
    for g in generate(model, tok, wanted, max_new_tokens=6, batch_size=3):
        assert answers[g.prompt][1] == list(g.new_ids)
    plain = score_pairs(model, tok, pairs, shared_prefix=False)
    for p in pairs:
        assert scores[p].argmax == plain[p].argmax


@pytest.mark.parametrize("kind", ["counterfact", "zsre"])
def test_evaluate_is_the_same_with_and_without_prefix_sharing(kind):
    """The evaluator's one-pass path (scores + answers) against the fallback a cache-less model takes."""

    class NoCache(torch.nn.Module):  # same weights, a forward that takes no cache
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)

    model, tok = tiny_model("llama"), tiny_tokenizer()
    records = (load_offline_counterfact if kind == "counterfact" else load_offline_zsre)(n=3, seed=0)
    kw = dict(kind=kind, families=("official", "easyedit", "generation"), answer_max_new_tokens=4, progress=False)
    kw["baseline"] = compute_baseline(model, tok, records, kind=kind, progress=False)
    fast = evaluate(model, tok, records, **kw)
    slow = evaluate(NoCache(model), tok, records, **kw)
    assert not can_share_prefix(NoCache(model))
    key = ["case_id", "family", "prompt_kind", "metric"]
    merged = fast.merge(slow, on=key, suffixes=("_fast", "_slow"))
    assert len(merged) == len(fast) == len(slow) > 0
    assert {"locality", "exact_match", "efficacy"} <= set(merged.metric)
    assert (merged.value_fast - merged.value_slow).abs().max() < 1e-5
