"""Across models (C1, C8, C9, C10): the decision rules of alphaedit_core/compare.py on hand-made numbers, the plan of
each model's runs, and the two comparison chapters executed through papermill on small synthetic results folders.

The synthetic folders have the exact layout and columns notebooks/edit_count and notebooks/projection_check write
(taken from a tiny edit_count run: metrics_raw-<method>.csv, diagnostics-<method>.csv, summary.json,
provenance.json; projection.csv, threshold_sweep.csv, summary.json), with scores chosen so that every verdict is
known in advance. Building them costs nothing; running edit_count itself on tiny models is covered by
test_notebooks.py."""
import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from alphaedit_core import compare
from alphaedit_core.compare import (c1_across, c8_scale, c9_instruct, c10_families, calibrated_rule, combine_rules,
                                    common_milestones, direction, parse_calibrated, plan, same_model_pair,
                                    same_records)

# --- decision rules on hand-made inputs -------------------------------------------------------------------------


def row(diff, half=0.05):
    return dict(diff=diff, ci_low=diff - half, ci_high=diff + half)


def test_direction():
    assert direction(row(0.2)) == "better" and direction(row(-0.2)) == "worse"
    assert direction(row(0.02)) == "no difference"
    assert direction(None) == direction(dict(diff=0.1, ci_low=math.nan, ci_high=0.2)) == "missing"


def test_common_milestones_ignores_runs_without_any_and_intersects_the_rest():
    reached = {("a", "official", "alphaedit"): [0, 10, 20, 40], ("b", "official", "alphaedit"): [10, 20],
               ("c", "official", "memit"): [10, 20, 30], ("d", "official", "alphaedit"): []}
    assert common_milestones(reached) == [10, 20]
    assert common_milestones({("a",): [10, 20], ("b",): [30]}) == []
    assert common_milestones({}) == []


def test_same_records():
    assert same_records({"a": [1, 2, 3], "b": [3, 2, 1]}) == dict(same=True, n_common=3, n_union=3, differing=[])
    s = same_records({"a": [1, 2, 3], "b": [1, 2, 4]})
    assert not s["same"] and s["n_common"] == 2 and s["n_union"] == 4 and s["differing"] == ["a", "b"]


SCALE = dict(first=100, names=("small", "large"))


def test_c8_reproduced_when_the_larger_is_better_and_holds_while_the_smaller_drops():
    held, dropped = {m: (0.98, 0.95) for m in compare.EDIT_MEASURES}, {m: (0.97, 0.70) for m in compare.EDIT_MEASURES}
    both_better = {m: row(0.25) for m in compare.EDIT_MEASURES}
    assert c8_scale(both_better, dropped, held, last=200, **SCALE)["verdict"] == "reproduced"
    # better in one edit measure only: partly
    one = {"efficacy": row(0.25), "rewrite_acc": row(0.02)}
    assert c8_scale(one, dropped, held, last=200, **SCALE)["verdict"] == "partly reproduced"
    # the larger worse somewhere: not reproduced, whatever else holds
    worse = {"efficacy": row(0.25), "rewrite_acc": row(-0.2)}
    assert c8_scale(worse, dropped, held, last=200, **SCALE)["verdict"] == "not reproduced"


def test_c8_without_a_contrast_is_not_testable_on_a_short_stream_and_not_reproduced_on_a_long_one():
    same = {m: row(0.0) for m in compare.EDIT_MEASURES}
    held = {m: (0.98, 0.96) for m in compare.EDIT_MEASURES}
    short = c8_scale(same, held, held, last=200, **SCALE)
    assert short["verdict"] == "not testable here" and "2,000 edits" in short["evidence"]
    assert c8_scale(same, held, held, last=1000, **SCALE)["verdict"] == "not reproduced"
    assert c8_scale({}, {}, {}, last=200, **SCALE)["verdict"] == "not testable here"


def test_c8_the_hold_versus_drop_pattern_alone_is_partly():
    held, dropped = {m: (0.98, 0.95) for m in compare.EDIT_MEASURES}, {m: (0.97, 0.80) for m in compare.EDIT_MEASURES}
    same = {m: row(0.0, 0.2) for m in compare.EDIT_MEASURES}
    assert c8_scale(same, dropped, held, last=200, **SCALE)["verdict"] == "partly reproduced"


def test_c10_rules():
    differ = {("Gemma", "LLaMA"): {"efficacy": row(-0.3)}}
    alike = {("Gemma", "LLaMA"): {"efficacy": row(-0.05, 0.02), "specificity": row(0.3, 0.4)}}  # small / unclear
    assert c10_families(differ, {"LLaMA": 0.8, "Gemma": 0.3}, {}, last=200)["verdict"] == "reproduced"
    assert c10_families(differ, {"LLaMA": 0.8, "Gemma": 0.7}, {}, last=200)["verdict"] == "partly reproduced"
    assert c10_families(alike, {"LLaMA": 0.8, "Gemma": 0.3}, {}, last=200)["verdict"] == "partly reproduced"
    assert c10_families(alike, {"LLaMA": 0.8, "Gemma": 0.7}, {}, last=200)["verdict"] == "not reproduced"
    # the calibrated P changing a non-LLaMA model materially counts as "needs its own tuning"; LLaMA's own does not
    assert c10_families(alike, {}, {"Gemma": {"efficacy": row(0.2)}}, last=200)["verdict"] == "partly reproduced"
    assert c10_families(alike, {}, {"LLaMA": {"efficacy": row(0.2)}}, last=200)["verdict"] == "not reproduced"
    assert c10_families({}, {}, {}, last=200)["verdict"] == "not testable here"
    # a difference that is a trade-off is named as one, and still counts as a difference
    move = {("Gemma", "LLaMA"): {"efficacy": row(-0.13), "locality": row(0.17)}}
    got = c10_families(move, {"LLaMA": 0.77, "Gemma": 0.79}, {}, last=200)
    assert got["verdict"] == "partly reproduced"
    assert "Gemma − LLaMA is a trade-off, not a ranking: Gemma keeps more facts and lands fewer edits" in got["evidence"]
    assert "trade-off" not in c10_families(differ, {}, {}, last=200)["evidence"]
    # each pair at its own last common milestone: the evidence names each pair's milestone
    three = {("Gemma", "LLaMA"): {"efficacy": row(-0.3)}, ("LLaMA", "Qwen"): {"efficacy": row(0.2)}}
    got = c10_families(three, {}, {}, last={("Gemma", "LLaMA"): 200, ("LLaMA", "Qwen"): 100})
    assert "each pair at its last common milestone" in got["evidence"]
    assert "Gemma − LLaMA (200 edits) efficacy -0.300" in got["evidence"]
    assert "LLaMA − Qwen (100 edits) efficacy +0.200" in got["evidence"]
    same = c10_families(three, {}, {}, last={("Gemma", "LLaMA"): 100, ("LLaMA", "Qwen"): 100})["evidence"]
    assert same.startswith("AlphaEdit at 100 edits on the same records: Gemma − LLaMA efficacy")


