"""notebooks/collapse: the decision rules of N1 and of C7's why on hand-made numbers, the table helpers, and the
notebook end to end on a tiny model (two stabilised streams beside the plain ones, then a second execution that
resumes instead of re-editing). The end-to-end test takes about 3 minutes of CPU (seven kernel starts)."""
import json
import math

import pandas as pd
import pytest
from scipy import stats


from alphaedit_core import mechanism
from alphaedit_core.study import ROOT, run_notebook, run_streams_in_lanes
from alphaedit_core.verdicts import c7_why, n1_norm_growth, norm_mechanism, rank_correlation

EDITS = (100, 500, 1000, 1500, 2000)


# ------------------------------------------------------------------------------------------- decision rules
def world(**streams: tuple[list[float], list[float]]) -> tuple[dict, dict]:
    """(scores, norms) from {stream: (scores at EDITS, norms at EDITS)}; both families get the same scores."""
    series = {s: dict(zip(EDITS, sc)) for s, (sc, _) in streams.items()}
    norms = {s: dict(zip(EDITS, nm)) for s, (_, nm) in streams.items()}
    return {"efficacy": series, "rewrite_acc": series}, norms


PLAIN = ([0.95, 0.9, 0.8, 0.6, 0.4], [0.4, 0.9, 1.3, 1.55, 1.7])  # drop at 1000, collapse at 2000, norm ×4.25
BOUNDED_AND_HOLDS = ([0.95, 0.94, 0.93, 0.92, 0.9], [0.3, 0.4, 0.5, 0.55, 0.6])
MIDDLE = ([0.95, 0.9, 0.85, 0.75, 0.6], [0.35, 0.7, 1.0, 1.2, 1.3])
MEMIT = ([0.86, 0.8, 0.7, 0.6, 0.5], [0.3, 0.5, 0.7, 0.8, 0.83])


def test_n1_reproduced_when_norm_grows_tracks_and_bounding_postpones():
    scores, norms = world(alphaedit=PLAIN, norm=BOUNDED_AND_HOLDS, mpes=MIDDLE, memit=MEMIT)
    n1 = n1_norm_growth(scores, norms, 2000, ["mpes", "norm"])
    assert n1["verdict"] == "reproduced"
    assert "postpone the onset: norm." in n1["evidence"] and "lower bound" in n1["evidence"]
    assert "context (not in the rule): memit" in n1["evidence"]  # quoted, never pooled
    assert "10,000" in n1["quoted"] and "4×" in n1["quoted"]
    mech = norm_mechanism(scores, norms, 2000, ["mpes", "norm"])
    assert mech["rho"] == -1.0 and mech["tracks"] and mech["grows"]
    assert mech["onset"] == {"efficacy": ("collapse", 2000), "rewrite_acc": ("collapse", 2000)}
    assert mech["per_variant"]["norm"]["postponed"] and mech["per_variant"]["norm"]["onsets"]["efficacy"] is None
    assert not mech["per_variant"]["mpes"]["bounded"]  # 1.3 / 1.7 > 0.75: not a bounded norm
    assert c7_why(scores, norms, 2000, ["mpes", "norm"])["answer"] == "yes"


def test_memit_never_enters_the_rank_correlation():
    """MEMIT scoring low at a low norm would break the ordering; it is context, not a stream of the rule."""
    scores, norms = world(alphaedit=PLAIN, norm=BOUNDED_AND_HOLDS, mpes=MIDDLE,
                          memit=([0.5, 0.3, 0.2, 0.1, 0.05], [0.1, 0.1, 0.1, 0.1, 0.1]))
    assert norm_mechanism(scores, norms, 2000, ["mpes", "norm"])["rho"] == -1.0


