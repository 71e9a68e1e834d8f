"""Official ZsRE metrics (ROME/MEMIT/AlphaEdit `eval_utils_zsre.py` + `summarize.py`).

The official code scores each target token teacher-forced and keeps a per-token hit list; summarize.py
averages that list per prompt (partial credit), then over records. We read the same hits from one
forward pass of ``prompt + " " + target`` (the official code re-tokenizes ``prompt + decode(target[:j])``
for every j, which gives the same thing except where decoding and re-encoding changes the tokens).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .scoring import TargetScore


def _mean(xs: Sequence[float]) -> float:
    if not xs:
        raise ValueError("no prompts to average over")
    return sum(xs) / len(xs)


def token_accuracy(scores: Sequence[TargetScore]) -> float:
    """(1/|P|) Σ_p (1/T) Σ_j [argmax_j(p) == target_j]: the reference's per-prompt mean of token hits."""
    return _mean([s.token_acc for s in scores])


def strict_accuracy(scores: Sequence[TargetScore]) -> float:
    """(1/|P|) Σ_p Π_j [argmax_j(p) == target_j]: every token of the answer right."""
    return _mean([float(s.all_correct) for s in scores])


def loc_prompt(loc: str) -> str:
    """The official locality prompt: `loc` ("nq question: ...") followed by "?" (added only if missing)."""
    return loc if loc.rstrip().endswith("?") else loc + "?"


def prompts_of(record: Mapping[str, Any], *, target: str = "answers") -> dict[str, Any]:
    """Prompts and targets of a ZsRE (MEND format) record.

    `target="answers"` scores the edit toward `answers[0]` (official); `target="alt"` toward `alt` (EasyEdit).
    """
    if "src" not in record:
        raise ValueError(f"record {record.get('case_id')!r} is not in ZsRE MEND format (no src)")
    if target == "answers":
        new = (record.get("answers") or [""])[0]
    elif target == "alt":
        new = record.get("alt") or ""
    else:
        raise ValueError("zsre target must be 'answers' or 'alt'")
    if not new.strip():
        raise ValueError(f"ZsRE record {record.get('case_id')!r}: empty {target} target")
    rephrase = record.get("rephrase")
    return {
        "target_new": new.strip(),
        "rewrite": [record["src"]],
        "paraphrase": [rephrase] if rephrase else [],
        "loc": record.get("loc"),
        "loc_ans": (record.get("loc_ans") or "").strip() or None,
    }