def test_trade_off_is_one_model_landing_more_edits_and_keeping_fewer_facts():
    move = compare.trade_off({"efficacy": row(-0.13), "rewrite_acc": row(-0.26), "locality": row(0.17),
                              "specificity": row(0.14)})
    assert move == dict(lands_more=[], keeps_more=["specificity", "locality"],
                        lands_fewer=["efficacy", "rewrite_acc"], keeps_fewer=[])
    assert compare.trade_off({"efficacy": row(0.2), "locality": row(-0.1)})["lands_more"] == ["efficacy"]
    # a ranking (better in both kinds, or better in one and no different in the other) is not a trade-off
    assert compare.trade_off({"efficacy": row(0.2), "locality": row(0.1)}) is None
    assert compare.trade_off({"efficacy": row(0.2), "locality": row(0.01)}) is None
    # mixed signals inside one kind, or an interval holding 0, make no trade-off either
    assert compare.trade_off({"efficacy": row(0.2), "rewrite_acc": row(-0.2), "locality": row(-0.1)}) is None
    assert compare.trade_off({"efficacy": row(0.04), "locality": row(-0.1)}) is None
    assert compare.trade_off({}) is None


def _gap_frames(gemma_diff, gemma_ratio):
    vs = pd.DataFrame([dict(model=m, rule=r, edits=200, measure=meas, diff=d, ci_low=d - 0.03, ci_high=d + 0.03)
                       for m, d in (("smol", 0.065), ("gemma", gemma_diff)) for r in ("official", "calibrated")
                       for meas in ("efficacy", "locality")]
                      + [dict(model="gemma", rule="official", edits=100, measure="efficacy", diff=0.9, ci_low=0.8,
                              ci_high=1.0)])
    w = pd.DataFrame([dict(model="smol", rule="official", method="alphaedit", edits=200, relative_change=0.2),
                      dict(model="smol", rule="official", method="memit", edits=200, relative_change=0.1),
                      dict(model="gemma", rule="official", method="alphaedit", edits=200, relative_change=0.4),
                      dict(model="gemma", rule="official", method="memit", edits=200,
                           relative_change=0.4 * gemma_ratio),
                      dict(model="gemma", rule="calibrated", method="alphaedit", edits=200, relative_change=9.0)])
    return vs, w


def test_method_gaps_pairs_the_gap_with_memits_share_of_alphaedits_update():
    vs, w = _gap_frames(0.46, 0.25)
    gaps = compare.method_gaps(vs, w, edits=200).set_index("model")
    assert list(gaps.index) == ["smol", "gemma"]  # one row per model: the official rule at the milestone only
    assert gaps.loc["smol", "change_ratio"] == pytest.approx(0.5)
    assert gaps.loc["gemma", "change_ratio"] == pytest.approx(0.25)
    assert gaps.loc["gemma", "diff"] == pytest.approx(0.46) and gaps.loc["gemma", "ci_low"] == pytest.approx(0.43)
    # a model without MEMIT's diagnostics at the milestone has no row
    assert compare.method_gaps(vs, w[w.method == "alphaedit"], edits=200).empty


def test_method_gap_reading_names_the_model_where_memit_falls_further_behind():
    vs, w = _gap_frames(0.46, 0.25)
    text = compare.method_gap_reading(compare.method_gaps(vs, w, edits=200), "smol")
    assert text.startswith("On gemma MEMIT falls 40 points further behind")  # 46 − 6.5, rounded
    assert "a smaller share of AlphaEdit's there (0.25× against 0.50×)" in text and "memit_lambda_check" in text
    bigger = compare.method_gap_reading(compare.method_gaps(*_gap_frames(0.46, 0.8), edits=200), "smol")
    assert ("not a smaller share of AlphaEdit's there (0.80× against 0.50×), so an update of the same relative size "
            "lands fewer edits on that model" in bigger)
    # within DROP of the reference model, or no reference model: nothing to say
    assert compare.method_gap_reading(compare.method_gaps(*_gap_frames(0.14, 0.25), edits=200), "smol") == ""
    assert compare.method_gap_reading(compare.method_gaps(vs, w, edits=200), "other") == ""


def lambda_check(model="m"):
    """A λ check's CSV as benchmarks/memit_lambda_check.py writes it (hand-made numbers)."""
    rows = [("unedited", None, 0.04, 0.91, None), ("alphaedit", None, 0.96, 0.87, 0.195),
            ("memit", 15000.0, 0.46, 0.88, 0.119), ("memit", 5000.0, 0.90, 0.87, 0.190),
            ("memit", 1500.0, 1.00, 0.85, 0.273)]
    return pd.DataFrame([dict(setting=m, method=m, lam=lam, efficacy=e, specificity=sp, rewrite_acc=e, change=c,
                              seconds=1.0, model=model, requests=50, preset_lam=15000.0)
                         for m, lam, e, sp, c in rows])


def test_lambda_matched_picks_memits_update_closest_in_size_to_alphaedits():
    found = compare.lambda_matched(lambda_check())
    assert found["alphaedit"]["efficacy"] == 0.96
    assert found["matched"]["lam"] == 5000.0  # |0.190 − 0.195| is the smallest gap
    assert found["preset"]["lam"] == 15000.0 and found["preset"]["efficacy"] == 0.46
    text = compare.lambda_reading("m", found, 50)
    assert text == ("On m's first 50 requests (one batch, the same targets), MEMIT at λ 5000, whose update is the "
                    "size of AlphaEdit's (0.190 against 0.195), reaches efficacy 0.90 and specificity 0.87 against "
                    "AlphaEdit's 0.96 and 0.87; at the preset's λ 15000 its update is 0.119 and its efficacy 0.46.")
    check = lambda_check()
    assert compare.lambda_matched(check[check.method != "memit"]) is None
    # the preset's λ matched already: no second clause
    same = check[check.lam != 5000.0].assign(preset_lam=1500.0)
    same.loc[same.lam == 1500.0, "change"] = 0.2
    assert compare.lambda_reading("m", compare.lambda_matched(same), 50).endswith("0.96 and 0.87.")


