"""Evaluation of edited models: the official CounterFact / ZsRE metrics, EasyEdit's metrics and
generation-based answer checks, all from one shared teacher-forced scoring pass.

Main entry points: :func:`evaluate` (tidy per-record rows), :func:`compute_baseline` (the unedited model's
argmax tokens for EasyEdit locality), :func:`summarize` (means with 95% confidence intervals),
:func:`paired_differences` (method A − method B on the same records, with a paired 95% interval).
"""
from .consistency import consistency, fit_tfidf, tfidf_similarity
from .evaluator import COLUMNS, EVALUATOR_VERSION, FAMILIES, check_contamination, compute_baseline, evaluate
from .fluency import fluency, ngram_entropy, text_fluency, word_tokenize
from .generation import Generation, contains_answer, exact_match, first_answer_span, generate
from .paired import paired_bootstrap, paired_differences, paired_t, plot_paired_differences
from .scoring import Probe, TargetScore, encode_prompt, encode_target, score_pairs
from .summary import bootstrap_interval, summarize, t_interval, wilson_interval

__all__ = [
    "COLUMNS", "EVALUATOR_VERSION", "FAMILIES", "Generation", "Probe", "TargetScore",
    "bootstrap_interval", "check_contamination", "compute_baseline", "consistency", "contains_answer",
    "encode_prompt", "encode_target", "evaluate", "exact_match", "first_answer_span", "fit_tfidf", "fluency",
    "generate", "ngram_entropy", "paired_bootstrap", "paired_differences", "paired_t", "plot_paired_differences",
    "score_pairs", "summarize", "t_interval", "text_fluency", "tfidf_similarity", "wilson_interval", "word_tokenize",
]
