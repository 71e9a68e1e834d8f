"""The edit request: one fact rewrite `(subject, relation prompt) -> target_new`; `check_batch` for a list of them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence


def prompt_problem(prompt: str) -> str | None:
    """Why `prompt` is not a valid request prompt (None when it is): it must hold "{}" exactly once and no other
    brace (no "{x}", "{0}", "{{" or unbalanced brace: the prompt is later used as a format string)."""
    if prompt.count("{}") != 1:
        return f"must contain exactly one '{{}}' for the subject, found {prompt.count('{}')}"
    rest = prompt.replace("{}", "", 1)
    if "{" in rest or "}" in rest:
        i = min(j for j in (rest.find("{"), rest.find("}")) if j >= 0)
        return f"has a brace besides the subject's '{{}}' (near {rest[max(i - 5, 0) : i + 6]!r})"
    return None


def _strip(value: Any) -> Any:
    """`value.strip()` for a string; anything else unchanged (for `EditRequest` to reject by name)."""
    return value.strip() if isinstance(value, str) else value


def _is_case_id(value: Any) -> bool:
    return value is None or isinstance(value, (int, str)) and not isinstance(value, bool)


@dataclass(frozen=True)
class EditRequest:
    """One rewrite, in the shape of CounterFact's `requested_rewrite`.

    `prompt` holds "{}" where the subject goes; targets are stored without a leading space
    (one is added when they are tokenized, as the reference code does).
    """

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None
    case_id: int | str | None = None

    def __post_init__(self) -> None:
        if not _is_case_id(self.case_id):
            raise TypeError(f"request field 'case_id'={self.case_id!r}: must be an int, a string or None, "
                            f"got {type(self.case_id).__name__}")
        for name in ("prompt", "subject", "target_new", "target_true"):
            value = getattr(self, name)
            if not isinstance(value, str) and not (name == "target_true" and value is None):
                want = "a string or None" if name == "target_true" else "a string"
                raise TypeError(f"request {self.case_id!r}: field {name!r}={value!r}: must be {want}, "
                                f"got {type(value).__name__}")
        problem = prompt_problem(self.prompt)
        if problem:
            raise ValueError(f"request {self.case_id!r}: field 'prompt'={self.prompt!r}: {problem}")
        if not self.subject.strip():
            raise ValueError(f"request {self.case_id}: empty subject")
        if not self.target_new.strip():
            raise ValueError(f"request {self.case_id}: empty target_new")

    @property
    def text(self) -> str:
        """The prompt with the subject filled in."""
        return self.prompt.format(self.subject)

    @classmethod
    def from_counterfact(cls, record: Mapping[str, Any]) -> "EditRequest":
        """From a CounterFact record (or its `requested_rewrite` alone)."""
        rw = record.get("requested_rewrite", record)
        if isinstance(rw, list):  # multi-CounterFact keeps a list of rewrites; take the first
            rw = rw[0]
        return cls(
            prompt=rw["prompt"],
            subject=rw["subject"],
            target_new=_strip(rw["target_new"]["str"]),
            target_true=_strip((rw.get("target_true") or {}).get("str", "")) or None,
            case_id=record.get("case_id"),
        )

    @classmethod
    def from_zsre(cls, record: Mapping[str, Any], target: str = "answers") -> "EditRequest":
        """From a ZsRE (MEND format) record. `target="answers"` edits toward `answers[0]` as the
        official code does; `target="alt"` edits toward `alt` as EasyEdit does."""
        subject = record["subject"]
        src = record["src"]
        for name, value in (("subject", subject), ("src", src)):
            if not isinstance(value, str):
                raise TypeError(f"ZsRE record {record.get('case_id')!r}: field {name!r}={value!r}: must be a string, "
                                f"got {type(value).__name__}")
        if subject not in src:
            raise ValueError(f"ZsRE record {record.get('case_id')}: subject {subject!r} not in src {src!r}")
        new = record["answers"][0] if target == "answers" else record["alt"]
        return cls(
            prompt=src.replace(subject, "{}", 1),
            subject=subject,
            target_new=_strip(new),
            target_true=(record.get("pred") or None),
            case_id=record.get("case_id"),
        )


def check_batch(requests: Sequence[EditRequest]) -> None:
    """Raise ValueError, naming both case ids, when two requests of `requests` edit one fact (subject, prompt) to
    two different targets, or one case id is used by two separate requests (the same request twice, or two
    requests that do not follow each other). Requests that share a case id and follow each other are the rewrites
    of one multi-rewrite record (multi-CounterFact): allowed when they edit different facts. Two different case
    ids that ask for the same rewrite are allowed; `case_id=None` is never compared."""
    facts: dict[tuple[str, str], int] = {}
    last_seen: dict[Any, int] = {}
    for i, r in enumerate(requests):
        if not isinstance(r, EditRequest):
            raise TypeError(f"requests[{i}]={r!r}: must be an EditRequest, got {type(r).__name__}")
        fact = (r.subject, r.prompt)
        j = facts.get(fact)
        if j is not None and requests[j].target_new != r.target_new:
            raise ValueError(f"requests case_id={requests[j].case_id!r} (index {j}) and case_id={r.case_id!r} "
                             f"(index {i}) edit the fact {r.text!r} to two different targets: "
                             f"{requests[j].target_new!r} and {r.target_new!r}")
        if j is not None and r.case_id is not None and requests[j].case_id == r.case_id:
            raise ValueError(f"requests case_id={r.case_id!r} (index {j}) and case_id={r.case_id!r} (index {i}): "
                             f"duplicate case id, the same request {r.text!r} -> {r.target_new!r} twice")
        facts[fact] = i
        if r.case_id is not None and r.case_id in last_seen and last_seen[r.case_id] != i - 1:
            j = last_seen[r.case_id]
            raise ValueError(f"requests case_id={requests[j].case_id!r} (index {j}) and case_id={r.case_id!r} "
                             f"(index {i}): duplicate case id for two separate requests ({requests[j].text!r} and "
                             f"{r.text!r})")
        if r.case_id is not None:
            last_seen[r.case_id] = i
