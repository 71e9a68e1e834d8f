"""Official CounterFact metrics (ROME/MEMIT/AlphaEdit `eval_utils_counterfact.py` + `summarize.py`).

Each function takes, per prompt, the pair (score of " target_new", score of " target_true") after that
prompt (see :mod:`.scoring`) and returns the per-record value: the mean over the record's prompts.
The paper reports the mean over records ×100.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .scoring import TargetScore

PairScores = Sequence[tuple[TargetScore, TargetScore]]  # (new, true) per prompt


def _mean(xs: Sequence[float]) -> float:
    if not xs:
        raise ValueError("no prompts to average over")
    return sum(xs) / len(xs)


def prefers_new(new: TargetScore, true: TargetScore) -> bool:
    """NLL_new < NLL_true, with NLL the mean per-token NLL of the target after the prompt."""
    return new.nll < true.nll


def efficacy(pairs: PairScores) -> float:
    """Efficacy = (1/|P|) Σ_{p ∈ rewrite prompts} [NLL_new(p) < NLL_true(p)]."""
    return _mean([float(prefers_new(n, t)) for n, t in pairs])


def generalization(pairs: PairScores) -> float:
    """Generalisation = (1/|P|) Σ_{p ∈ paraphrase prompts} [NLL_new(p) < NLL_true(p)]."""
    return _mean([float(prefers_new(n, t)) for n, t in pairs])


def specificity(pairs: PairScores) -> float:
    """Specificity = (1/|P|) Σ_{p ∈ neighbourhood prompts} [NLL_true(p) < NLL_new(p)]."""
    return _mean([float(t.nll < n.nll) for n, t in pairs])


def magnitude(pairs: PairScores, *, toward: str = "new") -> float:
    """Magnitude = (1/|P|) Σ_p (p_new − p_true) for rewrite/paraphrase prompts (`toward="new"`), and
    (1/|P|) Σ_p (p_true − p_new) for neighbourhood prompts (`toward="true"`), as the official summarize.py.
    p = exp(−mean per-token NLL), the geometric mean of the per-token probabilities, not the sequence
    probability."""
    if toward not in ("new", "true"):
        raise ValueError("toward must be 'new' or 'true'")
    sign = 1.0 if toward == "new" else -1.0
    return _mean([sign * (n.prob - t.prob) for n, t in pairs])


def strict_accuracy(scores: Sequence[TargetScore]) -> float:
    """Official `*_prompts_correct`: (1/|P|) Σ_p [every token of the correct target is the argmax]
    (target_new for rewrite/paraphrase prompts, target_true for neighbourhood prompts)."""
    return _mean([float(s.all_correct) for s in scores])


def rewrite_of(record: Mapping[str, Any]) -> Mapping[str, Any]:
    rw = record["requested_rewrite"]
    if isinstance(rw, list):  # multi-CounterFact style: first rewrite, as requests.py does
        rw = rw[0]
    return rw


def prompts_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluated prompts and targets of a CounterFact record (targets without leading space)."""
    if "requested_rewrite" not in record:
        raise ValueError(f"record {record.get('case_id')!r} is not in CounterFact format (no requested_rewrite)")
    rw = rewrite_of(record)
    true = (rw.get("target_true") or {}).get("str")
    if not true:
        raise ValueError(f"CounterFact record {record.get('case_id')!r} has no target_true")
    return {
        "target_new": rw["target_new"]["str"].strip(),
        "target_true": true.strip(),
        "rewrite": [rw["prompt"].format(rw["subject"])],
        "paraphrase": list(record.get("paraphrase_prompts") or []),
        "neighborhood": list(record.get("neighborhood_prompts") or []),
        "generation": list(record.get("generation_prompts") or []),
    }
