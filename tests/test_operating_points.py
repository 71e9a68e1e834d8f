"""Operating points: the pure helpers of `alphaedit_core.sweeps` against hand-derived numbers, and the
`operating_points` notebook executed through papermill on a tiny model with a handful of edits, then executed
again with one more setting to check that it resumes instead of redoing the settings it finished."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from tiny import notebook_setup

from alphaedit_core import sweeps
from alphaedit_core.hparams import EditHParams
from alphaedit_core.projection import projector_from_cov

VERDICTS = {"reproduced", "partly reproduced", "not reproduced", "not testable here"}


# ------------------------------------------------------------------------------------------------ matching
def test_bracket_picks_the_segment_nearest_the_default_and_its_weight():
    path = [0.2, 0.8, 0.4, 0.9]  # non-monotone: 0.6 is crossed by segments 0, 1 and 2
    i, w = sweeps.bracket(path, 0.6, start=3)
    assert i == 2 and w == pytest.approx(0.4)  # 0.4 + 0.4 * (0.9 - 0.4) = 0.6
    i, w = sweeps.bracket(path, 0.6, start=0)
    assert i == 0 and w == pytest.approx(2 / 3)  # 0.2 + 2/3 * 0.6 = 0.6
    assert sweeps.bracket(path, 0.95) is None  # never reached
    assert sweeps.bracket([0.7], 0.7) == (0, 0.0) and sweeps.bracket([0.7], 0.6) is None
    assert sweeps.interpolate([1.0, 3.0], 0, 0.25) == pytest.approx(1.5)


def test_equal_efficacy_on_a_hand_made_curve():
    # five records; each method has two settings with efficacy 0.6 and 1.0 (same records, same per-record values)
    eff = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=float)
    out_a = np.array([[0.2] * 5, [0.6] * 5])  # A's outcome 0.2 -> 0.6 along its curve
    out_b = np.array([[0.5] * 5, [0.9] * 5])  # B's 0.5 -> 0.9
    r = sweeps.equal_efficacy(eff, out_a, eff, out_b, 0.8, n_boot=500)
    # at efficacy 0.8 both curves are halfway: A 0.4, B 0.7; the same weight in every resample, so no spread
    assert (r["seg_a"], r["seg_b"]) == (0, 0) and r["w_a"] == pytest.approx(0.5) == r["w_b"]
    assert r["value_a"] == pytest.approx(0.4) and r["value_b"] == pytest.approx(0.7)
    assert r["diff"] == pytest.approx(-0.3) and r["ci_low"] == pytest.approx(-0.3) == r["ci_high"]
    assert 0 < r["unmatched"] < 0.2  # resamples drawing only the three 1s of setting 0 (0.6^5 = 7.8%) miss 0.8
    # an outcome on other units (key blocks) is resampled on its own: its noise enters the interval
    blocks_a, blocks_b = np.array([[0.1, 0.3], [0.5, 0.7]]), np.array([[0.0, 0.0], [0.0, 0.0]])
    r = sweeps.equal_efficacy(eff, blocks_a, eff, blocks_b, 0.8, same_units=False, n_boot=500)
    assert r["diff"] == pytest.approx(0.4) and r["ci_low"] < 0.4 < r["ci_high"]
    # a target outside one curve: no comparison
    assert math.isnan(sweeps.equal_efficacy(eff, out_a, eff * 0.5, out_b, 0.9, n_boot=10)["diff"])


def test_match_targets_and_nearest_pair():
    assert sweeps.match_targets([0.6, 1.0], [0.5, 0.8], anchors=[0.95, 0.7]) == [0.7]  # 0.95: outside B
    assert sweeps.match_targets([0.6, 1.0], [0.5, 0.8], anchors=[0.95]) == [pytest.approx(0.7)]  # the middle
    assert sweeps.match_targets([0.9, 1.0], [0.5, 0.8], anchors=[0.9]) == []  # no overlap
    assert sweeps.nearest_pair({"a1": 0.5, "a2": 0.9}, {"b1": 0.7, "b2": 0.88}) == ("a2", "b2", pytest.approx(0.02))


# ------------------------------------------------------------------------------------------- projector rule
def planted(eigenvalues, seed=0):
    """C = Q diag(λ) Qᵀ with a random orthogonal Q: known spectrum, known eigenvectors."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T, q