def test_c9_needs_a_same_model_pair():
    better = {"inst": {m: row(0.2) for m in compare.EDIT_MEASURES}}
    confounded = c9_instruct(better, same_model=False, last=200, base="base")
    assert confounded["verdict"] == "not testable here" and "Confounded by model identity" in confounded["evidence"]
    assert c9_instruct(better, same_model=True, last=200, base="base")["verdict"] == "reproduced"
    one = {"inst": {"efficacy": row(0.2), "rewrite_acc": row(0.0)}}
    assert c9_instruct(one, same_model=True, last=200, base="base")["verdict"] == "partly reproduced"
    worse = {"inst": {"efficacy": row(0.2), "rewrite_acc": row(-0.2)}}
    assert c9_instruct(worse, same_model=True, last=200, base="base")["verdict"] == "not reproduced"
    none = {"inst": {m: row(0.0) for m in compare.EDIT_MEASURES}}
    assert c9_instruct(none, same_model=True, last=200, base="base")["verdict"] == "not reproduced"
    assert c9_instruct({}, same_model=True, last=200, base="base")["verdict"] == "not testable here"


def test_combine_rules():
    r, p, n, t = ({"verdict": v, "evidence": v} for v in
                  ("reproduced", "partly reproduced", "not reproduced", "not testable here"))
    assert combine_rules({"official": r, "calibrated": r})["verdict"] == "reproduced"
    mixed = combine_rules({"official": r, "calibrated": n})
    assert mixed["verdict"] == "partly reproduced" and "depends on how P is set" in mixed["evidence"]
    assert combine_rules({"official": n, "calibrated": p})["verdict"] == "partly reproduced"
    half = combine_rules({"official": n, "calibrated": t})
    assert half["verdict"] == "not reproduced" and "Not tested under the calibrated P rule" in half["evidence"]
    assert combine_rules({"official": t, "calibrated": t})["verdict"] == "not testable here"


def test_c1_across_models():
    ok = dict(verdict="reproduced", kept_share=0.8, energy_kept=0.4, leak=0.5)
    assert c1_across({"a": ok, "b": {**ok, "kept_share": 0.2}})["verdict"] == "reproduced"
    assert c1_across({"a": ok, "b": {**ok, "verdict": "not reproduced"}})["verdict"] == "partly reproduced"
    assert c1_across({"a": {}, "b": {}})["verdict"] == "not testable here"
    one = c1_across({"a": ok, "b": {}})  # one model cannot show that P differs across models
    assert one["verdict"] == "not testable here" and "a: keeps 80%" in one["evidence"]


def test_same_model_pair():
    a = dict(architecture="LlamaForCausalLM", layers=32, d_model=4096, d_ff=14336, vocab=128256)
    assert same_model_pair(a, dict(a))
    assert not same_model_pair(a, {**a, "layers": 30}) and not same_model_pair(a, None)
    assert same_model_pair({**a, "vocab": None}, {**a, "vocab": None})  # vocabulary not recorded on either side
    shapes = {m: compare.model_shape(m) for m in compare.MODELS}
    assert not any(same_model_pair(shapes["gemma3-270m"], shapes[m]) for m in compare.MODELS if m != "gemma3-270m")


# --- the plan of each model's runs ------------------------------------------------------------------------------


def test_every_stream_is_a_prefix_of_the_default_stream():
    """The records of a shorter stream are the first records of the 2,000-edit stream only from PREFIX_MIN on
    (random.sample switches algorithm below it); every planned stream respects that."""
    from alphaedit_core.data import load_offline_counterfact

    ids = lambda n: [r["case_id"] for r in load_offline_counterfact(n=n, seed=0)]  # noqa: E731
    full = ids(compare.STREAM)
    assert ids(compare.PREFIX_MIN) == full[:compare.PREFIX_MIN]
    assert ids(compare.PREFIX_MIN - 1) != full[:compare.PREFIX_MIN - 1]
    assert ids(200) != full[:200]
    for model in compare.MODELS:
        n = plan(model, "official", "/nonexistent")["edit_count"]["n_edits"]
        assert n == compare.STREAM or (n >= compare.PREFIX_MIN and ids(n) == full[:n])
    with pytest.raises(ValueError, match="not the first"):
        plan("qwen2.5-coder-1.5b-instruct", "official", "/nonexistent", n_edits=200)


def test_plan_of_each_rule(tmp_path):
    small = plan("qwen2.5-coder-1.5b-instruct", "official", tmp_path)
    assert small["label"] == "qwen2.5-coder-1.5b-instruct" and small["edits"] == 200
    assert small["edit_count"]["n_edits"] == 400 and small["edit_count"]["stop_after_edits"] == 200
    assert small["edit_count"]["milestones"] == [100, 200] and "methods" not in small["edit_count"]
    cal = plan("gemma3-270m", "calibrated", tmp_path)
    assert cal["label"] == "gemma3-270m-calibrated" and cal["edit_count"]["methods"] == ["alphaedit"]
    assert cal["edit_count"]["overrides"] == dict(nullspace_mode="energy", nullspace_energy=compare.DEFAULT_ENERGY)
    assert cal["projection_check"]["overrides"] == cal["edit_count"]["overrides"]
    assert "documented default" in cal["rule_source"]
    default = plan("smollm2-135m-instruct", "official", tmp_path)["edit_count"]  # the study's main run, unchanged
    assert default == dict(model="smollm2-135m-instruct", label="smollm2-135m-instruct", n_edits=2000,
                           milestones=[100, 200, 500, 1000, 1500, 2000])
    hub = plan("meta-llama/Meta-Llama-3-8B", "official", tmp_path, hparams="alphaedit-llama3-8b")
    assert hub["label"] == "meta-llama--Meta-Llama-3-8B" and hub["edit_count"]["n_edits"] == 2000
    assert hub["edit_count"]["hparams"] == hub["projection_check"]["hparams"] == "alphaedit-llama3-8b"


