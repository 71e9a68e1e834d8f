"""ZsRE in MEND format (https://memit.baulab.info/data/dsets/zsre_mend_eval.json): loading, validation, sampling.

A record: `subject`, `src` (a question containing the subject), `pred`, `rephrase`, `alt`, `answers` [..],
`loc` ("nq question: ..."), `loc_ans`, `cond`. The canonical file has no `case_id`; the loaders add the record's
index as `case_id` when it is missing, so errors, requests and results can name records.

Not checked: `alt` differing from `answers[0]` (the MEND file is not ours to clean; the official evaluation edits
toward `answers[0]` and EasyEdit toward `alt`); the offline set guarantees it. `pred` may be empty.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .download import ZSRE, fetch
from .sampling import read_records, select
from .validation import RecordChecker

OFFLINE_ZSRE = Path(__file__).parent / "files" / "offline_zsre.json"

LOC_PREFIX = "nq question: "


def validate_zsre_record(record: Any, index: int, source: str = "ZsRE") -> None:
    """Raise `ValueError` (naming the record and the field) unless `record` is a well-formed MEND ZsRE record."""
    check = RecordChecker(source, record, index)
    subject = check.text(record, "subject", "subject")
    src = check.text(record, "src", "src")
    if subject not in src:
        check.fail("subject", f"{subject!r} is not in src {src!r}")
    if "{" in src or "}" in src:
        check.fail("src", f"must not contain a brace (the subject's place becomes '{{}}' in a format string): {src!r}")
    check.text(record, "rephrase", "rephrase")
    check.text(record, "pred", "pred", allow_empty=True)
    check.text(record, "alt", "alt")
    check.texts(record, "answers", "answers", min_count=1)
    loc = check.text(record, "loc", "loc")
    if not loc.startswith(LOC_PREFIX):
        check.fail("loc", f"must start with {LOC_PREFIX!r}: {loc!r}")
    check.text(record, "loc_ans", "loc_ans")
    check.text(record, "cond", "cond", allow_empty=True)
    if "case_id" in record and (isinstance(record["case_id"], bool)
                                or not isinstance(record["case_id"], (int, str))):
        check.fail("case_id", f"must be an int or a string, got {type(record['case_id']).__name__}")


def validate_zsre(records: Sequence[Any], source: str = "ZsRE") -> None:
    """Validate every record; an empty list is an error."""
    if not records:
        raise ValueError(f"{source}: the dataset is empty")
    for i, record in enumerate(records):
        validate_zsre_record(record, i, source)


def _load(path: str | Path, source: str, n: int | None, seed: int, sample: str) -> list[dict[str, Any]]:
    records = read_records(path, source)
    validate_zsre(records, source)
    records = [r if "case_id" in r else {"case_id": i, **r} for i, r in enumerate(records)]
    return select(records, n, seed=seed, sample=sample, source=source)


def load_zsre(path: str | Path | None = None, *, n: int | None = None, seed: int = 0,
              sample: str = "random") -> list[dict[str, Any]]:
    """ZsRE (MEND format) records, validated, each with a `case_id` (its index in the file unless it has one).

    `path=None` reads `zsre_mend_eval.json` from `cache_dir("data")`, downloading it from `download.BASE_URL` the
    first time. Sampling as in `load_counterfact`.
    """
    if path is None:
        path = fetch(ZSRE, loader="load_zsre")
    return _load(path, f"ZsRE ({Path(path).name})", n, seed, sample)


def load_offline_zsre(n: int | None = None, seed: int = 0, sample: str = "random") -> list[dict[str, Any]]:
    """The offline facts as ZsRE (MEND format) questions (see `alphaedit_core.data.offline`)."""
    return _load(OFFLINE_ZSRE, "offline ZsRE", n, seed, sample)