def test_energy_rule_on_a_planted_spectrum():
    ev = [1.0, 2.0, 3.0, 4.0, 10.0]  # tr C = 20; cumulative shares 0.05, 0.15, 0.30, 0.50, 1
    c, q = planted(ev)
    for energy, kept in [(0.04, 0), (0.1, 1), (0.35, 3), (0.6, 4)]:
        assert sweeps.energy_cut(ev, energy)["n_kept"] == kept
    p = projector_from_cov(c.float(), mode="energy", energy=0.35)
    assert p.n_kept == 3 and p.energy_kept() == pytest.approx(0.3, abs=1e-6)
    dense = p.dense().double()  # P keeps exactly the three smallest eigen-directions
    assert torch.allclose(dense @ q[:, :3], q[:, :3], atol=1e-5)
    assert torch.allclose(dense @ q[:, 3:], torch.zeros(5, 2, dtype=torch.float64), atol=1e-5)
    cut = sweeps.energy_cut(ev, 0.35)
    assert (cut["largest_kept"], cut["smallest_dropped"]) == (3.0, 4.0)
    t = sweeps.threshold_for(ev, 3)
    assert t == 3.5 and projector_from_cov(c.float(), threshold=t).n_kept == 3  # the official rule, same directions
    assert math.isnan(sweeps.threshold_for(ev, 0)) and sweeps.threshold_for(ev, 5) > 10.0


def test_calibrate_energy_criterion():
    pts = [dict(energy=0.1, leak=0.32, efficacy=0.99), dict(energy=0.03, leak=0.17, efficacy=0.97),
           dict(energy=0.01, leak=0.09, efficacy=0.93), dict(energy=0.001, leak=0.03, efficacy=0.60)]
    c = sweeps.calibrate_energy(pts, leak_target=0.1, efficacy_floor=0.9)
    assert c["nullspace_energy"] == 0.01 and c["protects"] and c["edits_land"]  # largest share that protects
    c = sweeps.calibrate_energy(pts, leak_target=0.1, efficacy_floor=0.95)  # landing: 0.1, 0.03; none protects
    assert c["nullspace_energy"] == 0.03 and not c["protects"] and c["edits_land"]
    c = sweeps.calibrate_energy(pts, leak_target=0.1, efficacy_floor=0.999)  # none lands: all are candidates
    assert c["nullspace_energy"] == 0.01 and c["protects"] and not c["edits_land"]
    with pytest.raises(ValueError):
        sweeps.calibrate_energy([dict(energy=0.1, leak=math.nan, efficacy=1.0)], leak_target=0.1, efficacy_floor=0.9)


# ------------------------------------------------------------------------------------------------------- grid
def test_grid_skips_the_preset_values_and_runs_informative_settings_first():
    base = EditHParams.load("smollm2-135m-instruct").to_dict()
    grid = sweeps.operating_grid(base, thresholds=[0.05, 0.02, 0.01, 0.005], energies=[0.1, 0.01],
                                 l2s=[1.0, 10.0, 100.0], lambdas=[1500.0, 15000.0, 150000.0], clamps=[0.75],
                                 seeds=[0, 1], migration=("ref", {"v_lr": 0.1}))
    ids = [s.id for s in grid]
    assert ids[:2] == ["alphaedit-default", "memit-default"]
    assert len(ids) == len(set(ids)) == 2 + 3 + 2 + 2 + 2 + 2 + 1 + 2
    for gone in ("alphaedit-nullspace_threshold-0.02", "alphaedit-L2-10", "memit-mom2_update_weight-15000",
                 "alphaedit-seed-0"):
        assert gone not in ids  # equal to the preset: the default point covers it
    tiers = [s.tier for s in grid]
    assert tiers == sorted(tiers) and ids[-2:] == ["alphaedit-seed-1", "memit-seed-1"]
    by_id = {s.id: s for s in grid}
    assert by_id["alphaedit-nullspace_threshold-0.05"].tier == 1 == by_id["alphaedit-nullspace_threshold-0.005"].tier
    assert by_id["alphaedit-nullspace_threshold-0.01"].tier == 2
    assert by_id["alphaedit-nullspace_energy-0.01"].overrides == {"nullspace_mode": "energy", "nullspace_energy": 0.01}
    digests = {sweeps.hparams_digest(s.method, s.hparams(base)) for s in grid}
    assert len(digests) == len(grid)  # one checkpoint folder per setting, never shared
    curve = sweeps.curve(grid, "nullspace_threshold", base)
    assert [v for _, v in curve] == [0.005, 0.01, 0.02, 0.05] and curve[2][0].id == "alphaedit-default"
    assert "alphaedit-default" not in [s.id for s, _ in sweeps.curve(grid, "nullspace_energy", base)]


