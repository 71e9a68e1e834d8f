"""Summarise a finished mutmut run. Run with the mutmut work copy as the current directory (quality/mutation.sh
does): reads mutants/**/*.meta, writes OUT/summary.json (counts per module and in total) and OUT/survivors.md
(every surviving or timed-out mutant with its diff).

usage: python summarize.py OUT_DIR LABEL [SCOPE_GLOB ...]   (only mutants matching a glob are counted)
"""
from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files


def main(out: Path, label: str, scope: list[str]) -> None:
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
        tested = c["killed"] + c["survived"] + c["timeout"] + c["suspicious"] + c["segfault"]
        return round(100 * (c["killed"] + c["timeout"]) / tested, 1) if tested else None

    summary = {"label": label, "scope": scope,
               "modules": {k: dict(v) | {"score_percent": score(v)} for k, v in per_module.items()},
               "total": dict(total) | {"score_percent": score(total)}}
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
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
