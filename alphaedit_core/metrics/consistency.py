"""Consistency (the official "reference score"): TF-IDF cosine similarity between a record's generations
(joined with spaces) and reference text about the new target (joined with spaces).

The official code uses a TfidfVectorizer whose idf comes from Wikipedia (`idf.npy`, `tfidf_vocab.json`) and,
as reference text, the attribute snippets (`attribute_snippets.json`) of the new target under the record's
relation. Offline we have neither: by default the vectorizer (scikit-learn defaults) is fitted on the
reference texts of the evaluated records, so values depend on which records are evaluated together (fit it
once with :func:`fit_tfidf` on the full set and pass it in to compare subsets), and are not on the paper's
scale.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer


def reference_text_of(record: Mapping[str, Any]) -> str | None:
    """The record's `reference_text` (a string, or a list of strings joined with spaces); None if absent."""
    ref = record.get("reference_text")
    if isinstance(ref, (list, tuple)):
        ref = " ".join(str(r) for r in ref)
    return ref if isinstance(ref, str) and ref.strip() else None


def fit_tfidf(records_or_texts: Iterable[Mapping[str, Any] | str]) -> TfidfVectorizer:
    """Fit a default TfidfVectorizer on reference texts (one document per record / string)."""
    docs = []
    for r in records_or_texts:
        t = r if isinstance(r, str) else reference_text_of(r)
        if t:
            docs.append(t)
    if not docs:
        raise ValueError("no reference texts to fit the TF-IDF vectorizer on")
    return TfidfVectorizer().fit(docs)


def tfidf_similarity(text_a: str, text_b: str, vec: TfidfVectorizer) -> float:
    """cos(tfidf(a), tfidf(b)) = ⟨a, b⟩ / (‖a‖‖b‖); 0.0 when either has no in-vocabulary word (the
    official code returns NaN there)."""
    enc = vec.transform([text_a, text_b]).toarray()
    na, nb = np.linalg.norm(enc[0]), np.linalg.norm(enc[1])
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(enc[0], enc[1]) / na / nb)


def consistency(generations: Sequence[str], reference: str, vec: TfidfVectorizer) -> float:
    """Official reference score: tfidf_similarity(" ".join(generations), reference, vec)."""
    if not generations:
        raise ValueError("no generations")
    return tfidf_similarity(" ".join(generations), reference, vec)
