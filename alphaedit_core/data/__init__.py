"""Datasets of edit requests: CounterFact, multi-CounterFact, ZsRE (canonical files), and the offline set built
from fact packages (`alphaedit_core.data.offline`). Every loader validates every record, raising a `ValueError`
that names the record and the field, and samples with a seed (`sample="random"`) or takes the first N
(`sample="first"`, what the reference code does). `contamination(records, edited)` reports the neighbourhood
prompts about subjects a run edited (none in the offline set, whose neighbours come from a separate subject pool)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..requests import EditRequest
from .counterfact import (
    contaminated_share,
    contamination,
    edited_subjects,
    load_counterfact,
    load_offline_counterfact,
    validate_counterfact,
)
from .download import BASE_URL, DatasetDownloadError
from .zsre import load_offline_zsre, load_zsre, validate_zsre

__all__ = [
    "BASE_URL",
    "DatasetDownloadError",
    "contaminated_share",
    "contamination",
    "edited_subjects",
    "load_counterfact",
    "load_offline_counterfact",
    "load_offline_zsre",
    "load_zsre",
    "to_requests",
    "validate_counterfact",
    "validate_zsre",
]


def to_requests(records: Iterable[Mapping[str, Any]], kind: str = "counterfact",
                zsre_target: str = "answers") -> list[EditRequest]:
    """Edit requests from loaded records.

    `kind="counterfact"`: one request per record (per rewrite, for multi-rewrite records: they share the
    `case_id`). `kind="zsre"`: the edit goes toward `answers[0]` (`zsre_target="answers"`, the official code) or
    toward `alt` (`zsre_target="alt"`, EasyEdit).
    """
    if kind not in ("counterfact", "zsre"):
        raise ValueError(f"kind must be 'counterfact' or 'zsre', got {kind!r}")
    if zsre_target not in ("answers", "alt"):
        raise ValueError(f"zsre_target must be 'answers' or 'alt', got {zsre_target!r}")
    requests = []
    for record in records:
        if kind == "zsre":
            requests.append(EditRequest.from_zsre(record, target=zsre_target))
            continue
        rewrites = record["requested_rewrite"]
        if isinstance(rewrites, list):
            requests.extend(EditRequest.from_counterfact({"case_id": record.get("case_id"), "requested_rewrite": rw})
                            for rw in rewrites)
        else:
            requests.append(EditRequest.from_counterfact(record))
    return requests
