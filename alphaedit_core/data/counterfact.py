"""CounterFact and multi-CounterFact: loading, validation, sampling.

A record (canonical format, https://memit.baulab.info/data/dsets/counterfact.json):
`case_id`, `requested_rewrite` {`prompt` with one "{}", `subject`, `relation_id`, `target_new` {`str`, `id`},
`target_true` {`str`, `id`}}, `paraphrase_prompts` [2], `neighborhood_prompts` [10], `attribute_prompts`,
`generation_prompts`. multi-CounterFact has the same shape; a `requested_rewrite` that is a list of rewrites is
accepted too (each one is validated). Extra fields (e.g. `pararel_idx`, or `reference_text` in the offline set)
are kept.

Every record of the file is validated before sampling; the first malformed one raises a `ValueError` naming the
record (`case_id`, and its index) and the field. Nothing is skipped.

Neighbour contamination: :func:`contamination` / :func:`contaminated_share` say which neighbourhood prompts of a set
of records are about a subject that a run edited (the offline set lists each neighbourhood prompt's subject in
`neighborhood_subjects` and has none; canonical CounterFact cannot be re-split, so its share is reported).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..requests import prompt_problem
from .download import COUNTERFACT, MULTI_COUNTERFACT, fetch
from .sampling import read_records, select
from .validation import RecordChecker

OFFLINE_COUNTERFACT = Path(__file__).parent / "files" / "offline_counterfact.json"

N_PARAPHRASE = 2
N_NEIGHBORHOOD = 10


def _check_rewrite(check: RecordChecker, rw: Mapping[str, Any], field: str) -> None:
    prompt = check.text(rw, "prompt", f"{field}.prompt")
    subject = check.text(rw, "subject", f"{field}.subject")
    problem = prompt_problem(prompt)
    if problem:
        check.fail(f"{field}.prompt", f"{problem}: {prompt!r}")
    try:
        filled = prompt.format(subject)
    except (IndexError, KeyError, ValueError) as err:
        check.fail(f"{field}.prompt", f"cannot be filled with the subject ({err}): {prompt!r}")
    if subject not in filled:
        check.fail(f"{field}.subject", f"{subject!r} is not in the filled prompt {filled!r}")
    check.text(rw, "relation_id", f"{field}.relation_id")
    targets = {}
    for key in ("target_new", "target_true"):
        target = check.mapping(rw, key, f"{field}.{key}")
        targets[key] = check.text(target, "str", f"{field}.{key}.str")
        if "id" in target and not isinstance(target["id"], (str, int)):
            check.fail(f"{field}.{key}.id", f"must be a string, got {type(target['id']).__name__}")
    if targets["target_new"].strip().casefold() == targets["target_true"].strip().casefold():
        check.fail(f"{field}.target_new", f"equals target_true ({targets['target_true']!r})")


def validate_counterfact_record(record: Any, index: int, source: str = "CounterFact") -> None:
    """Raise `ValueError` (naming the record and the field) unless `record` is a well-formed CounterFact record."""
    check = RecordChecker(source, record, index)
    case_id = check.get(record, "case_id", "case_id")
    if isinstance(case_id, bool) or not isinstance(case_id, (int, str)):
        check.fail("case_id", f"must be an int or a string, got {type(case_id).__name__}")
    rw = check.get(record, "requested_rewrite", "requested_rewrite")
    if isinstance(rw, Mapping):
        _check_rewrite(check, rw, "requested_rewrite")
    elif isinstance(rw, list) and rw:  # multi-rewrite records
        for j, item in enumerate(rw):
            if not isinstance(item, Mapping):
                check.fail(f"requested_rewrite[{j}]", f"must be an object, got {type(item).__name__}")
            _check_rewrite(check, item, f"requested_rewrite[{j}]")
    else:
        check.fail("requested_rewrite", "must be an object (or a non-empty list of objects)")
    check.texts(record, "paraphrase_prompts", "paraphrase_prompts", N_PARAPHRASE)
    check.texts(record, "neighborhood_prompts", "neighborhood_prompts", N_NEIGHBORHOOD)
    check.texts(record, "attribute_prompts", "attribute_prompts")
    check.texts(record, "generation_prompts", "generation_prompts")
    if "reference_text" in record:
        check.text(record, "reference_text", "reference_text")


def validate_counterfact(records: Sequence[Any], source: str = "CounterFact") -> None:
    """Validate every record, and that `case_id`s are unique; an empty list is an error."""
    if not records:
        raise ValueError(f"{source}: the dataset is empty")
    seen: dict[Any, int] = {}
    for i, record in enumerate(records):
        validate_counterfact_record(record, i, source)
        case_id = record["case_id"]
        if case_id in seen:
            RecordChecker(source, record, i).fail("case_id", f"duplicates the case_id of index {seen[case_id]}")
        seen[case_id] = i


def _load(path: str | Path, source: str, n: int | None, seed: int, sample: str) -> list[dict[str, Any]]:
    records = read_records(path, source)
    validate_counterfact(records, source)
    return select(records, n, seed=seed, sample=sample, source=source)


def load_counterfact(path: str | Path | None = None, *, n: int | None = None, seed: int = 0,
                     sample: str = "random", multi: bool = False) -> list[dict[str, Any]]:
    """CounterFact (or multi-CounterFact with `multi=True`) records, validated.

    `path=None` reads `counterfact.json` / `multi_counterfact.json` from `cache_dir("data")`, downloading it from
    `download.BASE_URL` the first time. `n=None` keeps all records in file order; otherwise `sample="random"` draws
    `n` with `random.Random(seed)` and `sample="first"` takes the first `n` (what the reference code does).
    """
    name = MULTI_COUNTERFACT if multi else COUNTERFACT
    if path is None:
        path = fetch(name, loader="load_counterfact")
    source = "multi-CounterFact" if multi else "CounterFact"
    return _load(path, f"{source} ({Path(path).name})", n, seed, sample)


def load_offline_counterfact(n: int | None = None, seed: int = 0,
                             sample: str = "random") -> list[dict[str, Any]]:
    """The project's offline counterfactual set (see `alphaedit_core.data.offline`), CounterFact format."""
    return _load(OFFLINE_COUNTERFACT, "offline CounterFact", n, seed, sample)