def test_corpus_settings_change_only_alphaedits_statistics_and_skip_the_presets_corpus():
    base = EditHParams.load("smollm2-135m-instruct").to_dict()
    assert base["mom2_corpus"] == "austen"
    grid = sweeps.operating_grid(base, clamps=[0.75], corpora=["austen", "wordnet", "wordnet"],
                                 migration=("ref", {"v_lr": 0.1}))
    by_id = {s.id: s for s in grid}
    assert [s.id for s in grid if s.knob == "mom2_corpus"] == ["alphaedit-mom2_corpus-wordnet"]
    corpus = by_id["alphaedit-mom2_corpus-wordnet"]
    assert corpus.method == "alphaedit" and corpus.overrides == {"mom2_corpus": "wordnet"} and corpus.tier == 3
    ids = [s.id for s in grid]  # tier 3 in knob order: clamp, then corpus, then migration
    assert ids.index("alphaedit-clamp_norm_factor-0.75") < ids.index(corpus.id) < ids.index("alphaedit-migration-ref")
    assert not [s for s in sweeps.operating_grid(base, corpora=["wordnet"], methods=("memit",))
                if s.knob == "mom2_corpus"]  # MEMIT has no P: its λ C is not swept over corpora


def test_migration_moves_only_the_algorithm_settings():
    model = EditHParams.load("smollm2-135m-instruct").to_dict()
    reference = EditHParams.load("alphaedit-llama3-8b").to_dict()
    # the statistics (Wikipedia, 2,048-token windows), loss layer 31 and layers stay the model's own
    assert sweeps.migrated_overrides(model, reference) == {"v_lr": 0.1, "v_weight_decay": 0.5,
                                                           "clamp_norm_factor": 0.75}


# --------------------------------------------------------------------------------------------------- verdicts
def row(diff, lo, hi, a=0.5, b=0.5):
    return dict(diff=diff, ci_low=lo, ci_high=hi, mean_a=a, mean_b=b)


def test_verdict_rules():
    better, worse, same = row(0.2, 0.1, 0.3), row(-0.2, -0.3, -0.1), row(0.01, -0.05, 0.07)
    assert sweeps.c3_migration({"efficacy": better, "specificity": same}, reference="r", edits=200)["verdict"] == \
        "reproduced"
    assert sweeps.c3_migration({"efficacy": better, "locality": worse}, reference="r", edits=200)["verdict"] == \
        "partly reproduced"
    assert sweeps.c3_migration({"efficacy": same, "locality": better}, reference="r", edits=200)["verdict"] == \
        "not reproduced"
    assert sweeps.c3_migration({}, reference="r", edits=200)["verdict"] == "not testable here"
    small = row(0.05, 0.02, 0.08)  # excludes 0 but below 10 points: not material
    drift_big, drift_small = row(0.3, 0.2, 0.4, a=0.8, b=0.5), row(0.05, 0.01, 0.09, a=0.55, b=0.5)
    assert sweeps.material(drift_big, "drift") and not sweeps.material(drift_small, "drift")
    c4 = sweeps.c4_knobs({"efficacy": better}, {"drift": drift_big}, {"alphaedit": (1.0, 2.0)}, edits=200)
    assert c4["verdict"] == "reproduced"
    c4 = sweeps.c4_knobs({"efficacy": small}, {"drift": drift_big}, {"alphaedit": (1.95, 2.0)}, edits=200)
    assert c4["verdict"] == "partly reproduced"
    assert sweeps.c4_knobs({"efficacy": small}, None, None, edits=200)["verdict"] == "not reproduced"
    assert sweeps.c4_knobs(None, None, None, edits=200)["verdict"] == "not testable here"
    fix = dict(protects=True, edits_land=True, nullspace_energy=0.01, leak=0.09, efficacy=0.95, reason="r")
    assert sweeps.c5_projector(0.5, fix, leak_target=0.1, rule="threshold=0.02")["verdict"] == "reproduced"
    assert sweeps.c5_projector(0.5, {**fix, "edits_land": False}, leak_target=0.1, rule="t")["verdict"] == \
        "partly reproduced"
    assert sweeps.c5_projector(0.05, fix, leak_target=0.1, rule="t")["verdict"] == "not reproduced"