def test_calibrated_rule_is_read_from_the_model_then_the_default_model_then_the_default(tmp_path):
    assert calibrated_rule(tmp_path, "gemma3-270m")["overrides"]["nullspace_energy"] == compare.DEFAULT_ENERGY
    (tmp_path / "smollm2-135m-instruct" / "operating_points").mkdir(parents=True)
    (tmp_path / "smollm2-135m-instruct" / "operating_points" / "calibrated.json").write_text(json.dumps(dict(
        model="smollm2-135m-instruct", notebook="operating_points", n_edits=200,  # the layout operating_points writes
        rule=dict(nullspace_mode="energy", nullspace_energy=0.05), criterion=dict(leak_target=0.1),
        per_layer=[dict(layer=4, n_kept=100, threshold_equivalent=0.004)])))
    rule = calibrated_rule(tmp_path, "gemma3-270m")
    assert rule["overrides"] == dict(nullspace_mode="energy", nullspace_energy=0.05)
    assert "default model's" in rule["source"]
    (tmp_path / "gemma3-270m" / "operating_points").mkdir(parents=True)
    (tmp_path / "gemma3-270m" / "operating_points" / "calibrated.json").write_text(
        json.dumps(dict(overrides=dict(nullspace_mode="energy", nullspace_energy=0.02))))
    assert calibrated_rule(tmp_path, "gemma3-270m")["overrides"]["nullspace_energy"] == 0.02
    with pytest.raises(ValueError, match="only the energy rule"):
        parse_calibrated(dict(nullspace_mode="threshold", nullspace_energy=0.02))
    with pytest.raises(ValueError, match="share in"):
        parse_calibrated(dict(nullspace_energy=1.5))
    with pytest.raises(ValueError, match="no nullspace_energy"):
        parse_calibrated(dict(threshold=0.02))


def _operating_points(root, label, model, c3, rows, hparams_part=None):
    folder = root / label / "operating_points"
    folder.mkdir(parents=True)
    if hparams_part:  # the run key of the default setting, as settings.csv records it
        pd.DataFrame([dict(setting="alphaedit-default", run_key=f"abc123-n200-b100-s0-{hparams_part}-def456")]).to_csv(
            folder / "settings.csv", index=False)
    (folder / "provenance.json").write_text(json.dumps(dict(notebook="operating_points",
                                                            parameters=dict(model=model, label=label))))
    (folder / "summary.json").write_text(json.dumps(dict(model=label, n_edits=200, claims=dict(C3=c3))))
    pd.DataFrame(rows).to_csv(folder / "paired_knobs.csv", index=False)


def test_preset_checks_are_found_by_the_model_their_run_names_not_by_the_folder(tmp_path):
    c3 = dict(verdict="not reproduced", evidence="derived worse")
    rows = [dict(comparison="C3: default − migrated", measure="efficacy", diff=-0.05, ci_low=-0.085, ci_high=-0.02),
            dict(comparison="C4: clamp", measure="efficacy", diff=0.3, ci_low=0.2, ci_high=0.4)]
    _operating_points(tmp_path, "gemma3-270m-c3", "gemma3-270m", c3, rows)
    # a folder whose name starts like the model's but holds another model, and one whose C3 was not run
    _operating_points(tmp_path, "gemma3-270m-it", "gemma3-270m-it", c3, rows)
    _operating_points(tmp_path, "gemma3-270m", "gemma3-270m", dict(verdict="not testable here", evidence=""), rows)
    found = compare.preset_checks(tmp_path, "gemma3-270m")
    assert [f["label"] for f in found] == ["gemma3-270m-c3"]
    assert found[0]["diffs"] == {"efficacy": (-0.05, -0.085, -0.02)}  # the C4 row is not C3's
    assert (found[0]["verdict"], found[0]["edits"]) == ("not reproduced", 200)
    assert found[0]["current_preset"] is None  # no settings.csv: cannot be told
    assert compare.preset_checks(tmp_path, "qwen2.5-coder-0.5b-instruct") == []


def test_a_preset_check_made_with_another_preset_than_todays_says_so(tmp_path):
    from alphaedit_core.checkpoint import digest
    from alphaedit_core.hparams import EditHParams

    model = "qwen2.5-coder-0.5b-instruct"
    today = digest(EditHParams.load(model).to_dict())
    before = digest(EditHParams.load(model, L2=1.0).to_dict())
    assert today != before
    c3 = dict(verdict="not reproduced", evidence="")
    rows = [dict(comparison="C3: default − migrated", measure="efficacy", diff=0.0, ci_low=0.0, ci_high=0.0)]
    _operating_points(tmp_path, "now", model, c3, rows, hparams_part=today)
    _operating_points(tmp_path, "then", model, c3, rows, hparams_part=before)
    assert {f["label"]: f["current_preset"] for f in compare.preset_checks(tmp_path, model)} == dict(now=True,
                                                                                                     then=False)


def test_a_table_without_edit_counts_columns_is_refused(tmp_path):
    folder = tmp_path / "m" / "edit_count"
    folder.mkdir(parents=True)
    pd.DataFrame(dict(case_id=[1], value=[1.0])).to_csv(folder / "metrics_raw-alphaedit.csv", index=False)
    with pytest.raises(ValueError, match="lack column"):
        compare.read_run(tmp_path, "m", "official")


def test_a_run_that_failed_before_any_score_is_reported_as_failed(tmp_path):
    folder = tmp_path / "m" / "edit_count"
    folder.mkdir(parents=True)
    (folder / "provenance.json").write_text(json.dumps(dict(notebook="edit_count", status="failed")))
    run = compare.read_run(tmp_path, "m", "official")
    assert run.status == "failed" and "edit_count.ipynb" in run.notes[0]
    assert compare.read_run(tmp_path, "other", "official").status == "not run yet"


