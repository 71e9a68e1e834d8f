"""EasyEdit metrics (`easyeditor/evaluate/`): teacher-forced partial-credit accuracy and locality as
agreement of argmax tokens with the unedited model.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .scoring import Probe, TargetScore


def _mean(xs: Sequence[float]) -> float:
    if not xs:
        raise ValueError("nothing to average over")
    return sum(xs) / len(xs)


def rewrite_acc(score: TargetScore) -> float:
    """rewrite_acc = (1/T) Σ_j [argmax_j == target_j] over the tokens of the new target after the rewrite
    prompt (teacher forced, partial credit)."""
    return score.token_acc


def rephrase_acc(score: TargetScore) -> float:
    """rephrase_acc = the same as rewrite_acc, after the first paraphrase prompt only."""
    return score.token_acc


def locality(pre_argmax: Sequence[Sequence[int]], post_argmax: Sequence[Sequence[int]]) -> float:
    """locality = (1/|P|) Σ_p (1/T_p) Σ_j [argmax_post_j(p) == argmax_pre_j(p)]: the share of argmax
    tokens, at the positions that predict the locality target (teacher forced on the true answer), that
    the edit left unchanged. Exactly 1.0 for the unedited model by construction."""
    if len(pre_argmax) != len(post_argmax):
        raise ValueError("pre and post argmax lists differ in number of prompts")
    vals = []
    for a, b in zip(pre_argmax, post_argmax):
        if len(a) != len(b) or not a:
            raise ValueError("pre and post argmax differ in length (different tokenizer?) or are empty")
        vals.append(sum(x == y for x, y in zip(a, b)) / len(a))
    return _mean(vals)


def portability(scores: Sequence[TargetScore]) -> float:
    """portability = (1/|P|) Σ_p (1/T) Σ_j [argmax_j == answer_j] over the record's portability prompts."""
    return _mean([s.token_acc for s in scores])


def _first(answer: Any) -> str | None:
    while isinstance(answer, (list, tuple)):
        if not answer:
            return None
        answer = answer[0]
    return answer if isinstance(answer, str) and answer.strip() else None


def _items(obj: Any) -> list[Probe]:
    if isinstance(obj, Mapping):
        if "New Question" in obj:
            ans = _first(obj.get("New Answer"))
            return [Probe(obj["New Question"], ans)] if ans else []
        if "prompt" in obj:
            ans = _first(obj.get("ground_truth", obj.get("answer", obj.get("target"))))
            prompts = obj["prompt"]
            if isinstance(prompts, str):
                return [Probe(prompts, ans)] if ans else []
            answers = obj.get("ground_truth", obj.get("answer", obj.get("target")))
            if isinstance(answers, (list, tuple)) and len(answers) == len(prompts):
                return [Probe(p, a) for p, a0 in zip(prompts, answers) if (a := _first(a0))]
            return [Probe(p, ans) for p in prompts] if ans else []
        return []
    if isinstance(obj, (list, tuple)):
        return [p for o in obj for p in _items(o)]
    return []


def portability_probes(record: Mapping[str, Any]) -> dict[str, list[Probe]]:
    """The record's portability questions, by group name; {} when it has no `portability` field.

    Accepted shapes: {"New Question", "New Answer"} (EasyEdit's data files), {name: {"prompt", "ground_truth"}}
    (its `edit()` arguments), {name: [ {prompt, ground_truth|answer|target}, ...]}, or a list of such items.
    A list of answer aliases counts its first alias. Nothing is made up for records without the field.
    """
    port = record.get("portability")
    if not port:
        return {}
    if isinstance(port, Mapping) and ("New Question" in port or "prompt" in port):
        items = _items(port)
        return {"": items} if items else {}
    if isinstance(port, Mapping):
        out = {str(k): _items(v) for k, v in port.items()}
        return {k: v for k, v in out.items() if v}
    items = _items(port)
    return {"": items} if items else {}
