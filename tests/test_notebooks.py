"""End to end: a real notebook of the study, executed through papermill on a tiny model with a handful of edits,
then executed again to check that it resumes instead of redoing the work."""
import json

import pandas as pd
import pytest


from alphaedit_core.hparams import EditHParams
from alphaedit_core.study import ROOT, run_notebook

pytest.importorskip("papermill")


def test_edit_count_notebook_runs_and_resumes(tiny_setup):
    tmp_path, folder = tiny_setup
    params = dict(model=str(folder), label="tiny", hparams=str(tmp_path / "hparams.json"), n_edits=4, batch_size=2,
                  milestones=[2, 4], eval_cap=4, gen_cap=2, fluency_cap=2, drift_tokens=50,
                  capability_corpora=[str(tmp_path / "corpus.txt")], capability_tokens=60,
                  results_dir=str(tmp_path / "results"))
    out = tmp_path / "results" / "tiny" / "edit_count"
    run_notebook("edit_count", params, out, ROOT / "notebooks", timeout=600)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["claims"]) == {"C7", "C11", "P1", "P2", "P3"}
    assert summary["edits_checkpointed"] == {"alphaedit": 4, "memit": 4} and summary["n_edits"] == 4
    # 4 edits cannot test claims about 1,000 and more: no verdict is drawn from them
    assert {c["verdict"] for c in summary["claims"].values()} == {"not testable here"}
    by_edits = pd.read_csv(out / "metrics_by_edits.csv")
    for method in ("alphaedit", "memit"):
        assert sorted(by_edits[by_edits.method == method].edits.unique()) == [0, 2, 4]
    locality = by_edits[(by_edits.edits == 0) & (by_edits.metric == "locality")]["mean"]
    assert (locality == 1.0).all()  # EasyEdit locality of the unedited model is 1 by construction
    diag = pd.read_csv(out / "diagnostics.csv")
    assert len(diag) == 2 * 2 * 2 and diag.condition.gt(1).all() and diag.relative_change.gt(0).all()
    for fig in ("accuracy_vs_edits.png", "diagnostics.png", "paired_differences.png", "capability.png"):
        assert (out / fig).stat().st_size > 1000
    # every milestone of both methods is paired on the same records, and its snapshot re-creates the run's state
    paired = pd.read_csv(out / "paired_differences.csv")
    assert sorted(paired.edits.unique()) == [2, 4]
    assert (paired.n_only_a == 0).all() and (paired.n_only_b == 0).all()
    efficacy = paired[paired.metric == "efficacy"]
    assert list(efficacy.n) == list(efficacy.edits)  # every record edited so far (eval_cap 4), both methods
    raw_rows = pd.read_csv(out / "metrics_raw.csv")
    assert {"code_version", "evaluator_version"} <= set(raw_rows.columns)
    assert {"fluency", "consistency"} <= set(raw_rows.metric)
    snapshots = sorted(p.name for p in (tmp_path / "cache" / "runs" / "edit_count").glob("*/*/snapshots/*"))
    assert snapshots == ["edits-000002.safetensors"] * 2 + ["edits-000004.safetensors"] * 2
    cap = pd.read_csv(out / "perplexity.csv")
    assert set(cap.edits) == {0, 2, 4} and cap.perplexity.gt(1).all()
    assert_rescored_snapshot_equals_the_run(tmp_path, folder, out)
    # the evaluation's parts (kept until a milestone's rows are in its table) are removed once they are
    assert not list((tmp_path / "cache").rglob("*.part-*.pkl"))
    raw = (out / "metrics_raw-alphaedit.csv").read_text()
    # a second run finds the checkpoints and the milestone rows: nothing is recomputed or duplicated
    run_notebook("edit_count", params, out, ROOT / "notebooks", timeout=600)
    assert (out / "metrics_raw-alphaedit.csv").read_text() == raw
    assert len(pd.read_csv(out / "diagnostics.csv")) == len(diag)
    # a table of another run in the results folder is refused, never extended or taken for this run's progress
    other = pd.read_csv(out / "diagnostics-memit.csv").assign(run_key="another-run")
    other.to_csv(out / "diagnostics-memit.csv", index=False)
    with pytest.raises(Exception, match="holds rows of another run"):
        run_notebook("edit_count", params, out, ROOT / "notebooks", timeout=600)



