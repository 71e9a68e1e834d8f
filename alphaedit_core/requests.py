"""The edit request: one fact rewrite `(subject, relation prompt) -> target_new`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


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
        if self.prompt.count("{}") != 1:
            raise ValueError(f"request {self.case_id}: prompt must contain exactly one '{{}}': {self.prompt!r}")
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
            target_new=rw["target_new"]["str"].strip(),
            target_true=(rw.get("target_true") or {}).get("str", "").strip() or None,
            case_id=record.get("case_id"),
        )

    @classmethod
    def from_zsre(cls, record: Mapping[str, Any], target: str = "answers") -> "EditRequest":
        """From a ZsRE (MEND format) record. `target="answers"` edits toward `answers[0]` as the
        official code does; `target="alt"` edits toward `alt` as EasyEdit does."""
        subject = record["subject"]
        src = record["src"]
        if subject not in src:
            raise ValueError(f"ZsRE record {record.get('case_id')}: subject {subject!r} not in src {src!r}")
        new = record["answers"][0] if target == "answers" else record["alt"]
        return cls(
            prompt=src.replace(subject, "{}", 1),
            subject=subject,
            target_new=new.strip(),
            target_true=(record.get("pred") or None),
            case_id=record.get("case_id"),
        )