def test_a_stabiliser_that_edits_worse_from_the_start_is_not_credited():
    """Low norm and no drop, but only because it hardly edits: stability bought by editing less."""
    weak = ([0.6, 0.6, 0.6, 0.6, 0.6], [0.1, 0.15, 0.2, 0.2, 0.2])
    scores, norms = world(alphaedit=PLAIN, weak=weak)
    mech = norm_mechanism(scores, norms, 2000, ["weak"])
    p = mech["per_variant"]["weak"]
    assert p["bounded"] and not p["edits_as_well"] and p["later"] and not p["postponed"]
    assert mech["tracks"] is None  # two AlphaEdit streams: no rank correlation
    assert n1_norm_growth(scores, norms, 2000, ["weak"])["verdict"] == "not reproduced"
    assert "edits worse from the start" in n1_norm_growth(scores, norms, 2000, ["weak"])["evidence"]


def test_tracking_reads_the_loss_since_the_first_milestone_not_the_score():
    """A stream that edits less well from the start but never loses anything, at the lowest norm, agrees with
    norm growth driving the collapse (ranked by its score alone it would look like the opposite)."""
    weak = ([0.6, 0.6, 0.6, 0.6, 0.6], [0.1, 0.15, 0.2, 0.2, 0.2])
    scores, norms = world(alphaedit=PLAIN, mpes=MIDDLE, weak=weak)
    mech = norm_mechanism(scores, norms, 2000, ["mpes", "weak"])
    assert mech["rho"] == -1.0 and mech["tracks"]
    assert rank_correlation([1.3, 1.0, 0.2], [0.8, 0.85, 0.6]) == 0.5  # the scores at 1,000 edits


def test_tracking_without_postponement_is_partly_reproduced():
    """Streams with less norm score higher, but the bounded one still collapses as early as plain."""
    early = ([0.95, 0.93, 0.9, 0.85, 0.45], [0.3, 0.45, 0.5, 0.55, 0.6])  # collapses at 2,000 like plain
    mid = ([0.95, 0.9, 0.85, 0.7, 0.42], [0.35, 0.7, 1.0, 1.2, 1.3])
    scores, norms = world(alphaedit=PLAIN, early=early, mpes=mid)
    mech = norm_mechanism(scores, norms, 2000, ["early", "mpes"])
    assert mech["tracks"] and not mech["per_variant"]["early"]["postponed"]
    assert mech["per_variant"]["early"]["onsets"] == {"efficacy": 2000, "rewrite_acc": 2000}
    assert n1_norm_growth(scores, norms, 2000, ["early", "mpes"])["verdict"] == "partly reproduced"
    assert c7_why(scores, norms, 2000, ["early", "mpes"])["answer"] == "partly"


def test_postponement_without_tracking_is_partly_reproduced_and_an_earlier_onset_cancels_it():
    # at equal edits the larger-norm stream scores higher (ρ > 0), yet the bounded stream postpones the collapse
    big = ([0.95] * 5, [0.5, 1.2, 2.0, 2.5, 3.0])
    scores, norms = world(alphaedit=PLAIN, norm=BOUNDED_AND_HOLDS, big=big)
    mech = norm_mechanism(scores, norms, 2000, ["norm", "big"])
    assert mech["tracks"] is False and mech["per_variant"]["norm"]["postponed"]
    assert n1_norm_growth(scores, norms, 2000, ["norm", "big"])["verdict"] == "partly reproduced"
    # a bounded stream whose efficacy collapses earlier than plain's is not credited, even if rewrite_acc holds
    scores["efficacy"] = {**scores["efficacy"], "norm": dict(zip(EDITS, [0.95, 0.9, 0.4, 0.4, 0.4]))}
    p = norm_mechanism(scores, norms, 2000, ["norm", "big"])["per_variant"]["norm"]
    assert p["earlier"] == ["efficacy"] and p["later"] == ["rewrite_acc"] and not p["postponed"]


