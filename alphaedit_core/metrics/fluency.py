"""Fluency: the n-gram entropy of generated text, as the official code computes it
(`compute_n_gram_entropy` / `n_gram_entropy` in `eval_utils_counterfact.py`).

Definition matched exactly: for one text, split it into nltk-style word tokens; for n in (2, 3) take the
frequency distribution of its n-grams, p_g = count_g / #n-grams, and H_n = −Σ_g p_g log2 p_g (0 when the
text has fewer than n tokens). The official code then returns ``np.mean([2/3·H2, 4/3·H3])``, i.e.
**(1/2)·((2/3)·H2 + (4/3)·H3) = H2/3 + 2·H3/3** — the *mean* of the two weighted entropies, not their sum
(the published fluency, ~600 = ~6 bits ×100 for ~100-token texts, is only consistent with the mean). A record's
fluency is the arithmetic mean of that over its generated texts. Report ×100 to compare with the paper.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

_CONTRACTION_NT = re.compile(r"(?i)\b(\w+)(n't)\b")
_CONTRACTION_CLITIC = re.compile(r"(?i)(\w)('(?:s|re|ve|ll|d|m))\b")
_OPEN_QUOTE = re.compile(r'(^|(?<=[\s(\[{<]))"')
_TOKEN = re.compile(r"``|''|(?i:n't)|'(?i:s|re|ve|ll|d|m)\b|\w+(?:[-.,']\w+)*|\.\.\.|--|\S")


def word_tokenize(text: str) -> list[str]:
    """A small stand-in for nltk.word_tokenize (Penn Treebank style, no nltk needed).

    Words (keeping inner hyphens, apostrophes and number separators: "well-known", "3.5", "1,000") and each
    punctuation mark are tokens; "n't" and the clitics 's 're 've 'll 'd 'm are split off ("don't" →
    "do", "n't"); "..." and "--" stay whole; an opening double quote becomes ``, a closing one ''.
    Differs from nltk mainly on abbreviations ("Dr." → "Dr", "."), which nltk keeps mid-sentence.
    """
    text = _CONTRACTION_NT.sub(r"\1 \2", text)
    text = _CONTRACTION_CLITIC.sub(r"\1 \2", text)
    text = _OPEN_QUOTE.sub(" `` ", text)
    text = text.replace('"', " '' ")
    return _TOKEN.findall(text)


def ngram_entropy(tokens: Sequence[str], n: int) -> float:
    """H_n = −Σ_g p_g log2 p_g over the distinct n-grams g of `tokens`, p_g = count_g / #n-grams; 0 if none."""
    grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(grams.values())
    if total == 0:
        return 0.0
    return -sum((c / total) * math.log2(c / total) for c in grams.values())


def text_fluency(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """Official compute_n_gram_entropy: mean_k(weights[k] · H_{ns[k]}) = (1/2)·((2/3)·H2 + (4/3)·H3), log2."""
    toks = word_tokenize(text)
    vals = [w * ngram_entropy(toks, n) for n, w in zip(ns, weights)]
    return sum(vals) / len(vals)


def fluency(texts: Sequence[str]) -> float:
    """Official n_gram_entropy: the arithmetic mean of :func:`text_fluency` over the texts."""
    if not texts:
        raise ValueError("no texts")
    return sum(text_fluency(t) for t in texts) / len(texts)