def test_the_collapse_chapters_calibrated_stream_is_the_default_models_calibrated_run(tmp_path):
    model = "smollm2-135m-instruct"
    assert compare.read_run(tmp_path, model, "calibrated").status == "not run yet"
    folder = tmp_path / model / "collapse" / "calibrated" / "edit_count"
    folder.mkdir(parents=True)
    rows = [dict(case_id=c, family="official", prompt_kind="rewrite", metric="efficacy", value=1.0,
                 method="alphaedit", edits=e) for e in (100, 200) for c in (1, 2)]
    pd.DataFrame(rows).to_csv(folder / "metrics_raw-alphaedit.csv", index=False)
    streams = tmp_path / model / "collapse" / "streams.csv"
    hyper = json.dumps(dict(nullspace_mode="energy", nullspace_energy=compare.DEFAULT_ENERGY))
    pd.DataFrame([dict(stream="no-cache", kind="ablation", method="alphaedit_no_cache", hyperparameters="{}",
                       edits_planned=1000),
                  dict(stream="calibrated", kind="calibrated", method="alphaedit", hyperparameters=hyper,
                       edits_planned=2000)]).to_csv(streams, index=False)
    run = compare.read_run(tmp_path, model, "calibrated")
    assert run.folder == folder and run.label == f"{model}/collapse/calibrated"
    assert run.reached == {"alphaedit": [100, 200]} and run.status == "partial"  # 200 of the 2,000 planned
    assert not any("not verified" in n or "differs" in n for n in run.notes), run.notes
    assert compare.read_run(tmp_path, model, "official").folder == tmp_path / model / "edit_count"  # not shared
    # a stream with another energy share is flagged; one without the energy rule is not verified
    streams.write_text(streams.read_text().replace(f'{compare.DEFAULT_ENERGY}', "0.5"))
    assert any("differs" in n for n in compare.read_run(tmp_path, model, "calibrated").notes)
    streams.unlink()
    assert any("not verified" in n for n in compare.read_run(tmp_path, model, "calibrated").notes)
    # the run's own folder, once it exists, wins
    own = tmp_path / f"{model}-calibrated" / "edit_count"
    own.mkdir(parents=True)
    assert compare.read_run(tmp_path, model, "calibrated").folder == own
    assert compare.shared_stream(tmp_path, model, "calibrated") is None


# --- synthetic results folders with edit_count's and projection_check's schema ---------------------------------

# (family, prompt_kind, metric) of a tiny edit_count run, and whether the metric is 0/1
COMBOS = [("official", "rewrite", "efficacy", True), ("official", "rewrite", "magnitude", False),
          ("official", "rewrite", "strict_acc", True), ("official", "paraphrase", "generalization", True),
          ("official", "paraphrase", "magnitude", False), ("official", "paraphrase", "strict_acc", True),
          ("official", "neighborhood", "specificity", True), ("official", "neighborhood", "magnitude", False),
          ("official", "neighborhood", "strict_acc", True), ("easyedit", "rewrite", "rewrite_acc", False),
          ("easyedit", "paraphrase", "rephrase_acc", False), ("easyedit", "neighborhood", "locality", False),
          ("generation", "rewrite", "exact_match", True), ("generation", "rewrite", "contains", True),
          ("generation", "paraphrase", "exact_match", True), ("generation", "paraphrase", "contains", True),
          ("generation", "neighborhood", "exact_match", True), ("generation", "neighborhood", "contains", True)]
RAW_COLUMNS = ["case_id", "family", "prompt_kind", "metric", "value", "n_prompts", "method", "edits", "code_version",
               "evaluator_version", "run_key"]
DIAG_COLUMNS = ["method", "batch", "edits", "layer", "delta_norm", "total_norm", "relative_change", "condition",
                "drift", "residual_left", "target_steps", "target_loss", "seconds", "run_key"]
BATCH, GEN_CAP, FLUENCY_CAP, BATCH_SECONDS = 10, 5, 4, 3.0


def value(mean: float, i: int, binary: bool) -> float:
    """Record i's value: 0/1 with exactly `mean` ones per ten records, or `mean` itself."""
    return float(i % 10 < round(mean * 10)) if binary else mean