def test_neither_is_not_reproduced():
    same = ([0.95, 0.9, 0.8, 0.6, 0.4], [0.3, 0.4, 0.5, 0.55, 0.6])  # bounded, collapses exactly like plain
    scores, norms = world(alphaedit=PLAIN, same=same, mid=([0.95, 0.9, 0.8, 0.6, 0.4], [0.35, 0.7, 1.0, 1.2, 1.3]))
    mech = norm_mechanism(scores, norms, 2000, ["same", "mid"])
    assert math.isnan(mech["rho"]) and mech["tracks"] is None  # equal scores: no ordering to correlate
    assert n1_norm_growth(scores, norms, 2000, ["same", "mid"])["verdict"] == "not reproduced"
    assert c7_why(scores, norms, 2000, ["same", "mid"])["answer"] == "no"


def test_not_testable_until_the_streams_reach_the_milestones_the_rule_needs():
    scores, norms = world(alphaedit=PLAIN, norm=BOUNDED_AND_HOLDS)
    short = {f: {"alphaedit": {2: 1.0, 4: 0.2}, "norm": {2: 1.0, 4: 1.0}} for f in scores}
    short_norms = {"alphaedit": {2: 0.1, 4: 0.5}, "norm": {2: 0.1, 4: 0.1}}
    n1 = n1_norm_growth(short, short_norms, 4, ["norm"])
    assert n1["verdict"] == "not testable here" and "the rule needs 1,000" in n1["evidence"]
    assert c7_why(short, short_norms, 4, ["norm"])["answer"] == "not testable here"
    # the plain stream is complete but the stabilised one stopped at 1,500 of 2,000 planned edits
    partial = {f: {**s, "norm": {e: v for e, v in s["norm"].items() if e <= 1500}} for f, s in scores.items()}
    n1 = n1_norm_growth(partial, norms, 2000, ["norm"])
    assert n1["verdict"] == "not testable here" and "(norm 1,500)" in n1["evidence"]
    # no stabilised stream evaluated at all: the evidence says so instead of listing nothing
    none = n1_norm_growth(scores, norms, 2000, [])
    assert none["verdict"] == "not testable here" and none["evidence"].endswith("none has been evaluated yet.")
    # a plain stream that never drops has no collapse to explain
    flat = {f: {**s, "alphaedit": dict(zip(EDITS, [0.95] * 5))} for f, s in scores.items()}
    assert "no collapse to explain" in n1_norm_growth(flat, norms, 2000, ["norm"])["evidence"]