def assert_rescored_snapshot_equals_the_run(tmp_path, folder, out):
    """Re-scoring a milestone from its snapshot, without re-editing, equals what the run wrote at that milestone."""
    from alphaedit_core.checkpoint import snapshot_path
    from alphaedit_core.data import load_offline_counterfact
    from alphaedit_core.editor import Editor
    from alphaedit_core.metrics import evaluate
    from alphaedit_core.models import load_model

    written = pd.read_csv(out / "metrics_raw-alphaedit.csv")
    written = written[(written.edits == 2) & written.family.isin(["official", "easyedit"])
                      & ~written.metric.isin(["fluency", "consistency"])]  # those come from their own subsample
    model, tok = load_model(str(folder))
    editor = Editor.prepare(model, tok, EditHParams.load(tmp_path / "hparams.json"), progress=False)
    run_dir = next((tmp_path / "cache" / "runs" / "edit_count").iterdir())
    meta = editor.load_snapshot(snapshot_path(run_dir / "alphaedit", 2))
    records = load_offline_counterfact(n=4, seed=0)
    assert meta["case_ids"] == [r["case_id"] for r in records[:2]]
    baseline_file, = (tmp_path / "cache" / "runs" / "unedited").glob("baseline-*.json")  # shared by runs
    baseline = json.loads(baseline_file.read_text())
    again = evaluate(model, tok, records[:2], baseline=baseline, families=("official", "easyedit"),
                     edited=records[:2], progress=False)
    key = ["case_id", "family", "prompt_kind", "metric"]
    merged = written.merge(again, on=key, suffixes=("_run", "_rescored"))
    assert len(merged) == len(again) == len(written) > 0
    assert (merged.value_run - merged.value_rescored).abs().max() < 1e-12


def test_parallel_methods_compute_the_unedited_model_once(tiny_setup):
    """Two method processes (study.run_methods_in_parallel) share the unedited model's scores: one computes them,
    the other reads them (or edits first while they are computed); both tables hold the same rows at 0 edits."""
    from alphaedit_core.study import run_methods_in_parallel

    tmp_path, folder = tiny_setup
    params = dict(model=str(folder), label="tiny-parallel", hparams=str(tmp_path / "hparams.json"), n_edits=4,
                  batch_size=2, milestones=[2, 4], eval_cap=4, gen_cap=2, fluency_cap=2, drift_tokens=50,
                  capability_corpora=[str(tmp_path / "corpus.txt")], capability_tokens=60,
                  results_dir=str(tmp_path / "results"), seed=5)  # its own seed: its own unedited cache
    run_methods_in_parallel(params, ROOT / "notebooks", 2)
    logs = "".join((tmp_path / "cache" / "runs" / "partial" / f"edit_count-{m}.ipynb").read_text()
                   for m in ("alphaedit", "memit"))
    assert logs.count("computing the unedited model's metrics") == 1
    assert logs.count("computing the unedited model's capability, hidden_drift") == 1
    out = tmp_path / "results" / "tiny-parallel" / "edit_count"
    zero = {m: pd.read_csv(out / f"metrics_raw-{m}.csv").query("edits == 0") for m in ("alphaedit", "memit")}
    key = ["case_id", "family", "prompt_kind", "metric"]
    merged = zero["alphaedit"].merge(zero["memit"], on=key, suffixes=("_a", "_m"))
    assert len(merged) == len(zero["alphaedit"]) == len(zero["memit"]) > 0
    assert (merged.value_a == merged.value_m).all()
    for m in ("alphaedit", "memit"):  # and every milestone of each stream
        assert set(pd.read_csv(out / f"metrics_raw-{m}.csv").edits) == {0, 2, 4}


