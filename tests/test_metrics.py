"""Metric tests on a stub bigram LM whose probabilities we set by hand, plus a tiny random Llama for the
batched-vs-single equivalence of the shared scoring pass."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from alphaedit_core.metrics import (
    compute_baseline, contains_answer, evaluate, exact_match, first_answer_span, fluency, generate,
    ngram_entropy, score_pairs, summarize, text_fluency, wilson_interval, word_tokenize,
)
from alphaedit_core.metrics.scoring import Probe

WORDS = ["[PAD]", "[UNK]", "<s>", "</s>", "Danielle", "Darrieux", "lives", "in", "resides", "at", "stays", "near",
         "Paris", "New", "York", "Jersey", "Eiffel", "is", "located", "the", ".", "?", ":", "nq", "question",
         "where", "who", "wrote", "Anna", "was", "written", "by", "Leo", "Tolstoy", "cat", "sat", "on"]


def make_tok() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(WORDS)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    t.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>", pad_token="[PAD]",
                                   unk_token="[UNK]")


class BigramLM(torch.nn.Module):
    """logits[b, t] = table[input_ids[b, t]]; rows hold log-probabilities, so log_softmax gives them back."""

    def __init__(self, tok):
        super().__init__()
        self.tok = tok
        v = len(WORDS)
        self.table = torch.nn.Parameter(torch.full((v, v), math.log(1 / v)), requires_grad=False)
        self.calls: list[tuple[int, int]] = []

    def set(self, prev: str, probs: dict[str, float]) -> "BigramLM":
        v = len(WORDS)
        rest = (1 - sum(probs.values())) / (v - len(probs))
        row = torch.full((v,), math.log(rest))
        for w, p in probs.items():
            row[WORDS.index(w)] = math.log(p)
        with torch.no_grad():
            self.table[WORDS.index(prev)] = row
        return self

    def forward(self, input_ids, attention_mask=None):
        self.calls.append(tuple(input_ids.shape))
        return SimpleNamespace(logits=self.table[input_ids])


def L(p):  # noqa: E743
    return -math.log(p)


# ------------------------------------------------------------------ CounterFact

CF_RECORD = {
    "case_id": 7,
    "requested_rewrite": {"prompt": "{} lives in", "subject": "Danielle Darrieux", "relation_id": "P551",
                          "target_new": {"str": "New York", "id": "Q60"}, "target_true": {"str": "Paris", "id": "Q90"}},
    "paraphrase_prompts": ["Danielle Darrieux resides at", "Danielle Darrieux stays near"],
    "neighborhood_prompts": ["Eiffel is located", "Eiffel is the"],
    "attribute_prompts": [],
    "generation_prompts": ["Danielle Darrieux lives in"],
    "reference_text": "New Jersey is a state",
}


def cf_model(tok):
    m = BigramLM(tok)
    m.set("in", {"New": .5, "Paris": .3})
    m.set("New", {"Jersey": .6, "York": .2})
    m.set("at", {"Paris": .7, "New": .1})
    m.set("near", {"New": .4, "Paris": .35})
    m.set("located", {"Paris": .6, "New": .2})
    m.set("the", {"New": .5, "Paris": .1})
    m.set("Jersey", {".": .9})
    m.set("Paris", {".": .9})
    m.set(".", {"</s>": .9})
    return m


def val(df, family, metric, prompt_kind=None):
    sel = df[(df.family == family) & (df.metric == metric)]
    if prompt_kind is not None:
        sel = sel[sel.prompt_kind == prompt_kind]
    assert len(sel) == 1, sel
    return float(sel.value.iloc[0])


def test_counterfact_definitions_disagree_as_computed():
    tok = make_tok()
    m = cf_model(tok)
    base = compute_baseline(m, tok, [CF_RECORD], kind="counterfact", progress=False)
    df = evaluate(m, tok, [CF_RECORD], kind="counterfact", baseline=base, progress=False,
                  extra_columns={"timing": "after_sequence"})
    nll_new = {"in": (L(.5) + L(.2)) / 2, "at": (L(.1) + L(.2)) / 2, "near": (L(.4) + L(.2)) / 2,
               "located": (L(.2) + L(.2)) / 2, "the": (L(.5) + L(.2)) / 2}
    nll_true = {"in": L(.3), "at": L(.7), "near": L(.35), "located": L(.6), "the": L(.1)}
    p = lambda nll: math.exp(-nll)  # noqa: E731
    # rewrite " New York" after "in": first token right (New), second wrong (Jersey beats York)
    assert val(df, "official", "efficacy") == 1.0  # 1.151 < 1.204: probability comparison says success
    assert val(df, "official", "strict_acc", "rewrite") == 0.0  # not every token is the argmax
    assert val(df, "easyedit", "rewrite_acc") == 0.5  # partial credit
    assert val(df, "official", "generalization") == 0.0  # both paraphrases prefer Paris
    assert val(df, "official", "specificity") == 0.5  # "located" keeps Paris, "the" prefers New York
    assert val(df, "official", "magnitude", "rewrite") == pytest.approx(p(nll_new["in"]) - p(nll_true["in"]), abs=1e-6)
    assert val(df, "official", "magnitude", "paraphrase") == pytest.approx(
        np.mean([p(nll_new[k]) - p(nll_true[k]) for k in ("at", "near")]), abs=1e-6)
    assert val(df, "official", "magnitude", "neighborhood") == pytest.approx(
        np.mean([p(nll_true[k]) - p(nll_new[k]) for k in ("located", "the")]), abs=1e-6)
    assert val(df, "official", "strict_acc", "neighborhood") == 0.5
    assert val(df, "easyedit", "rephrase_acc") == 0.0  # first paraphrase ("at") only
    assert val(df, "easyedit", "locality") == 1.0  # unedited model vs its own baseline
    # generation: "in" -> "New Jersey." ; "located" -> "Paris." ; "the" -> "New Jersey."
    assert val(df, "generation", "exact_match", "rewrite") == 0.0
    assert val(df, "generation", "contains", "rewrite") == 0.0
    assert val(df, "generation", "exact_match", "neighborhood") == 0.5
    assert val(df, "generation", "contains", "neighborhood") == 0.5
    assert set(df.columns) >= {"case_id", "family", "prompt_kind", "metric", "value", "n_prompts", "timing"}
    assert (df.case_id == 7).all() and (df.timing == "after_sequence").all()
    assert not df.metric.isin(["portability", "fluency", "consistency"]).any()  # nothing fabricated


def test_easyedit_locality_changes_with_the_table_and_baseline_is_json():
    tok = make_tok()
    m = cf_model(tok)
    base = json.loads(json.dumps(compute_baseline(m, tok, [CF_RECORD], kind="counterfact", progress=False)))
    m.set("located", {"New": .7, "Paris": .1})  # the edit moves the argmax of one of two neighbourhood prompts
    df = evaluate(m, tok, [CF_RECORD], baseline=base, families=("easyedit",), progress=False)
    assert val(df, "easyedit", "locality") == 0.5
    with pytest.raises(ValueError, match="kind"):
        evaluate(m, tok, [ZSRE_RECORD], kind="zsre", baseline=base, progress=False)
    with pytest.warns(UserWarning):
        df = evaluate(m, tok, [CF_RECORD], families=("easyedit",), progress=False)
    assert "locality" not in set(df.metric)


def test_single_forward_serves_all_teacher_forced_metrics():
    tok = make_tok()
    m = cf_model(tok)
    base = compute_baseline(m, tok, [CF_RECORD], progress=False)
    m.calls.clear()
    evaluate(m, tok, [CF_RECORD, {**CF_RECORD, "case_id": 8}], baseline=base, families=("official", "easyedit"),
             batch_size=64, progress=False)
    # identical records and (prompt, target) pairs across families: 5 prompts x 2 targets, one forward pass
    assert len(m.calls) == 1 and m.calls[0][0] == 10


def test_fluency_and_consistency():
    tok = make_tok()
    m = cf_model(tok)
    df = evaluate(m, tok, [CF_RECORD], families=("official",), fluency=True, progress=False)
    # text = "Danielle Darrieux lives in New Jersey." -> 7 distinct word tokens: H2 = log2 6, H3 = log2 5
    assert val(df, "official", "fluency") == pytest.approx(math.log2(6) / 3 + 2 * math.log2(5) / 3)
    # TF-IDF fitted on the one reference: vocab {new, jersey, is, state}, gen -> (1,1,0,0), ref -> (1,1,1,1)
    assert val(df, "official", "consistency") == pytest.approx(1 / math.sqrt(2))


def test_fluency_hand_computed():
    text = "the cat sat on the cat sat"
    h2 = 2 * (1 / 3) * math.log2(3) + 2 * (1 / 6) * math.log2(6)  # bigrams: 2,2,1,1 of 6
    h3 = (2 / 5) * math.log2(5 / 2) + 3 * (1 / 5) * math.log2(5)  # trigrams: 2,1,1,1 of 5
    toks = word_tokenize(text)
    assert ngram_entropy(toks, 2) == pytest.approx(h2) and ngram_entropy(toks, 3) == pytest.approx(h3)
    assert text_fluency(text) == pytest.approx(((2 / 3) * h2 + (4 / 3) * h3) / 2)  # official: mean, not sum
    assert fluency([text, "a b"]) == pytest.approx(text_fluency(text) / 2)  # one bigram, no trigram: 0
    assert word_tokenize("Hello, world. Don't stop!") == ["Hello", ",", "world", ".", "Do", "n't", "stop", "!"]
    with pytest.raises(ValueError):
        fluency([])


# ------------------------------------------------------------------ ZsRE

ZSRE_RECORD = {"subject": "Anna", "src": "who wrote Anna", "pred": "Leo Tolstoy", "rephrase": "Anna was written by",
               "alt": "New York", "answers": ["Leo Tolstoy"], "loc": "nq question: where is Eiffel",
               "loc_ans": "New York", "cond": "",
               "portability": {"New Question": "who wrote Anna", "New Answer": "Leo Tolstoy"}}


def zsre_model(tok):
    m = BigramLM(tok)
    m.set("Anna", {"Leo": .8})
    m.set("Leo", {"Jersey": .5, "Tolstoy": .3})
    m.set("by", {"New": .6, "Leo": .2})
    m.set("?", {"New": .7})
    m.set("Eiffel", {"New": .9})
    m.set("New", {"York": .8})
    return m


def test_zsre_token_accuracy_vs_strict_and_absolute_locality():
    tok = make_tok()
    m = zsre_model(tok)
    base = compute_baseline(m, tok, [ZSRE_RECORD], kind="zsre", progress=False)
    df = evaluate(m, tok, [ZSRE_RECORD], kind="zsre", baseline=base, families=("official", "easyedit"),
                  progress=False)
    assert val(df, "official", "efficacy") == 0.5  # "Leo" right, "Tolstoy" wrong
    assert val(df, "official", "strict_acc", "rewrite") == 0.0
    assert val(df, "official", "generalization") == 0.0
    assert val(df, "official", "specificity") == 1.0  # "...Eiffel?" -> New York, absolute
    assert val(df, "easyedit", "locality") == 1.0
    assert val(df, "easyedit", "portability") == 0.5
    assert (df.case_id == 0).all()  # no case_id: position in the list
    m.set("New", {"Jersey": .9})  # the edit changes the second token of the loc answer
    df = evaluate(m, tok, [ZSRE_RECORD], kind="zsre", baseline=base, families=("official", "easyedit"),
                  progress=False)
    assert val(df, "official", "specificity") == 0.5
    assert val(df, "easyedit", "locality") == 0.5
    df_alt = evaluate(m, tok, [ZSRE_RECORD], kind="zsre", families=("official",), zsre_target="alt", progress=False)
    assert val(df_alt, "official", "efficacy") == 0.0  # " New York" after "Anna": argmax Leo


# ------------------------------------------------------------------ generation, summary, errors

def test_generation_exact_match_vs_contains():
    assert first_answer_span("  New York City.\nmore") == "New York City"
    assert not exact_match(" New York City. It is big", "New York")
    assert contains_answer(" New York City. It is big", "new york")
    assert exact_match(" paris\nand more", "Paris")
    tok = make_tok()
    m = cf_model(tok)
    g = generate(m, tok, ["Danielle Darrieux lives in", "Eiffel is located"], max_new_tokens=10)
    assert g[0].continuation.strip() == "New Jersey." and g[0].new_ids == tuple(
        WORDS.index(w) for w in ("New", "Jersey", "."))  # stops at EOS, EOS not kept
    assert g[1].text == "Eiffel is located Paris."
    assert len(generate(m, tok, ["Eiffel is located"], max_new_tokens=1)[0].new_ids) == 1


def test_summarize_ci():
    df = pd.DataFrame({"case_id": range(4), "family": "official", "prompt_kind": "rewrite", "metric": "efficacy",
                       "value": [1.0, 1.0, 0.0, 1.0], "n_prompts": 1})
    s = summarize(df)
    assert s.loc[0, "ci_method"] == "wilson" and s.loc[0, "n"] == 4 and s.loc[0, "mean"] == 0.75
    z = 1.959963984540054
    centre = (0.75 + z * z / 8) / (1 + z * z / 4)
    half = z * math.sqrt(0.75 * 0.25 / 4 + z * z / 64) / (1 + z * z / 4)
    assert (s.loc[0, "ci_low"], s.loc[0, "ci_high"]) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(3, 4) == pytest.approx((centre - half, centre + half))
    df2 = df.assign(value=[0.5, 1.0, 0.0, 0.5], metric="generalization")
    s2 = summarize(df2)
    assert s2.loc[0, "ci_method"] == "t"
    half_t = 3.182446305284263 * np.std([0.5, 1, 0, 0.5], ddof=1) / 2
    assert (s2.loc[0, "ci_low"], s2.loc[0, "ci_high"]) == pytest.approx((0.5 - half_t, 0.5 + half_t))
    both = summarize(pd.concat([df, df2]).assign(timing="after_batch"))
    assert len(both) == 2 and "timing" in both.columns
    with pytest.raises(ValueError):
        summarize(df.iloc[:0])


def test_empty_and_bad_input_raise():
    tok = make_tok()
    m = cf_model(tok)
    for call in (lambda: evaluate(m, tok, [], progress=False),
                 lambda: evaluate(m, tok, iter([]), progress=False),
                 lambda: compute_baseline(m, tok, [], progress=False),
                 lambda: evaluate(m, tok, [CF_RECORD], kind="wiki", progress=False),
                 lambda: evaluate(m, tok, [CF_RECORD], families=("bogus",), progress=False),
                 lambda: evaluate(m, tok, [ZSRE_RECORD], kind="counterfact", progress=False)):
        with pytest.raises(ValueError):
            call()


# ------------------------------------------------------------------ tiny Llama: batched == single

@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    tok = make_tok()
    cfg = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, initializer_range=0.3,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(cfg).eval(), tok


def test_batched_scoring_equals_single_on_tiny_llama(tiny_llama):
    model, tok = tiny_llama
    pairs = [Probe("Danielle Darrieux lives in", "New York"), Probe("Danielle Darrieux lives in", "Paris"),
             Probe("Eiffel is", "Leo Tolstoy was"), Probe("nq question : where is Eiffel ?", "New Jersey"),
             Probe("who", "Paris"), Probe("Anna was written by", "Leo Tolstoy")]
    batched = score_pairs(model, tok, pairs + pairs[:2], batch_size=8)
    assert len(batched) == len(pairs)
    for p in pairs:
        single = score_pairs(model, tok, [p], batch_size=1)[p]
        assert batched[p].target_ids == single.target_ids
        assert batched[p].argmax == single.argmax
        np.testing.assert_allclose(batched[p].logprobs, single.logprobs, atol=1e-5, rtol=0)


def test_batched_generation_equals_single_on_tiny_llama(tiny_llama):
    model, tok = tiny_llama
    prompts = ["Danielle Darrieux lives in", "who", "nq question : where is Eiffel ?"]
    batched = generate(model, tok, prompts, max_new_tokens=6, batch_size=3)
    for p, b in zip(prompts, batched):
        assert generate(model, tok, [p], max_new_tokens=6, batch_size=1)[0] == b
    a = generate(model, tok, prompts, max_new_tokens=6, do_sample=True, top_k=5, seed=3)
    assert a == generate(model, tok, prompts, max_new_tokens=6, do_sample=True, top_k=5, seed=3)