def test_rank_correlation_matches_scipy_and_handles_ties_and_short_inputs():
    x, y = [0.3, 1.2, 0.7, 0.7, 2.0, 0.1], [0.9, 0.2, 0.5, 0.6, 0.1, 0.9]
    assert rank_correlation(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert rank_correlation([1, 2, 3], [3, 2, 1]) == -1.0
    assert math.isnan(rank_correlation([1, 2], [2, 1])) and math.isnan(rank_correlation([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError, match="pairs"):
        rank_correlation([1, 2, 3], [1, 2])


# ------------------------------------------------------------------------------------------- table helpers
def test_run_keys_tell_comparable_streams_apart():
    plain = "0123456789abcdef-n2000-b100-s0-aaaaaaaaaa-dddddddddd"
    assert mechanism.stream_mismatch("0123456789abcdef-n2000-b100-s0-bbbbbbbbbb-dddddddddd", plain) is None
    assert mechanism.stream_mismatch("0123456789abcdef-n2000-b50-s0-bbbbbbbbbb-eeeeeeeeee", plain) == \
        "batch_size 50 vs 100; data eeeeeeeeee vs dddddddddd"
    assert mechanism.run_key_parts("0123456789abcdef-n4-b2-s-1-aa-bb")["seed"] == "-1"
    with pytest.raises(ValueError, match="not a run key"):
        mechanism.run_key_parts("smollm2-n4")


def test_tables_without_run_keys_are_compared_by_their_evaluated_case_ids():
    """Plain tables written before run keys existed: a variant is comparable only if every common milestone was
    scored on the same records (the committed plain stream of the old data shares 97 of its first 100)."""
    plain = pd.DataFrame(dict(case_id=[1, 2, 1, 2, 3, 4, 1], edits=[2, 2, 4, 4, 4, 4, 0], value=1.0))
    assert mechanism.run_key_of(plain, "plain") is None
    assert mechanism.sample_mismatch(plain[plain.edits <= 2], plain) is None  # a variant still at 2 edits
    other = plain.assign(case_id=[1, 2, 1, 2, 3, 9, 1])
    assert mechanism.sample_mismatch(other, plain) == "4 edits: 1 of 4 case ids not in the reference's sample"
    with pytest.raises(ValueError, match="rows of 2 runs"):
        mechanism.run_key_of(plain.assign(run_key=["a"] * 6 + ["b"]), "mixed")


def test_shared_groups_keep_only_what_both_streams_scored():
    raw = pd.DataFrame(dict(stream=["a", "b", "a", "b", "a"], edits=[2, 2, 4, 4, 4], metric=["e", "e", "e", "e", "f"],
                            case_id=[1, 1, 1, 1, 1], value=[1.0, 0.0, 1.0, 1.0, 0.5]))
    kept = mechanism.shared_groups(raw, "a", "b", ["edits", "metric"])
    assert sorted(zip(kept.edits, kept.metric, kept.stream)) == [(2, "e", "a"), (2, "e", "b"), (4, "e", "a"),
                                                                 (4, "e", "b")]


def test_cost_table_against_the_reference():
    batches = pd.DataFrame(dict(stream=["alphaedit"] * 2 + ["mpes"] * 2, batch=[0, 1, 0, 1], edits=[100, 200] * 2,
                                seconds=[600.0, 800.0, 300.0, 400.0], target_steps=[20.0, 22.0, 10.0, 12.0],
                                seconds_targets=[500.0, 700.0, math.nan, math.nan]))
    cost = mechanism.cost_table(batches).set_index("stream")
    assert cost.loc["alphaedit", "seconds_per_edit"] == 7.0 and cost.loc["mpes", "seconds_per_batch"] == 350.0
    assert cost.loc["mpes", "steps_vs_reference"] == pytest.approx(11 / 21 - 1)
    assert cost.loc["mpes", "seconds_vs_reference"] == pytest.approx(-0.5)
    assert cost.loc["alphaedit", "hours"] == pytest.approx(1400 / 3600)


# ------------------------------------------------------------------------------------------- end to end
pytest.importorskip("papermill")


def test_collapse_notebook_runs_the_variants_compares_them_and_resumes(tiny_setup):
    tmp_path, folder = tiny_setup
    results = tmp_path / "results"
    stream = dict(hparams=str(tmp_path / "hparams.json"), n_edits=4, batch_size=2, milestones=[2, 4], eval_cap=4,
                  gen_cap=2, fluency_cap=2, drift_tokens=50, capability_corpora=[str(tmp_path / "corpus.txt")],
                  capability_tokens=60)
    # the plain AlphaEdit and MEMIT streams, as the edit-count chapter makes them
    run_notebook("edit_count", dict(stream, model=str(folder), label="tiny", results_dir=str(results)),
                 results / "tiny" / "edit_count", ROOT / "notebooks", timeout=600)
    variants = {"mpes": {"target_stop": "most_probable", "most_probable_count": 2}, "norm": {"norm_constraint": 20.0}}
    ablations = {"no-cache": {"method": "alphaedit_no_cache", "stop_after_edits": 2}}  # stops after one batch
    rule = {"nullspace_mode": "energy", "nullspace_energy": 0.05}  # as the operating-points chapter writes it
    (tmp_path / "calibrated.json").write_text(json.dumps({"rule": rule}))
    params = dict(model=str(folder), label="tiny", results_dir=str(results), variants=variants, stream=stream,
                  ablations=ablations, calibrated=str(tmp_path / "calibrated.json"), run_streams=True,
                  report_at=[2, 4], value_norm_probes=3, value_norm_streams=["alphaedit", "norm", "anchor"])
    others = {**variants, **ablations, "calibrated": rule}  # every stream besides plain AlphaEdit and MEMIT
    methods = {"mpes": "alphaedit", "norm": "alphaedit", "no-cache": "alphaedit_no_cache", "calibrated": "alphaedit"}
    out = results / "tiny" / "collapse"
    # the streams edited in two parallel lanes (as on two cores), then the chapter renders what they wrote
    lanes = [["mpes", "no-cache"], ["norm", "calibrated"]]
    with pytest.raises(ValueError, match="more than one lane"):
        run_streams_in_lanes(params, ROOT / "notebooks", [["mpes"], ["norm", "mpes"]])
    with pytest.raises(ValueError, match="tag"):
        run_streams_in_lanes(params, ROOT / "notebooks", [["mpes"]], tag="../x")
    run_streams_in_lanes(params, ROOT / "notebooks", lanes)
    partial = tmp_path / "cache" / "runs" / "partial"
    for i, lane in enumerate(lanes):  # each lane edited its own streams and no other
        log = (partial / f"collapse-lane{i}.ipynb").read_text()
        assert all(f"{v}: edit_count executed" in log for v in lane)
        assert not any(f"{v}: edit_count executed" in log for v in others if v not in lane)
    run_notebook("collapse", dict(params, run_streams=False), out, ROOT / "notebooks", timeout=900)

    summary = json.loads((out / "summary.json").read_text())
    # 4 edits cannot test a rule about 1,000 and more
    assert summary["claims"]["N1"]["verdict"] == "not testable here"
    # NAS's premise check: the same three probes, never edited, on the unedited model and each stream's snapshots
    # (plain and norm; this run has no anchor stream, and the chapter says so)
    from alphaedit_core.data import load_offline_counterfact
    vn = pd.read_csv(out / "value_norms.csv")
    assert sorted(set(vn.stream)) == ["alphaedit", "norm"] and len(vn) == 2 * 3 * 3
    assert sorted(set(vn.edits)) == [0, 2, 4] and vn.groupby(["stream", "edits"]).case_id.apply(tuple).nunique() == 1
    assert not set(vn.case_id) & {r["case_id"] for r in load_offline_counterfact(n=4, seed=0)}
    plain, norm = (vn[vn.stream == s].set_index(["edits", "case_id"]) for s in ("alphaedit", "norm"))
    assert (plain.loc[0].v0_norm == norm.loc[0].v0_norm).all()  # the unedited model is the same for both
    assert not (plain.loc[4].v0_norm == norm.loc[4].v0_norm).all()  # their edited weights are not
    vs = pd.read_csv(out / "value_norms_summary.csv")
    assert (vs[vs.edits == 0].value_ratio == 1.0).all()
    assert "Not measured: anchor" in (out / "collapse.ipynb").read_text()
    assert summary["why"]["C7"]["answer"] == "not testable here"
    assert summary["edits_evaluated"] == {**{s: 4 for s in ("alphaedit", "memit", *others)}, "no-cache": 2}
    assert summary["not_run"] == []
    # the ablation's stop is a stream setting, not a hyperparameter: same run key, planned edits in streams.csv
    planned = pd.read_csv(out / "streams.csv").set_index("stream")
    assert planned.loc["no-cache", "edits_planned"] == 2 and planned.loc["no-cache", "edits_checkpointed"] == 2
    assert planned.loc["mpes", "edits_planned"] == 4 and planned.loc["mpes", "edits_checkpointed"] == 4
    assert summary["variants"] == variants and summary["ablations"] == ablations  # N1 and C7 read the variants only
    assert summary["calibrated"]["rule"] == rule and summary["calibrated"]["ran"]
    # each stream is its own edit_count run: own run key (hparams digest) or own method, same model, edits, data
    keys = summary["run_keys"]
    assert keys["alphaedit"] == keys["memit"] == keys["no-cache"]  # the ablation differs by method, not hparams
    assert len({keys["alphaedit"], keys["mpes"], keys["norm"], keys["calibrated"]}) == 4
    for v in others:
        assert mechanism.stream_mismatch(keys[v], keys["alphaedit"]) is None
        assert (tmp_path / "cache" / "runs" / "edit_count" / keys[v] / methods[v] / "LATEST").exists()
        assert (out / v / "edit_count" / "edit_count.ipynb").exists()
        used = json.loads((out / v / "edit_count" / "provenance.json").read_text())["parameters"]
        assert used["overrides"] == {k: x for k, x in others[v].items() if k not in ("method", "stop_after_edits")}
        assert used["methods"] == [methods[v]] and used.get("stop_after_edits") == others[v].get("stop_after_edits")
    # paired rows pair the same records: every variant's sample is plain AlphaEdit's at every milestone
    raw = pd.read_csv(out / "metrics_raw.csv")
    cases = {s: mechanism.evaluated_cases(g) for s, g in raw.groupby("stream")}
    assert all(cases[v] == cases["alphaedit"] for v in others if v != "no-cache") and set(cases["alphaedit"]) == {2, 4}
    assert cases["no-cache"] == {2: cases["alphaedit"][2]}
    paired = pd.read_csv(out / "paired_vs_plain.csv")
    assert set(paired.stream) == set(others) and set(paired.edits) == {2, 4}
    # the matched-norm pair (mpes − norm, the notebook's default): per-record differences on the same records
    matched = pd.read_csv(out / "paired_matched_norm.csv")
    assert set(matched.stream) == {"mpes"} and set(matched.reference) == {"norm"} and set(matched.edits) == {2, 4}
    row = matched[(matched.edits == 4) & (matched.family == "easyedit") & (matched.metric == "rewrite_acc")].iloc[0]
    acc = raw[(raw.edits == 4) & (raw.family == "easyedit") & (raw.metric == "rewrite_acc")
              & (raw.prompt_kind == "rewrite")].pivot_table(index="case_id", columns="stream", values="value")
    assert row.n == len(acc) and row["diff"] == pytest.approx((acc.mpes - acc.norm).mean())
    versus = pd.read_csv(out / "paired_vs_memit.csv")  # plain, ablations and calibrated against MEMIT
    assert set(versus.stream) == {"alphaedit", "no-cache", "calibrated"} and (versus.n_only_a == 0).all()
    # the calibrated question is decided on those rows at the planned 4 edits (the rule's cases: test_verdicts.py)
    answer = summary["why"]["calibrated"]
    spec = versus[(versus.stream == "calibrated") & (versus.edits == 4) & (versus.metric == "specificity")].iloc[0]
    assert answer["answer"] in {"yes", "yes, at a cost in efficacy", "partly", "no"}
    assert f"specificity {spec['diff'] * 100:+.1f} points" in answer["evidence"] and "after 4 edits" in answer["evidence"]
    # batch 1 without cache_c is plain AlphaEdit's batch 1 (nothing accumulated yet): the same edits land
    first = versus[(versus.edits == 2) & (versus.metric == "efficacy")].set_index("stream")
    assert first.loc["no-cache", "mean_a"] == first.loc["alphaedit", "mean_a"]
    # ... so at its planned 2 edits the ablation finds cache_c not needed (yet); P = I was not run
    stability = summary["why"]["stability"]
    assert stability["answer"] == "cache_c is not needed; P not tested yet", stability
    assert "− plain AlphaEdit after 2 edits" in stability["evidence"] and "p-identity" in stability["evidence"]
    assert (paired.n_only_a == 0).all() and (paired.n_only_b == 0).all()
    efficacy = paired[paired.metric == "efficacy"]
    assert list(efficacy.n) == list(efficacy.edits)  # every record edited so far, both streams
    # the mechanism: ‖W − W⁰‖/‖W⁰‖ per stream, layer and milestone, and ‖z − h0‖ from the checkpoints' reports
    mech = pd.read_csv(out / "mechanism.csv")
    streams = ("alphaedit", "memit", *others)
    reached = {s: (2,) if s == "no-cache" else (2, 4) for s in streams}
    assert set(zip(mech.stream, mech.layer, mech.edits)) == {(s, l, e) for s in streams for l in (1, 2)
                                                             for e in reached[s]}
    assert mech.relative_change.gt(0).all() and mech.condition.gt(1).all() and mech.target_shift.gt(0).all()
    first = mech[(mech.edits == 2)].set_index(["stream", "layer"])
    # batch 1 starts from the same weights: the norm constraint shrinks the first layer's update (same K, R, P) ...
    assert first.loc[("norm", 1), "relative_change"] < first.loc[("alphaedit", 1), "relative_change"]
    # ... and leaves the targets as they are; early stopping never takes more Adam steps than the loss rule
    assert first.loc[("norm", 1), "target_shift"] == pytest.approx(first.loc[("alphaedit", 1), "target_shift"],
                                                                   rel=1e-5)
    by_batch = pd.read_csv(out / "mechanism_by_batch.csv").set_index(["stream", "batch"])
    assert by_batch.loc[("mpes", 0), "target_steps"] <= by_batch.loc[("alphaedit", 0), "target_steps"]
    cost = pd.read_csv(out / "cost.csv").set_index("stream")
    assert set(cost.index) == set(streams) and (cost.batches == cost.index.map(lambda s: len(reached[s]))).all()
    assert cost.seconds_per_batch.gt(0).all() and cost.loc["alphaedit", "steps_vs_reference"] == 0
    ppl = pd.read_csv(out / "perplexity.csv")
    assert set(zip(ppl.stream, ppl.edits)) == {(s, e) for s in streams for e in (0, *reached[s])}
    onset = pd.read_csv(out / "onsets.csv")
    assert set(onset.stream) == set(streams)
    closing = pd.read_csv(out / "closing.csv")
    assert set(zip(closing.stream, closing.edits)) == {(v, e) for v in others for e in reached[v]}
    assert closing["efficacy"].notna().all() and closing["norm, last layer"].notna().all()
    for fig in ("accuracy_vs_edits.png", "paired_vs_plain.png", "norm_growth.png", "onsets.png"):
        assert (out / fig).stat().st_size > 1000

    # a second execution (mpes edited again, to save test time) finds the checkpoint and the milestone rows:
    # nothing is re-edited or re-evaluated, and the tables are the same
    written = {v: (out / v / "edit_count" / "metrics_raw-alphaedit.csv").read_text() for v in variants}
    diag = {v: (out / v / "edit_count" / "diagnostics-alphaedit.csv").read_text() for v in variants}
    states = {v: sorted((tmp_path / "cache" / "runs" / "edit_count" / keys[v] / "alphaedit").glob("v-*/state.json"))
              for v in variants}
    stamps = {v: [p.stat().st_mtime_ns for p in states[v]] for v in variants}
    log = out / "mpes" / "edit_count" / "edit_count.ipynb"
    assert "alphaedit: 4 edits," in log.read_text()  # the first execution edited the batches
    run_notebook("collapse", dict(params, run_variants=["mpes"]), out, ROOT / "notebooks", timeout=900)
    assert "alphaedit: 4 of 4 edits done" in log.read_text() and "alphaedit: 4 edits," not in log.read_text()
    for v in variants:
        assert (out / v / "edit_count" / "metrics_raw-alphaedit.csv").read_text() == written[v]
        assert (out / v / "edit_count" / "diagnostics-alphaedit.csv").read_text() == diag[v]
        assert [p.stat().st_mtime_ns for p in states[v]] == stamps[v] and len(stamps[v]) == 1  # no new checkpoint
    again = json.loads((out / "summary.json").read_text())
    assert again["run_keys"] == keys and again["claims"] == summary["claims"]