def test_the_unedited_scores_do_not_depend_on_where_a_sitting_stops(tiny_setup):
    """A run stopped after its first milestone scores the unedited model on the sample of the plan's last milestone
    (here every record), and the sitting that finishes the run reads those scores instead of computing others."""
    tmp_path, folder = tiny_setup
    params = dict(model=str(folder), label="tiny-sittings", hparams=str(tmp_path / "hparams.json"), n_edits=4,
                  batch_size=2, milestones=[2, 4], eval_cap=4, gen_cap=2, fluency_cap=2, drift_tokens=50,
                  capability_corpora=[str(tmp_path / "corpus.txt")], capability_tokens=60, methods=["alphaedit"],
                  results_dir=str(tmp_path / "results"), seed=7, stop_after_edits=2)
    out = tmp_path / "results" / "tiny-sittings" / "edit_count"
    run_notebook("edit_count", params, out, ROOT / "notebooks", timeout=600)
    first = pd.read_csv(out / "metrics_raw-alphaedit.csv")
    assert set(first.edits) == {0, 2}
    from alphaedit_core.data import load_offline_counterfact

    every_record = {r["case_id"] for r in load_offline_counterfact(n=4, seed=7)}
    assert set(first[first.edits == 0].case_id) == every_record  # not the first sitting's two
    # another stream of the same records that runs through (MEMIT, its own folder): its 0-edit rows come from the cache
    through = tmp_path / "results" / "tiny-through" / "edit_count"
    run_notebook("edit_count", {**params, "label": "tiny-through", "methods": ["memit"], "stop_after_edits": None},
                 through, ROOT / "notebooks", timeout=600)
    assert "computing the unedited model's metrics" not in (through / "edit_count.ipynb").read_text()
    both = pd.read_csv(through / "metrics_raw-memit.csv")
    assert set(both.edits) == {0, 2, 4}
    key = ["case_id", "family", "prompt_kind", "metric"]
    zero = both[both.edits == 0].merge(first[first.edits == 0], on=key, suffixes=("", "_first"))
    assert len(zero) == len(first[first.edits == 0]) and (zero.value == zero.value_first).all()


def test_projection_check_notebook_runs_on_a_tiny_model(tiny_setup):
    """projection_check end to end: its threshold sweep (one eigendecomposition per layer) agrees with the projector
    the chapter's table reports at the same rule, and the sweep keeps more directions as the threshold grows."""
    tmp_path, folder = tiny_setup
    hp = EditHParams.load(tmp_path / "hparams.json").replace(nullspace_mode="threshold", nullspace_threshold=5e-5)
    hp.save(tmp_path / "hparams.json")
    params = dict(model=str(folder), label="tiny", hparams=str(tmp_path / "hparams.json"), n_edits=4, batch_size=2,
                  heldout_tokens=60, other_corpus_docs=2, thresholds=[1e-7, 5e-5, 1e6],
                  results_dir=str(tmp_path / "results"))
    out = tmp_path / "results" / "tiny" / "projection_check"
    run_notebook("projection_check", params, out, ROOT / "notebooks", timeout=600)
    table = pd.read_csv(out / "projection.csv").set_index("layer")
    sweep = pd.read_csv(out / "threshold_sweep.csv")
    assert sorted(sweep.layer.unique()) == hp.layers
    for layer, g in sweep.groupby("layer"):
        g = g.set_index("threshold")
        assert g.kept_share[1e-7] == 0.0 < g.kept_share[5e-5] < g.kept_share[1e6] == 1.0  # the tiny C's spectrum
        assert g.kept_share[5e-5] == table.kept_share[layer]  # the same rule gives the same P twice
        assert g.ratio_heldout_mean[1e6] == pytest.approx(1.0, abs=1e-5)  # P = I lets every key through
