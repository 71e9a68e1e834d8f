"""CounterFact and multi-CounterFact: loading, validation, sampling.

A record (canonical format, https://memit.baulab.info/data/dsets/counterfact.json):
`case_id`, `requested_rewrite` {`prompt` with one "{}", `subject`, `relation_id`, `target_new` {`str`, `id`},
`target_true` {`str`, `id`}}, `paraphrase_prompts` [2], `neighborhood_prompts` [10], `attribute_prompts`,
`generation_prompts`. multi-CounterFact has the same shape; a `requested_rewrite` that is a list of rewrites is
accepted too (each one is validated). Extra fields (e.g. `pararel_idx`, or `reference_text` in the offline set)
are kept.

Every record of the file is validated before sampling; the first malformed one raises a `ValueError` naming the
record (`case_id`, and its index) and the field. Nothing is skipped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .download import COUNTERFACT, MULTI_COUNTERFACT, fetch
from .sampling import read_records, select
from .validation import RecordChecker

OFFLINE_COUNTERFACT = Path(__file__).parent / "files" / "offline_counterfact.json"

N_PARAPHRASE = 2
N_NEIGHBORHOOD = 10


def _check_rewrite(check: RecordChecker, rw: Mapping[str, Any], field: str) -> None:
    prompt = check.text(rw, "prompt", f"{field}.prompt")
    subject = check.text(rw, "subject", f"{field}.subject")
    if prompt.count("{}") != 1:
        check.fail(f"{field}.prompt", f"must contain exactly one '{{}}' for the subject: {prompt!r}")
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