# ------------------------------------------------------------------------------------------------- notebook
@pytest.fixture
def tiny_setup(tmp_path, monkeypatch):
    pytest.importorskip("papermill")
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path / "cache"))
    folder, hp = notebook_setup(tmp_path, v_lr=0.5, clamp_norm_factor=4.0)
    # C3's reference preset for the tiny model: other target-optimisation settings, other statistics (not migrated)
    hp.replace(v_lr=0.1, clamp_norm_factor=0.75, mom2_n_tokens=999, layers=[0, 1]).save(tmp_path / "reference.json")
    return tmp_path, folder


def test_operating_points_notebook_runs_and_resumes(tiny_setup):
    from alphaedit_core.data import load_offline_counterfact
    from alphaedit_core.study import ROOT, run_notebook

    tmp_path, folder = tiny_setup
    energies = [0.05, 0.1, 0.3]  # 0.1 is the preset's: the default point sits on the energy curve
    other = tmp_path / "other.txt"  # a second text for AlphaEdit's statistics: the tiny text's lines reversed
    other.write_text("\n\n".join(["\n".join((tmp_path / "corpus.txt").read_text().split("\n")[::-1])] * 2))
    params = dict(model=str(folder), label="tiny", hparams=str(tmp_path / "hparams.json"), n_edits=4, batch_size=2,
                  stream_of=6, thresholds=[2e-5, 5e-5, 1.0], energies=energies, l2s=[100.0],
                  memit_lambdas=[1500.0], clamps=[1.0], seeds=[1], migration_preset=str(tmp_path / "reference.json"),
                  corpora=[str(other)], probe_tokens=60, block_tokens=20, results_dir=str(tmp_path / "results"))
    out = tmp_path / "results" / "tiny" / "operating_points"
    run_notebook("operating_points", params, out, ROOT / "notebooks", timeout=600)

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["claims"]) == {"C3", "C4", "C5", "P4"}
    assert {c["verdict"] for c in summary["claims"].values()} <= VERDICTS
    assert summary["claims"]["P4"]["verdict"] != "not testable here"  # MEMIT with Δ P and sequential MEMIT ran
    assert "Sequential MEMIT" in summary["claims"]["P4"]["evidence"]
    knobs = pd.read_csv(out / "paired_knobs.csv")
    assert {"P4: MEMIT projected − MEMIT", "P4: sequential MEMIT − MEMIT"} <= set(knobs.comparison)
    assert summary["claims"]["C3"]["verdict"] != "not testable here"  # the migrated setting ran
    c3 = summary["claims"]["C3"]["evidence"]  # the algorithm settings migrate; the statistics stay the model's
    assert "Migrated: v_lr 0.1, clamp_norm_factor 0.75;" in c3 and "mom2_n_tokens 300 (reference 999)" in c3
    calibrated = json.loads((out / "calibrated.json").read_text())
    assert calibrated["rule"]["nullspace_mode"] == "energy" and calibrated["rule"]["nullspace_energy"] in energies
    assert [l["layer"] for l in calibrated["per_layer"]] == [1, 2]
    assert all(0 < l["n_kept"] < 64 for l in calibrated["per_layer"])

    settings = pd.read_csv(out / "settings.csv")
    assert sorted(settings.setting) == sorted(summary["settings_planned"]) and not summary["settings_pending"]
    # a threshold of 1.0 keeps every direction of the tiny model: listed, never run
    assert settings.set_index("setting").loc["alphaedit-nullspace_threshold-1", "status"] == "degenerate P"
    ran = settings[settings.status == "done"]
    assert len(ran) == len(settings) - 1 and (ran.seconds_edit > 0).all() and (ran.seconds_eval > 0).all()
    run_dirs = list((tmp_path / "cache" / "runs" / "operating_points").iterdir())
    assert len(run_dirs) == 1  # one run key; one checkpoint folder per setting that ran, keyed by its hparams
    folders = sorted(p.name for p in run_dirs[0].iterdir() if p.is_dir())
    assert len(folders) == len(ran) and {f.rsplit("-", 1)[0] for f in folders} == set(ran.setting)

    # every setting is scored on the stream's records; retention rows after the first batch
    ids = sorted(r["case_id"] for r in load_offline_counterfact(n=4, seed=0))
    raw = pd.read_csv(out / "metrics_raw.csv")
    for s, g in raw[(raw.edits == 4) & (raw.metric == "efficacy")].groupby("setting"):
        assert sorted(g.case_id) == ids, s
    assert set(raw[raw.edits == 2].setting) == set(ran.setting)
    first_batch = sorted(r["case_id"] for r in load_offline_counterfact(n=4, seed=0)[:2])
    assert sorted(raw[(raw.edits == 2) & (raw.metric == "efficacy")].case_id.unique()) == first_batch
    # the equal-efficacy comparison pairs the same records (drift: the same key blocks)
    equal = pd.read_csv(out / "equal_efficacy.csv")
    nearest = equal[equal.kind == "nearest pair"]
    assert set(nearest.comparison) == {"AlphaEdit: threshold − MEMIT: λ", "AlphaEdit: energy share − MEMIT: λ",
                                       "AlphaEdit: L2 − MEMIT: λ"}
    assert (nearest.n_only_a == 0).all() and (nearest.n_only_b == 0).all()
    assert (nearest[nearest.measure != "drift"].n == 4).all() and (nearest[nearest.measure == "drift"].n == 3).all()
    for a, b in set(zip(nearest.settings_a, nearest.settings_b)):
        eff = raw[(raw.edits == 4) & (raw.metric == "efficacy")]
        assert sorted(eff[eff.setting == a].case_id) == sorted(eff[eff.setting == b].case_id) == ids
    interpolated = equal[equal.kind == "interpolated"]
    assert (interpolated.n_records == 4).all()
    points = pd.read_csv(out / "points.csv")
    assert set(points.setting) == set(ran.setting) and points.leak_heldout.dropna().between(0, 1).all()
    for fig in ("tradeoff.png", "equal_efficacy.png", "projector_leak.png"):
        assert (out / fig).stat().st_size > 1000
    projector = pd.read_csv(out / "projector.csv")
    assert {"leak_heldout", "leak_neighbour", "leak_edit", "leak_facts", "threshold_equivalent"} <= \
        set(projector.columns)
    assert projector.leak_facts.between(0, 1).all()  # the 2 records of the stream not edited here: their facts
    # P from the other text: its own rows, its setting ran with it, and it differs from the preset's P
    mine = projector[projector.rule == "energy=0.1"].set_index("layer")
    theirs = projector[projector.rule == "energy=0.1@other"].set_index("layer")
    assert list(theirs.corpus.unique()) == [str(other)] and sorted(theirs.index) == [1, 2]
    assert (theirs.leak_heldout == theirs.leak_heldout_other).all() and \
        (mine.leak_heldout == mine.leak_heldout_corpus).all()  # each P's leak_heldout: held out of its own text
    assert mine.leak_heldout_other.between(0, 1).all()  # the preset's P on the other text's keys
    assert not np.allclose(theirs.leak_facts, mine.leak_facts)
    row = settings.set_index("setting").loc["alphaedit-mom2_corpus-other"]
    assert row.status == "done" and row.rule == "energy=0.1@other"
    corpus_leak = pd.read_csv(out / "corpus_leak.csv", index_col=0)
    assert list(corpus_leak.index) == ["corpus", "other"]
    assert "P from other − P from corpus" in set(knobs.comparison)
    assert set(summary["covariance_corpus"]["versus_preset"]["other"]) >= {"efficacy", "specificity", "drift"}

    # a second run with one more setting: the finished settings are not redone, their rows not rewritten
    before = {name: (out / f"{name}.csv").read_text() for name in ("settings", "metrics_raw", "batches", "drift_raw")}
    run_notebook("operating_points", {**params, "l2s": [100.0, 1000.0]}, out, ROOT / "notebooks", timeout=600)
    for name, text in before.items():
        assert (out / f"{name}.csv").read_text().startswith(text), name
    again = pd.read_csv(out / "settings.csv")
    assert list(again.setting[len(settings):]) == ["alphaedit-L2-1000"]
    import nbformat

    executed = nbformat.read(out / "operating_points.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert printed.count("done earlier") == len(settings)


def test_parallel_workers_run_every_setting_once(tiny_setup):
    """`study --jobs 2`: two worker processes run the notebook's settings loop at once, then the rendering run.
    Every setting is run by exactly one worker (its "done" line printed once over both workers), the shared tables
    hold each setting's rows once, and the rendering run finds everything done."""
    import nbformat

    from alphaedit_core.paths import cache_dir
    from alphaedit_core.study import ROOT, run_notebook, run_sweep_in_parallel, worker_notebook

    tmp_path, folder = tiny_setup
    with pytest.raises(ValueError, match="no cell tagged 'no-such-tag'"):
        worker_notebook("operating_points", ROOT / "notebooks", "no-such-tag", tmp_path / "x.ipynb")
    params = dict(model=str(folder), label="tiny", hparams=str(tmp_path / "hparams.json"), n_edits=4, batch_size=2,
                  stream_of=4, thresholds=[2e-5, 5e-5], energies=[0.05, 0.3], l2s=[100.0],
                  memit_lambdas=[1500.0, 50000.0], clamps=[], seeds=[1], migration_preset="", corpora=[],
                  methods=["alphaedit", "memit"], probe_tokens=60, block_tokens=20,
                  results_dir=str(tmp_path / "results"))
    run_sweep_in_parallel(params, ROOT / "notebooks", jobs=2)  # 11 settings: 2 defaults, 2+2+1+2 knob points, 2 seeds
    partial = cache_dir("runs", "partial")
    loop = nbformat.read(partial / "operating_points-loop.ipynb", as_version=4)
    assert "sweep-loop" in loop.cells[-1].metadata.tags and "for s in grid:" in loop.cells[-1].source
    # the set-up run (every thread) computed the statistics before the workers started: no worker wrote one
    setup = nbformat.read(partial / "operating_points-setup-run.ipynb", as_version=4)
    assert "shared-setup" in setup.cells[-1].metadata.tags and "layer_stats(" in setup.cells[-1].source
    stats = list(cache_dir("stats").rglob("*.safetensors"))
    assert stats and all(p.stat().st_mtime <= (partial / "operating_points-setup-run.ipynb").stat().st_mtime
                         for p in stats)

    def printed(path) -> str:
        nb = nbformat.read(path, as_version=4)
        return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))

    logs = [printed(partial / f"operating_points-worker{i}.ipynb") for i in (0, 1)]
    out = tmp_path / "results" / "tiny" / "operating_points"
    settings = pd.read_csv(out / "settings.csv")
    assert settings.setting.is_unique and (settings.status == "done").all() and len(settings) == 11
    for s in settings.setting:
        assert sum(log.count(f"{s}: done,") for log in logs) == 1, s
    raw = pd.read_csv(out / "metrics_raw.csv")
    keys = ["setting", "edits", "case_id", "family", "prompt_kind", "metric"]
    assert not raw.duplicated(keys).any() and set(raw.setting) == set(settings.setting) | {"unedited"}
    for name in ("drift_raw", "batches"):
        assert set(pd.read_csv(out / f"{name}.csv").setting) == set(settings.setting), name

    run_notebook("operating_points", {**params, "time_budget_min": 0}, out, ROOT / "notebooks", timeout=600)
    rendered = printed(out / "operating_points.ipynb")
    assert rendered.count("done earlier") == 11 and ": done," not in rendered
    assert pd.read_csv(out / "settings.csv").equals(settings)
