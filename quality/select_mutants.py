"""Choose the mutants a mutation run tests. Run with the mutmut work copy as the current directory, after mutmut
has generated the mutants (quality/mutation.sh does both).

The scope is a list of globs over mutant names. With a fraction below 1, each function's in-scope mutants are
sampled: ceil(fraction x n) of its n mutants, drawn by a generator seeded with the seed and the function's name, so
the same code, fraction and seed give the same sample, every function in scope is represented in proportion, and a
change to one function does not reshuffle the sample of another. The score of a sample estimates the score of the
whole scope (summarize.py gives its interval).

usage: python select_mutants.py FRACTION SEED [--resume] SCOPE_GLOB ...   (prints one mutant name per line)
"""
from __future__ import annotations

import fnmatch
import glob
import json
import math
import random
import sys
from collections import defaultdict


def function_of(key: str) -> str:
    """'alphaedit_core.solve.x_memit_delta__mutmut_7' -> 'alphaedit_core.solve.x_memit_delta'."""
    return key.rsplit("__mutmut_", 1)[0]


def select(results: dict[str, int | None], scope: list[str], fraction: float, seed: int,
           resume: bool = False) -> list[str]:
    """The in-scope mutant names to test, sampled per function; with `resume`, only those without a result."""
    if not 0 < fraction <= 1:
        raise ValueError(f"MUTATION_SAMPLE must be in (0, 1], got {fraction}")
    by_function: dict[str, list[str]] = defaultdict(list)
    for key in results:
        if any(fnmatch.fnmatch(key, g) for g in scope):
            by_function[function_of(key)].append(key)
    chosen = []
    for function, keys in sorted(by_function.items()):
        keys = sorted(keys, key=lambda k: int(k.rsplit("_", 1)[1]))
        if fraction < 1:
            keys = sorted(random.Random(f"{seed}:{function}").sample(keys, math.ceil(fraction * len(keys))),
                          key=lambda k: int(k.rsplit("_", 1)[1]))
        chosen += keys
    return [k for k in chosen if not resume or results[k] is None]


def main(argv: list[str]) -> None:
    fraction, seed, rest = float(argv[0]), int(argv[1]), argv[2:]
    resume = "--resume" in rest
    scope = [a for a in rest if a != "--resume"]
    results: dict[str, int | None] = {}
    for meta in sorted(glob.glob("mutants/alphaedit_core/*.py.meta")):
        results.update(json.load(open(meta))["exit_code_by_key"])
    if not results:
        sys.exit("no mutants generated: run mutmut first (quality/mutation.sh does)")
    print("\n".join(select(results, scope, fraction, seed, resume)))


if __name__ == "__main__":
    main(sys.argv[1:])