# --- neighbour contamination -----------------------------------------------------------------------------------


def edited_subjects(edited: Any) -> set[str]:
    """The subjects a run edited, from its edited records: CounterFact records (every rewrite of a multi-rewrite
    record), ZsRE records (`subject`), `EditRequest`s (`.subject`) or subject strings, mixed as they come."""
    if isinstance(edited, (str, Mapping)) or not isinstance(edited, Iterable):
        raise TypeError(f"edited must be an iterable of records, requests or subjects, got {type(edited).__name__}")
    subjects: set[str] = set()
    for item in edited:
        if isinstance(item, str):
            subjects.add(item)
        elif isinstance(item, Mapping) and "requested_rewrite" in item:
            rws = item["requested_rewrite"]
            subjects.update(rw["subject"] for rw in (rws if isinstance(rws, list) else [rws]))
        elif isinstance(item, Mapping) and "subject" in item:
            subjects.add(item["subject"])
        elif isinstance(getattr(item, "subject", None), str):
            subjects.add(item.subject)
        else:
            raise TypeError(f"cannot tell the subject of the edited item {item!r}")
    return {s for s in subjects if s.strip()}


def locality_prompts(record: Mapping[str, Any], kind: str = "counterfact") -> list[tuple[str, str | None]]:
    """(prompt, its subject or None) for each locality prompt of `record`: CounterFact `neighborhood_prompts` with
    `neighborhood_subjects` where the record lists them (the offline set; canonical CounterFact does not), ZsRE
    `loc` (subject unknown)."""
    if kind == "zsre":
        return [(record["loc"], None)] if record.get("loc") else []
    prompts = list(record.get("neighborhood_prompts") or [])
    subjects = record.get("neighborhood_subjects")
    if subjects is None:
        return [(p, None) for p in prompts]
    if not isinstance(subjects, list) or len(subjects) != len(prompts) \
            or not all(isinstance(s, str) and s and s in p for s, p in zip(subjects, prompts)):
        raise ValueError(f"CounterFact record case_id={record.get('case_id')!r}: field 'neighborhood_subjects' must "
                         "list the subject of each neighbourhood prompt, in order")
    return list(zip(prompts, subjects))


def contamination(records: Iterable[Mapping[str, Any]], edited: Any, *, kind: str = "counterfact") -> dict[str, Any]:
    """Which locality prompts of `records` are about a subject the run edited (`edited`: see :func:`edited_subjects`).

    A neighbourhood prompt is contaminated when its listed subject (`neighborhood_subjects`) was edited, or when
    an edited subject is written in it as a whole word (:func:`.offline.whole_word_pattern`, case-sensitive: the
    only test for records that do not list their neighbours' subjects, such as canonical CounterFact, or for ZsRE
    `loc` questions). Returns {"share", "n_prompts", "n_contaminated", "n_records", "n_records_contaminated",
    "by_record": {case_id: contaminated prompts}, "prompts": [{"case_id", "index", "prompt", "subject", "match"}]},
    `match` being "subject" or "whole word". The offline set has none by construction; canonical CounterFact,
    which cannot be re-split, has some: report the share beside its specificity and locality.
    """
    from .offline import whole_word_pattern

    if kind not in ("counterfact", "zsre"):
        raise ValueError(f"kind must be 'counterfact' or 'zsre', not {kind!r}")
    subjects = edited_subjects(edited)
    pattern = whole_word_pattern(sorted(subjects))
    n_prompts = n_records = 0
    found: list[dict[str, Any]] = []
    by_record: dict[Any, int] = {}
    for i, record in enumerate(records):
        case_id = record.get("case_id", i)
        n_records += 1
        for j, (prompt, subject) in enumerate(locality_prompts(record, kind)):
            n_prompts += 1
            if subject is not None and subject in subjects:
                hit, match = subject, "subject"
            else:
                m = pattern.search(prompt) if pattern is not None else None
                if m is None:
                    continue
                hit, match = m.group(1), "whole word"
            found.append({"case_id": case_id, "index": j, "prompt": prompt, "subject": hit, "match": match})
            by_record[case_id] = by_record.get(case_id, 0) + 1
    return {"share": len(found) / n_prompts if n_prompts else 0.0, "n_prompts": n_prompts,
            "n_contaminated": len(found), "n_records": n_records, "n_records_contaminated": len(by_record),
            "by_record": by_record, "prompts": found}


def contaminated_share(records: Iterable[Mapping[str, Any]], edited: Any, *, kind: str = "counterfact") -> float:
    """The share of the locality prompts of `records` that are about a subject edited by `edited` (see
    :func:`contamination`, which also lists them); 0.0 for records without locality prompts."""
    return contamination(records, edited, kind=kind)["share"]
