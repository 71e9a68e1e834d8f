"""Summarise a finished mutmut run. Run with the mutmut work copy as the current directory (quality/mutation.sh
does): reads mutants/**/*.meta, writes OUT/summary.json (counts per module and in total) and OUT/survivors.md
(every surviving or timed-out mutant with its diff).

usage: python summarize.py OUT_DIR LABEL [SCOPE_GLOB ...]   (only mutants matching a glob are counted)
       python summarize.py OUT_DIR LABEL --sample FILE      (only the mutants named in FILE, one per line)

The score is killed / tested; for a sample it comes with a 95 % Wilson interval for the score of the whole scope.
"""
from __future__ import annotations

import fnmatch
import json
import math
import sys
from collections import Counter
from pathlib import Path

from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n, in percent."""
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return round(100 * (centre - half), 1), round(100 * (centre + half), 1)


def main(out: Path, label: str, scope: list[str], sample: set[str] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    per_module: dict[str, Counter] = {}
    survivors: list[tuple[str, str, str]] = []
    for path in sorted(walk_mutatable_files(), key=str):
        m = SourceFileMutationData(path=path)
        m.load()
        module = str(path)
        counts = per_module.setdefault(module, Counter())
        for key, code in sorted(m.exit_code_by_key.items()):
            if scope and not any(fnmatch.fnmatch(key, g) for g in scope):
                continue
            if sample is not None and key not in sample:
                continue
            status = status_by_exit_code[code]
            counts[status] += 1
            if status not in ("killed", "caught by type check", "not checked"):
                try:
                    diff = get_diff_for_mutant(key, path=path)
                except Exception as err:  # noqa: BLE001 - report, never hide, a mutant we cannot show
                    diff = f"(diff unavailable: {type(err).__name__}: {err})"
                survivors.append((status, key, diff))
    total = Counter()
    for c in per_module.values():
        total.update(c)

    def score(c: Counter) -> float | None:
        tested = c["killed"] + c["survived"] + c["timeout"] + c["suspicious"] + c["segfault"] + c["no tests"]
        return round(100 * (c["killed"] + c["timeout"]) / tested, 1) if tested else None

    def interval(c: Counter) -> tuple[float, float] | None:
        tested = c["killed"] + c["survived"] + c["timeout"] + c["suspicious"] + c["segfault"] + c["no tests"]
        return wilson(c["killed"] + c["timeout"], tested) if tested else None

    summary = {"label": label, "scope": scope,
               "sample": None if sample is None else len(sample),
               "modules": {k: dict(v) | {"score_percent": score(v), "score_interval_95": interval(v)}
                           for k, v in per_module.items()},
               "total": dict(total) | {"score_percent": score(total), "score_interval_95": interval(total)}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"# Mutants not killed ({label})", "",
             "Every mutant of the core modules that the selected tests did not kill, with its diff. "
             "Explanations: quality/mutation-results.md.", ""]
    for status, key, diff in survivors:
        lines += [f"## {key}: {status}", "", "```diff", diff, "```", ""]
    (out / "survivors.md").write_text("\n".join(lines))
    print(json.dumps(summary["total"]))
    for k, v in per_module.items():
        print(f"{k}: {dict(v)} score {score(v)}")


if __name__ == "__main__":
    # summarize.py OUT LABEL [--sample FILE] [SCOPE PATTERN ...]: the scope is recorded, and applied with the sample
    args = sys.argv[3:]
    sample = None
    if args[:1] == ["--sample"]:
        sample, args = set(Path(args[1]).read_text().split()), args[2:]
    main(Path(sys.argv[1]), sys.argv[2], args, sample)
