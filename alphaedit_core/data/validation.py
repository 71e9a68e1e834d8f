"""Field checks shared by the record validators: each failure is a `ValueError` naming the record and the field."""
from __future__ import annotations

from typing import Any, Mapping, NoReturn


def record_id(record: Any, index: int) -> str:
    """How an error names a record: its `case_id` when it has one, else its index in the file."""
    if isinstance(record, Mapping) and isinstance(record.get("case_id"), (int, str)) \
            and not isinstance(record.get("case_id"), bool):
        return f"case_id={record['case_id']!r} (index {index})"
    return f"index {index}"


class RecordChecker:
    """Checks the fields of one record; `source` and the record id go into every message."""

    def __init__(self, source: str, record: Any, index: int):
        self.prefix = f"{source} record {record_id(record, index)}"
        if not isinstance(record, Mapping):
            raise ValueError(f"{self.prefix}: must be a JSON object, got {type(record).__name__}")

    def fail(self, field: str, problem: str) -> NoReturn:
        raise ValueError(f"{self.prefix}: field '{field}' {problem}")

    def get(self, obj: Mapping[str, Any], key: str, field: str) -> Any:
        if key not in obj:
            self.fail(field, "is missing")
        return obj[key]

    def mapping(self, obj: Mapping[str, Any], key: str, field: str) -> Mapping[str, Any]:
        value = self.get(obj, key, field)
        if not isinstance(value, Mapping):
            self.fail(field, f"must be an object, got {type(value).__name__}")
        return value

    def text(self, obj: Mapping[str, Any], key: str, field: str, *, allow_empty: bool = False) -> str:
        value = self.get(obj, key, field)
        if not isinstance(value, str):
            self.fail(field, f"must be a string, got {type(value).__name__}")
        if not allow_empty and not value.strip():
            self.fail(field, "is empty")
        return value

    def texts(self, obj: Mapping[str, Any], key: str, field: str, count: int | None = None,
              *, min_count: int = 0) -> list[str]:
        value = self.get(obj, key, field)
        if not isinstance(value, list):
            self.fail(field, f"must be a list of strings, got {type(value).__name__}")
        if count is not None and len(value) != count:
            self.fail(field, f"must hold exactly {count} prompts, got {len(value)}")
        if len(value) < min_count:
            self.fail(field, f"must hold at least {min_count} strings, got {len(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{field}[{i}]", f"must be a string, got {type(item).__name__}")
            if not item.strip():
                self.fail(f"{field}[{i}]", "is empty")
        return value
