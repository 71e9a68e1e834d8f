"""The mutant sample of quality/select_mutants.py: deterministic, proportional per function, stable per function."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("select_mutants", Path(__file__).parents[1] / "quality/select_mutants.py")
select_mutants = importlib.util.module_from_spec(spec)
spec.loader.exec_module(select_mutants)

SCOPE = ["m.a.*", "m.b.*"]


def results(sizes: dict[str, int]) -> dict[str, int | None]:
    return {f"{f}__mutmut_{i}": None for f, n in sizes.items() for i in range(1, n + 1)}


def test_each_function_gets_its_share_and_out_of_scope_none():
    chosen = select_mutants.select(results({"m.a.x_f": 10, "m.a.x_g": 3, "m.b.x_h": 7, "m.c.x_k": 50}), SCOPE, 0.25, 0)
    per_function = {f: sum(k.startswith(f + "__") for k in chosen) for f in ("m.a.x_f", "m.a.x_g", "m.b.x_h", "m.c.x_k")}
    assert per_function == {"m.a.x_f": math.ceil(2.5), "m.a.x_g": 1, "m.b.x_h": 2, "m.c.x_k": 0}
    assert len(set(chosen)) == len(chosen)


def test_same_seed_same_sample_other_seed_other_sample():
    r = results({"m.a.x_f": 200})
    assert select_mutants.select(r, SCOPE, 0.3, 0) == select_mutants.select(r, SCOPE, 0.3, 0)
    assert select_mutants.select(r, SCOPE, 0.3, 0) != select_mutants.select(r, SCOPE, 0.3, 1)


def test_a_new_function_does_not_reshuffle_the_others():
    before = select_mutants.select(results({"m.a.x_f": 40}), SCOPE, 0.25, 0)
    after = select_mutants.select(results({"m.a.x_f": 40, "m.a.x_new": 9}), SCOPE, 0.25, 0)
    assert [k for k in after if k.startswith("m.a.x_f__")] == before


def test_fraction_one_is_the_whole_scope_and_resume_skips_results():
    r = results({"m.a.x_f": 5, "m.b.x_h": 2})
    assert sorted(select_mutants.select(r, SCOPE, 1.0, 0)) == sorted(r)
    r["m.a.x_f__mutmut_2"] = 1
    assert "m.a.x_f__mutmut_2" not in select_mutants.select(r, SCOPE, 1.0, 0, resume=True)
    with pytest.raises(ValueError, match="MUTATION_SAMPLE"):
        select_mutants.select(r, SCOPE, 0.0, 0)
