"""Reading a dataset file and choosing which of its records to use.

The reference code takes the first N records of CounterFact; the paper says they are random. Both are offered:
`sample="random"` (default) draws N records with `random.Random(seed).sample` (a random subset, in random order),
`sample="first"` takes the first N in file order. `n=None` keeps every record in file order.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Sequence

SAMPLE_MODES = ("random", "first")


def read_records(path: str | Path, source: str) -> list[Any]:
    """The JSON list in `path`; a clear `ValueError` if it is not JSON, not a list, or empty."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: {path} is not valid JSON: {err}") from err
    if not isinstance(data, list):
        raise ValueError(f"{source}: {path} must hold a JSON list of records, found {type(data).__name__}")
    if not data:
        raise ValueError(f"{source}: {path} holds no records (an empty dataset is an error)")
    return data


def select(records: Sequence[Any], n: int | None = None, *, seed: int = 0, sample: str = "random",
           source: str = "dataset") -> list[Any]:
    """`n` records of `records`: seeded random subset (`sample="random"`) or the first `n` (`sample="first"`)."""
    if sample not in SAMPLE_MODES:
        raise ValueError(f"{source}: sample must be one of {SAMPLE_MODES}, got {sample!r}")
    if not records:
        raise ValueError(f"{source}: the dataset is empty")
    if n is None:
        return list(records)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{source}: n must be an int or None, got {n!r}")
    if n <= 0:
        raise ValueError(f"{source}: n must be positive, got {n} (an empty selection is not a dataset)")
    if n > len(records):
        raise ValueError(f"{source}: n={n} records asked for, but the dataset has only {len(records)}")
    if sample == "first":
        return list(records[:n])
    return random.Random(seed).sample(list(records), n)