def write_edit_count(root, label, scores, milestones, planned, overrides=None):
    """results/<label>/edit_count/ as edit_count leaves it: scores = method -> edits -> measure -> mean (others
    0.5). Record i of the stream has case_id 1000 + i; every milestone scores all records edited so far (the
    eval_cap is larger), the unedited model the last milestone's."""
    out = root / label / "edit_count"
    out.mkdir(parents=True)
    run_key = f"synthetic-{label}"
    for method, by_edits in scores.items():
        rows, diag = [], []
        for e in [0, *milestones]:
            n = e or milestones[-1]
            for family, kind, metric, binary in COMBOS:
                mean = by_edits.get(e, {}).get(metric, 0.5)
                limit = GEN_CAP if family == "generation" else n
                rows += [dict(case_id=1000 + i, family=family, prompt_kind=kind, metric=metric,
                              value=value(mean, i, binary), n_prompts=1, method=method, edits=e, code_version="x",
                              evaluator_version=2, run_key=run_key) for i in range(limit)]
            if e in (0, milestones[-1]):
                rows += [dict(case_id=1000 + i, family="official", prompt_kind="generation", metric=metric, value=v,
                              n_prompts=10, method=method, edits=e, code_version="x", evaluator_version=2,
                              run_key=run_key) for i in range(FLUENCY_CAP) for metric, v in
                         (("fluency", 6.0), ("consistency", 0.3))]
        for b in range(milestones[-1] // BATCH):
            diag += [dict(method=method, batch=b, edits=(b + 1) * BATCH, layer=layer, delta_norm=1.0, total_norm=1.0,
                          relative_change=0.01 * (b + 1), condition=10.0, drift=0.001, residual_left=0.1,
                          target_steps=20 + b, target_loss=0.01 * (b + 1), seconds=BATCH_SECONDS, run_key=run_key)
                     for layer in (1, 2)]
        pd.DataFrame(rows, columns=RAW_COLUMNS).to_csv(out / f"metrics_raw-{method}.csv", index=False)
        pd.DataFrame(diag, columns=DIAG_COLUMNS).to_csv(out / f"diagnostics-{method}.csv", index=False)
    (out / "summary.json").write_text(json.dumps(dict(
        model=label, notebook="edit_count", n_edits=milestones[-1], n_edits_planned=planned,
        edits_checkpointed={m: milestones[-1] for m in scores}, batch_size=BATCH, quick=False, methods=list(scores),
        milestones=milestones, eval_cap=300, claims={})))
    params = dict(model=label, label=label, n_edits=planned, milestones=milestones, methods=list(scores))
    if overrides:
        params["overrides"] = overrides
    (out / "provenance.json").write_text(json.dumps(dict(
        notebook="edit_count", status="completed", git_commit="0" * 40, git_dirty=False, wall_seconds=60.0,
        parameters=params, versions=dict(torch="2.13.0"), machine=dict(cpu_count=2))))


def write_projection(root, label, kept, c1="reproduced"):
    out = root / label / "projection_check"
    out.mkdir(parents=True)
    pd.DataFrame([dict(layer=layer, d_ff=64, n_kept=round(64 * kept), kept_share=kept, energy_kept=kept / 2,
                       heldout_keys=100, ratio_heldout_mean=0.5, ratio_heldout_p99=0.8, ratio_edit_keys_mean=0.7,
                       ratio_random_mean=kept ** 0.5) for layer in (1, 2)]).to_csv(out / "projection.csv", index=False)
    pd.DataFrame([dict(layer=layer, threshold=t, kept_share=min(1.0, kept * t / 0.02), energy_kept=0.1,
                       ratio_heldout_mean=0.3) for layer in (1, 2) for t in (0.002, 0.02, 0.2)]).to_csv(
        out / "threshold_sweep.csv", index=False)
    (out / "summary.json").write_text(json.dumps(dict(
        model=label, notebook="projection_check", n_edits=4, threshold=0.02, claims=dict(
            C1=dict(verdict=c1, evidence="synthetic"), C5=dict(verdict="reproduced", evidence="synthetic")))))


def flat(mean_by_edits: dict[int, float], measures=("efficacy", "rewrite_acc")) -> dict:
    return {e: {m: v for m in measures} for e, v in mean_by_edits.items()}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Four models: tiny-llama (LLaMA; both P rules, 40 edits), tiny-qwen-s and tiny-qwen-l (Qwen, the scale pair:
    20 and 30 edits; the smaller drops, the larger holds), tiny-gemma (not run). Common milestones: 10, 20."""
    root = tmp_path_factory.mktemp("results")
    write_edit_count(root, "tiny-llama", dict(alphaedit=flat({0: 0.0, 10: 1.0, 20: 1.0, 40: 1.0}),
                                              memit=flat({0: 0.0, 10: 0.8, 20: 0.8, 40: 0.6})), [10, 20, 40], 40)
    write_edit_count(root, "tiny-llama-calibrated", dict(alphaedit=flat({0: 0.0, 10: 0.9, 20: 0.9, 40: 0.9})),
                     [10, 20, 40], 40, overrides=dict(nullspace_mode="energy", nullspace_energy=0.1))
    write_edit_count(root, "tiny-qwen-s", dict(alphaedit=flat({0: 0.0, 10: 1.0, 20: 0.5}),
                                               memit=flat({0: 0.0, 10: 0.7, 20: 0.4})), [10, 20], 40)
    write_edit_count(root, "tiny-qwen-l", dict(alphaedit=flat({0: 0.0, 10: 1.0, 20: 1.0, 30: 1.0}),
                                               memit=flat({0: 0.0, 10: 0.7, 20: 0.6, 30: 0.5})), [10, 20, 30], 30)
    # tiny-qwen-l's run with an earlier preset (AlphaEdit only, two milestones): the preset's share, paired
    write_edit_count(root, "tiny-qwen-l-old", dict(alphaedit=flat({0: 0.0, 10: 0.6, 20: 0.7})), [10, 20], 40)
    (root / "bench").mkdir()
    lambda_check("tiny-qwen-l").to_csv(root / "bench" / "memit_lambda-tiny-qwen-l.csv", index=False)
    write_projection(root, "tiny-llama", kept=0.8)
    write_projection(root, "tiny-qwen-s", kept=0.3)
    _operating_points(root, "tiny-qwen-s-c3", "tiny-qwen-s", dict(verdict="not reproduced", evidence="synthetic"),
                      [dict(comparison="C3: default − migrated", measure="locality", diff=-0.25, ci_low=-0.3,
                            ci_high=-0.2)])
    return root


MODELS = ["tiny-llama", "tiny-gemma", "tiny-qwen-s", "tiny-qwen-l"]
FAMILIES = {"tiny-llama": "LLaMA", "tiny-gemma": "Gemma", "tiny-qwen-s": "Qwen", "tiny-qwen-l": "Qwen"}


def test_model_compare_chapter(results):
    from alphaedit_core.study import ROOT, run_notebook

    pytest.importorskip("papermill")
    out = results / "across-models" / "model_compare"
    arms = {"tiny-qwen-l": dict(label="tiny-qwen-l-old", setting="old preset")}
    run_notebook("model_compare", dict(models=MODELS, families=FAMILIES, scale_pair=["tiny-qwen-s", "tiny-qwen-l"],
                                       results_dir=str(results), n_boot=500, preset_arms=arms,
                                       default_model="tiny-llama", lambda_checks=str(results / "bench")), out,
                 ROOT / "notebooks", timeout=300)
    summary = json.loads((out / "summary.json").read_text())
    # the executed notebook already carries the book's presentation (run_notebook applies it)
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_cell_metadata.py"), "--check",
                            str(out / "model_compare.ipynb")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    # the milestones every run reached (40 and 30 are one model's only), on the same records
    assert summary["common_milestones"] == [10, 20] and summary["n_edits"] == 20
    common = pd.read_csv(out / "common_milestones.csv")
    assert list(common.edits) == [10, 20] and common.same_records.all() and list(common.records) == [10, 20]
    # a model without results is listed as not run, never dropped
    runs = pd.read_csv(out / "runs.csv")
    gemma = runs[runs.model == "tiny-gemma"]
    assert len(gemma) == 2 and set(gemma.status) == {"not run yet"}
    assert {"tiny-gemma (official P)", "tiny-gemma (calibrated P)"} <= set(summary["not_run_yet"])
    status = runs.set_index(["model", "rule"]).status
    assert status["tiny-qwen-s", "official"] == "partial" and status["tiny-qwen-l", "official"] == "complete"
    assert status["tiny-llama", "calibrated"] == "complete"
    assert "tiny-gemma" in summary["claims"]["C1"]["evidence"]
    # the scores at the common milestones, with intervals, per model, rule and method
    scores = pd.read_csv(out / "scores.csv")
    at = scores.set_index(["model", "rule", "method", "edits", "measure"])["mean"]
    assert at["tiny-qwen-s", "official", "alphaedit", 20, "efficacy"] == 0.5
    assert at["tiny-llama", "calibrated", "alphaedit", 20, "efficacy"] == pytest.approx(0.9)
    assert not ((scores.rule == "calibrated") & (scores.method == "memit")).any()
    # AlphaEdit − MEMIT per model and rule on the same records; the calibrated AlphaEdit against the official MEMIT
    vs = pd.read_csv(out / "alphaedit_minus_memit.csv").set_index(["model", "rule", "edits", "measure"])
    assert vs.loc[("tiny-llama", "calibrated", 20, "efficacy"), "diff"] == pytest.approx(0.1)
    assert vs.loc[("tiny-qwen-s", "official", 20, "efficacy"), "diff"] == pytest.approx(0.1)
    assert (vs.n_only_a == 0).all() and (vs.n_only_b == 0).all()
    # AlphaEdit − MEMIT at every milestone both methods of a model reached, not only at the models' common ones
    by_model = vs.reset_index().groupby(["model", "rule"]).edits.agg(lambda e: sorted(set(e)))
    assert by_model["tiny-llama", "official"] == by_model["tiny-llama", "calibrated"] == [10, 20, 40]
    assert by_model["tiny-qwen-l", "official"] == [10, 20, 30] and by_model["tiny-qwen-s", "official"] == [10, 20]
    assert summary["official_common_milestones"] == [10, 20]
    # the calibrated P's effect on a model: one row per milestone both of its P rules reached and measure (not one
    # set per P rule's verdict)
    rule_rows = pd.read_csv(out / "cross_model_differences.csv").query("claim == 'C10 (P rule)'")
    assert not rule_rows.duplicated(["a", "edits", "measure"]).any() and set(rule_rows.a) == {"tiny-llama"}
    assert sorted(set(rule_rows.edits)) == [10, 20, 40]
    # verdicts: the larger Qwen holds where the smaller drops (C8); the families differ and one threshold keeps 80%
    # of the directions on LLaMA, 30% on Qwen (C10); the calibrated rule has not run on the Qwen models
    claims = summary["claims"]
    assert claims["C8"]["verdict"] == "reproduced"
    assert "not LLaMA3-8B vs LLaMA2-7B" in claims["C8"]["evidence"]
    assert "Not tested under the calibrated P rule" in claims["C8"]["evidence"]
    assert claims["C10"]["verdict"] == "reproduced" and "80% (LLaMA)" in claims["C10"]["evidence"]
    assert summary["family_representatives"] == {"LLaMA": "tiny-llama", "Qwen": "tiny-qwen-s"}
    assert claims["C1"]["verdict"] == "reproduced"
    # P per model, and what each run cost (3 s per batch of 10 edits in the diagnostics)
    projection = pd.read_csv(out / "projection_by_model.csv").set_index(["model", "rule"])
    assert projection.loc[("tiny-qwen-s", "official"), "kept_share"] == pytest.approx(0.3)
    assert projection.loc[("tiny-gemma", "official"), "status"] == "not run yet"
    # how strongly each run was asked to edit: the targets' final loss and Adam steps, means over every batch up to
    # the milestone (batch b: loss 0.01 (b + 1), 20 + b steps; tiny-llama ran 4 batches, the milestones are 10, 20)
    weights = pd.read_csv(out / "weights_by_model.csv").set_index(["model", "rule", "method", "edits"])
    assert weights.loc[("tiny-llama", "official", "alphaedit", 10), "target_loss"] == pytest.approx(0.01)
    assert weights.loc[("tiny-llama", "official", "alphaedit", 20), "target_loss"] == pytest.approx(0.015)
    assert weights.loc[("tiny-llama", "official", "memit", 20), "target_steps"] == pytest.approx(20.5)
    cost = pd.read_csv(out / "cost.csv").set_index(["model", "rule"])
    assert cost.loc[("tiny-llama", "official"), "alphaedit_edit_hours"] == pytest.approx(4 * BATCH_SECONDS / 3600)
    assert cost.loc[("tiny-qwen-l", "official"), "memit_s_per_edit"] == pytest.approx(BATCH_SECONDS / BATCH)
    for fig in ("models_vs_edits.png", "alphaedit_minus_memit.png", "projector_by_model.png"):
        assert (out / fig).stat().st_size > 1000
    # the preset's share: the C3 run found for the model its provenance names, and none for the others
    presets = pd.read_csv(out / "preset_checks.csv")
    assert list(zip(presets.model, presets.run, presets.measure)) == [("tiny-qwen-s", "tiny-qwen-s-c3", "locality")]
    assert presets["diff"].tolist() == [-0.25]
    assert pd.read_csv(out / "plans.csv").command.str.contains("alphaedit_core.compare run --model tiny-gemma").any()
    # the preset arm: current − earlier preset on the same records, AlphaEdit, at the milestones both reached
    arm = pd.read_csv(out / "preset_arms.csv").set_index(["model", "edits", "measure"])
    assert set(arm.index.get_level_values("edits")) == {10, 20} and set(arm.index.get_level_values("model")) == {
        "tiny-qwen-l"}
    assert arm.loc[("tiny-qwen-l", 10, "efficacy"), "diff"] == pytest.approx(0.4)  # 1.0 − 0.6, ten records
    assert arm.loc[("tiny-qwen-l", 20, "efficacy"), ["diff", "n"]].tolist() == pytest.approx([0.3, 20])
    targets = pd.read_csv(out / "preset_arm_targets.csv").set_index(["arm", "edits"])
    assert targets.loc[("earlier", 20), "target_loss"] == pytest.approx(0.015)  # batches 0 and 1: 0.01, 0.02
    # AlphaEdit − MEMIT efficacy next to MEMIT's share of AlphaEdit's update (the same 0.02 at 20 edits here):
    # tiny-qwen-l's gap (1.0 − 0.6) is 20 points above the reference tiny-llama's (1.0 − 0.8), and is named
    gaps = pd.read_csv(out / "method_gaps.csv").set_index("model")
    assert set(gaps.index) == {"tiny-llama", "tiny-qwen-s", "tiny-qwen-l"} and set(gaps.edits) == {20}
    assert gaps.loc["tiny-qwen-l", "diff"] == pytest.approx(0.4) and gaps.change_ratio.tolist() == pytest.approx(
        [1.0, 1.0, 1.0])
    text = (out / "model_compare.ipynb").read_text()
    assert "On tiny-qwen-l MEMIT falls 20 points further behind" in text and "On tiny-qwen-s" not in text
    # the λ check found for tiny-qwen-l, read at matched update size, with its figure
    lam = pd.read_csv(out / "lambda_checks.csv")
    assert lam.model.tolist() == ["tiny-qwen-l"] and lam.matched_lambda.tolist() == [5000.0]
    assert lam.efficacy_preset.tolist() == [0.46] and (out / "memit_lambda.png").stat().st_size > 1000
    assert "On tiny-qwen-l's first 50 requests" in text
    # Reading C10: LLaMA − Qwen is higher in efficacy and no different in preservation: a ranking
    assert "tiny-llama − tiny-qwen-s at 20 edits: not a trade-off" in text


def test_instruct_vs_base_chapter(results):
    from alphaedit_core.study import ROOT, run_notebook

    pytest.importorskip("papermill")
    params = dict(base="tiny-qwen-s", instruct=["tiny-llama", "tiny-gemma"], results_dir=str(results), n_boot=500)
    out = results / "across-models" / "instruct_vs_base"
    run_notebook("instruct_vs_base", params, out, ROOT / "notebooks", timeout=300)
    summary = json.loads((out / "summary.json").read_text())
    c9 = summary["claims"]["C9"]
    # two different models: the comparison is shown, labelled confounded, and decides nothing
    assert summary["same_model"] == {"tiny-llama": False, "tiny-gemma": False}
    assert c9["verdict"] == "not testable here" and "Confounded by model identity" in c9["evidence"]
    assert "tiny-gemma (official P)" in summary["not_run_yet"]
    paired = pd.read_csv(out / "instruct_minus_base.csv").set_index(["rule", "instruct", "measure"])
    assert paired.loc[("official", "tiny-llama", "efficacy"), "diff"] == pytest.approx(0.5)
    assert paired.loc[("official", "tiny-llama", "efficacy"), "edits"] == 20
    # declared a same-model pair, the same numbers decide: the instruct model is better in both edit measures
    run_notebook("instruct_vs_base", dict(params, same_model=True, label="pair"), results / "pair" / "ivb",
                 ROOT / "notebooks", timeout=300)
    pair = json.loads((results / "pair" / "instruct_vs_base" / "summary.json").read_text())
    assert pair["claims"]["C9"]["verdict"] == "reproduced"


def test_a_sitting_can_stop_at_a_milestone_short_of_the_guide_and_the_run_stays_partial(tmp_path):
    staged = plan("gemma3-270m", "official", tmp_path, stop_after_edits=500)["edit_count"]
    # the same stream as the whole run (records, milestones), told to stop at 500: continuing later is a resume
    whole = plan("gemma3-270m", "official", tmp_path)["edit_count"]
    assert staged == dict(whole, stop_after_edits=500) and whole["milestones"] == [100, 200, 500, 1000]
    for bad in (300, 2000):  # between milestones: edits never scored; past the guide: no milestone there
        with pytest.raises(ValueError, match="one of the milestones"):
            plan("gemma3-270m", "official", tmp_path, stop_after_edits=bad)
    # a run rendered at 500 edits of Gemma's 1,000 is partial, whatever its sitting was told
    folder = tmp_path / "gemma3-270m" / "edit_count"
    folder.mkdir(parents=True)
    rows = [dict(case_id=c, family="official", prompt_kind="rewrite", metric="efficacy", value=1.0,
                 method="alphaedit", edits=e) for e in (0, 100, 200, 500) for c in (1, 2)]
    pd.DataFrame(rows).to_csv(folder / "metrics_raw-alphaedit.csv", index=False)
    (folder / "provenance.json").write_text(json.dumps(dict(status="completed", parameters=staged)))
    (folder / "summary.json").write_text(json.dumps(dict(n_edits_planned=1000)))
    run = compare.read_run(tmp_path, "gemma3-270m", "official")
    assert run.reached == {"alphaedit": [100, 200, 500]} and run.status == "partial"
    # Qwen-1.5B draws 400 records and stops at its guide's 200: complete there
    folder = tmp_path / "qwen2.5-coder-1.5b-instruct" / "edit_count"
    folder.mkdir(parents=True)
    small = plan("qwen2.5-coder-1.5b-instruct", "official", tmp_path)["edit_count"]
    rows = [dict(r, edits=e) for r in rows[:2] for e in (0, 100, 200)]
    pd.DataFrame(rows).to_csv(folder / "metrics_raw-alphaedit.csv", index=False)
    (folder / "provenance.json").write_text(json.dumps(dict(status="completed", parameters=small)))
    (folder / "summary.json").write_text(json.dumps(dict(n_edits_planned=400)))
    assert compare.read_run(tmp_path, "qwen2.5-coder-1.5b-instruct", "official").status == "complete"


def test_read_projection_reads_the_table_the_rule_and_the_checks_wall_time(tmp_path):
    """A missing folder is 'not run yet'; a calibrated table built at the absolute threshold is not valid; a complete
    one carries its table and the wall hours of its provenance (7,200 s → 2 h), NaN when provenance has none."""
    assert compare.read_projection(tmp_path, "m", "official")["status"] == "not run yet"
    table = pd.DataFrame([dict(layer=3, d_ff=8, n_kept=4, kept_share=0.5, energy_kept=0.1, ratio_heldout_mean=0.3,
                               ratio_random_mean=0.7)])
    for label, mode in (("m", "threshold"), ("m-calibrated", "threshold")):
        folder = tmp_path / label / "projection_check"
        folder.mkdir(parents=True)
        table.to_csv(folder / "projection.csv", index=False)
        (folder / "summary.json").write_text(json.dumps(dict(nullspace_mode=mode)))
    (tmp_path / "m" / "projection_check" / "provenance.json").write_text(
        json.dumps(dict(status="completed", wall_seconds=7200.0)))
    official = compare.read_projection(tmp_path, "m", "official")
    assert official["status"] == "complete" and official["wall_hours"] == 2.0
    assert official["table"].kept_share.tolist() == [0.5]
    assert compare.read_projection(tmp_path, "m", "calibrated")["status"] == "not valid"
    (tmp_path / "m" / "projection_check" / "provenance.json").write_text(json.dumps(dict(status="completed")))
    assert math.isnan(compare.read_projection(tmp_path, "m", "official")["wall_hours"])
