# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Why the long stream collapses, and what stops it
#
# **C7** (the why) The edit-count chapter shows AlphaEdit's accuracy falling past 1,000 edits and collapsing around
# 2,000. Two things grew with it, batch after batch: how far the edited weights have moved from the original ones
# at the last edited layer (‖W − W⁰‖/‖W⁰‖, about twice MEMIT's by the end of the stream) and the condition number of
# the solved system (by more than an order of magnitude); the mechanism section below gives both at every milestone.
# Does the collapse track that growth, and does bounding the norm postpone it?
#
# **N1 Norm growth drives the collapse.** In sequential locate-then-edit methods (MEMIT, AlphaEdit) the edited
# matrices' norm grows with the number of edits, and that growth, not the number of edits as such, brings the
# collapse; bounding it (ENCORE's most-probable early stopping and Frobenius-norm constraint, {cite:p}`gupta2025encore`;
# Norm-Anchor Scaling of the value vectors, {cite:p}`liu2026nas`) postpones the collapse by thousands of edits.
#
# *Quoted from the papers, not measured here:* ENCORE reaches 10,000 sequential edits (Llama3-8B among its models)
# without losing downstream performance and cuts editing time by 42–61%; Norm-Anchor Scaling extends the usable
# editing horizon by more than 4× and improves long-run editing performance by 72.2% on average.
#
# **The experiment.** The same stream as the edit-count chapter (same records, seed, batches and milestones, same
# evaluation sample at each milestone) is edited again by AlphaEdit with each stabiliser, and compared record by
# record with the plain AlphaEdit stream, which is reused from `results/<model>/edit_count/` together with MEMIT's
# (not rerun). Each stabilised stream *is* the `edit_count` notebook, executed with `methods=["alphaedit"]` and the
# stabiliser's hyperparameters as `overrides`, into `collapse/<variant>/edit_count/`: no second copy of the stream
# code. Its run key hashes the hyperparameters, so each variant has its own checkpoints and milestone snapshots and
# resumes on its own. The stabilisers (`alphaedit_core/hparams.py`, all off by default):
#
# - **mpes**: `target_stop="most_probable"`, `most_probable_count=2`. ENCORE's most-probable early stopping: a
#   request's target optimisation also stops at the second Adam step at which every token of the new object is the
#   argmax on every rewriting prompt. The count is ENCORE's value for Llama3-8B (`prob_cutoff=-2`; −3 for Llama2-7B,
#   −4 for GPT2-XL), the LLaMA-family model of the claims; the code's default 1 is the bare rule, which stops on a
#   single hit that may not survive the next step.
# - **norm**: `norm_constraint=20`. ENCORE's Frobenius penalty μ‖Δ‖²_F on each batch's update, with ENCORE's value
#   for Llama3-8B (`update_norm_lambda=20`; 10 for GPT2-XL and Llama2-7B). For AlphaEdit this is exactly raising
#   its ridge L2 to L2 + μ: AlphaEdit's own L2‖Δ‖² term already *is* a Frobenius penalty on the projected update
#   (`solve.alphaedit_delta`), so plain AlphaEdit is "ENCORE's constraint at μ = 10" and this variant triples it
#   (10 → 30). It is a per-batch bound: it shrinks each update, not the sum of 20 of them, which is what grows. The
#   value is taken from the paper, not tuned on this stream (tuning on the stream that decides the verdict would
#   bias it).
# - **anchor**: `value_anchor="nas"`. Norm-Anchor Scaling: each solved value vector is rescaled to the mean norm of
#   the value vectors solved on the unedited model (the first batch); a request whose value vector exceeds twice
#   that is left unedited (`value_anchor_skip=2`, the authors' value).
# - **mpes+norm**: both of ENCORE's regularisers, ENCORE's Llama3-8B setting transplanted to AlphaEdit.
#
# **Where AlphaEdit's stability comes from** (the operating-points issue's ablations). AlphaEdit differs from MEMIT
# in two ways: the projector P (the update lives where the preserved keys are small) and the accumulated constraint
# `cache_c` (the keys of earlier edits are held where they were). Two ablation streams take one away each, over the
# first 1,000 edits of the stream (by then plain AlphaEdit and MEMIT differ clearly in every edit measure; the
# compute of the last 1,000 goes to the stabilisers):
#
# - **no-cache**: method `alphaedit_no_cache`, P without `cache_c` (every batch solved as if it were the first).
# - **p-identity**: `nullspace_mode="identity"`, `cache_c` without P: the update R Kᵀ (K Kᵀ + cache_c + L2 I)⁻¹, a
#   ridge that remembers the earlier edits' keys and knows nothing of the preserved knowledge.
#
# A **calibrated** stream (`calibrated`) edits with the projector rule that the operating-points chapter chose
# (`operating_points/calibrated.json`: the largest energy share whose held-out leak stays under the target while
# the edits land) and answers the operating-points question at 2,000 edits: does a calibrated P give AlphaEdit the
# preservation advantage over MEMIT that the paper reports, and at what cost in efficacy? Ablation and calibrated
# streams are compared with plain AlphaEdit like the stabilisers, and also with MEMIT; they do not enter N1's and
# C7's verdicts, which are about the stabilisers.
#
# Per milestone: the metric families of each stream; the paired difference of each stabilised stream against plain
# AlphaEdit on the same records; the mechanism (‖W − W⁰‖/‖W⁰‖ per layer, ‖z − h0‖ of each batch's targets, the
# condition number, drift on held-out keys and of hidden states on held-out text, Adam steps per request); the
# collapse onset of each stream; the cost (seconds and Adam steps per batch). The decision rules for N1 and C7's
# why are `verdicts.norm_mechanism`, `n1_norm_growth` and `c7_why`.
#
# **Running it.** The stabilised streams are edited when `run_streams` is true, one after the other, each resuming
# from its checkpoint; otherwise the notebook only reads what they wrote. On two quiet cores a stream at the plain
# speed costs about 2.3 h of editing (2,000 edits × 4.2 s, 87% of it in the target optimisation;
# `benchmarks/results/mpes_speed-smollm2-135m-instruct-b100.md`) plus about half an hour of milestone evaluations;
# MPES cuts the Adam steps per request from 22 to 9 and the target optimisation 1.7–1.9× (same table), so its
# streams cost about 2 h: some 18 h for the seven streams. The cost table below gives what each really took.
# `time_budget_min` stops starting new edit batches after that many minutes; the same command resumes. From the
# repository root (this also refreshes `collapse.ipynb` from this file and records the provenance):
#
# ```
# OMP_NUM_THREADS=2 .venv/bin/python -c "from alphaedit_core.study import ROOT, run_notebook; run_notebook(
#     'collapse', dict(run_streams=True, time_budget_min=240), ROOT / 'results/smollm2-135m-instruct/collapse',
#     ROOT / 'notebooks')"
# ```
#
# or, equivalently, `python -m papermill notebooks/collapse.ipynb results/smollm2-135m-instruct/collapse/collapse.ipynb
# --cwd notebooks -p run_streams True -p time_budget_min 240`.
#
# The plain streams must be those of the current data: the notebook refuses streams of other records, batches or
# seeds (their run keys, or for tables without run keys their evaluated case ids, must agree).

# %% tags=["parameters", "remove-cell"]
model = "smollm2-135m-instruct"  # offline short name, hub id or local folder (as for edit_count)
label = ""  # results folder name (empty: the model name, slashes as double dashes), as for edit_count
results_dir = "../results"
reference_dir = ""  # folder of the plain AlphaEdit and MEMIT streams (empty: <results_dir>/<label>/edit_count)
variants = {
    "mpes": {"target_stop": "most_probable", "most_probable_count": 2},
    "norm": {"norm_constraint": 20.0},
    "anchor": {"value_anchor": "nas"},
    "mpes+norm": {"target_stop": "most_probable", "most_probable_count": 2, "norm_constraint": 20.0},
}
stream = {}  # edit_count parameters of every stabilised stream (empty: edit_count's defaults, the full stream)
run_streams = False  # edit (or resume) the stabilised streams; False: only read what they wrote
# the two ablations stop at 1,000 edits (where plain AlphaEdit and MEMIT already differ clearly; the compute goes to
# the stabilisers' full streams); remove `stop_after_edits` to resume them to 2,000 (same run key, same checkpoints)
ablations = {"no-cache": {"method": "alphaedit_no_cache", "stop_after_edits": 1000},  # P without cache_c
             "p-identity": {"nullspace_mode": "identity", "stop_after_edits": 1000}}  # cache_c without P (P = I)
calibrated = "auto"  # calibrated.json whose rule edits one more stream ("auto": the operating-points chapter's, if any)
run_variants = None  # the streams this execution edits (None: every variant, ablation and the calibrated one)
time_budget_min = None  # start no new edit batch after this many minutes, all variants together
report_at = [1000, 2000]  # milestones of the closing table
matched = [["mpes", "norm"]]  # [a, b]: two streams that bound the norm about equally by different means, paired a − b
value_norm_probes = 50  # probe requests of the value-vector check on the streams' snapshots (0: skip it)
value_norm_streams = ["alphaedit", "anchor"]  # streams whose milestone snapshots the check reads (where present)
quick = False

# %% tags=["hide-input", "remove-output"]
import ast
import json
import math
import os
import re
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import papermill
import seaborn as sns
from IPython.display import Markdown

from alphaedit_core import mechanism
from alphaedit_core.metrics import summarize
from alphaedit_core.metrics.paired import paired_differences, plot_paired_differences
from alphaedit_core.paths import cache_dir
from alphaedit_core.study import ROOT, run_notebook, sync_pair
from alphaedit_core.verdicts import (FAMILIES, c7_why, calibrated_preservation, n1_norm_growth, norm_mechanism,
                                    onsets, stability_source)

PLAIN, MEMIT = "alphaedit", "memit"
model_dir = label or model.replace("/", "--")
out = Path(results_dir) / model_dir / "collapse"
out.mkdir(parents=True, exist_ok=True)
reference = Path(reference_dir) if reference_dir else Path(results_dir) / model_dir / "edit_count"
sns.set_theme(style="whitegrid")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-")


CALIBRATED = "calibrated"
calibrated_path = (Path(results_dir) / model_dir / "operating_points" / "calibrated.json" if calibrated == "auto"
                   else Path(calibrated) if calibrated else None)
calibrated_rule = {}
if calibrated_path is not None and calibrated_path.exists():
    calibrated_rule = json.loads(calibrated_path.read_text())["rule"]
elif calibrated and calibrated != "auto":
    raise FileNotFoundError(f"calibrated: no file {calibrated_path}")
specs = {**variants, **ablations, **({CALIBRATED: calibrated_rule} if calibrated_rule else {})}
kind = {**{v: "stabiliser" for v in variants}, **{v: "ablation" for v in ablations},
        **({CALIBRATED: "calibrated"} if calibrated_rule else {})}
if len({slug(v) for v in specs}) != len(variants) + len(ablations) + bool(calibrated_rule) \
        or {PLAIN, MEMIT} & set(specs):
    raise ValueError(f"stream names {list(variants) + list(ablations)} must differ from {PLAIN!r}, {MEMIT!r}, "
                     f"{CALIBRATED!r} and from each other")


STREAM_KEYS = ("method", "stop_after_edits")  # keys of a stream's entry that are not hyperparameters


def method_of(name: str) -> str:
    return specs[name].get("method", PLAIN)


def overrides_of(name: str) -> dict:
    return {k: v for k, v in specs[name].items() if k not in STREAM_KEYS}


def planned_edits(name: str) -> int:
    """The edits a stream is meant to reach: its own `stop_after_edits`, else the shared setting's."""
    own = specs[name].get("stop_after_edits") if name in specs else None
    return int(own or setting.get("stop_after_edits") or setting["n_edits"])


folders = {v: out / slug(v) / "edit_count" for v in specs}
notebooks = ROOT / "notebooks"
defaults = {k: ast.literal_eval(p["default"])  # edit_count's own parameter defaults: the full stream
            for k, p in papermill.inspect_notebook(str(sync_pair("edit_count", notebooks))).items()}
unknown = sorted(set(stream) - set(defaults))
if unknown:
    raise ValueError(f"stream has parameters {unknown} that edit_count does not know ({sorted(defaults)})")
setting = {**defaults, **stream}


def stream_parameters(variant: str, minutes: float | None) -> dict:
    """The edit_count parameters of one variant, ablation or calibrated stream: the shared `stream`, its one
    method (AlphaEdit unless it names another), its hyperparameters on top of the shared overrides, its own
    results folder (label)."""
    rel = os.path.relpath(Path(results_dir).resolve(), notebooks)  # edit_count runs in notebooks/
    return {**stream, "model": model, "methods": [method_of(variant)],
            "label": f"{model_dir}/collapse/{slug(variant)}",
            "overrides": {**stream.get("overrides", {}), **overrides_of(variant)}, "results_dir": rel, "quick": quick,
            "time_budget_min": minutes,
            **{k: specs[variant][k] for k in STREAM_KEYS if k != "method" and k in specs[variant]}}


print("stream setting:", json.dumps({k: setting[k] for k in ("n_edits", "batch_size", "milestones", "eval_cap",
                                                            "seed")}))
print("plain streams from", reference)
print("calibrated rule:", json.dumps(calibrated_rule) if calibrated_rule else f"none ({calibrated_path} not found)")

# %% [markdown]
# ## The stabilised streams
# Before editing anything, the stream setting is checked against the plain run's `summary.json` (number of edits,
# batch size, milestones, evaluation sample size): a variant of another stream could not be compared record by
# record and would waste hours. Each variant then runs as its own `edit_count` execution, saved with its provenance
# next to its tables in `collapse/<variant>/edit_count/` (the log of this cell is left out of the chapter).
# On two or more cores, `alphaedit_core.study.run_streams_in_lanes` runs the streams in parallel lanes (one thread
# each) by executing the notebook up to this cell with a part of `run_variants` per lane; this chapter then renders
# what they wrote.

# %% tags=["hide-input", "remove-output", "stream-loop"]
plain_summary = json.loads((reference / "summary.json").read_text()) if (reference / "summary.json").exists() else None
if plain_summary is None:
    print(f"no plain run in {reference} yet: the comparisons below need it")
else:
    expected = dict(n_edits=plain_summary["n_edits_planned"], batch_size=plain_summary["batch_size"],
                    milestones=plain_summary["milestones"], eval_cap=plain_summary["eval_cap"])
    mine = dict(n_edits=setting["n_edits"], batch_size=setting["batch_size"],
                milestones=[m for m in setting["milestones"] if m <= setting["n_edits"]], eval_cap=setting["eval_cap"])
    differ = {k: (mine[k], expected[k]) for k in expected if mine[k] != expected[k]}
    if differ:
        raise ValueError(f"the stabilised streams would not be the plain stream of {reference}: "
                         + "; ".join(f"{k} {a} here, {b} there" for k, (a, b) in differ.items())
                         + ". Pass the plain run's parameters as `stream`.")

launched = {}
if run_streams:
    todo = list(specs) if run_variants is None else list(run_variants)
    if set(todo) - set(specs):
        raise ValueError(f"run_variants {sorted(set(todo) - set(specs))} are not among the streams {list(specs)}")
    started = time.time()
    for v in todo:
        left = None if time_budget_min is None else time_budget_min - (time.time() - started) / 60
        if left is not None and left <= 0:
            print(f"{v}: time budget spent, not started (the next execution resumes here)")
            continue
        t0 = time.time()
        run_notebook("edit_count", stream_parameters(v, left), folders[v], notebooks)
        launched[v] = round(time.time() - t0, 1)
        print(f"{v}: edit_count executed in {launched[v] / 60:.1f} min", flush=True)

# %% [markdown]
# ## What each stream wrote
# The plain streams come from the edit-count run, the stabilised ones from their own folders. A stream is compared
# with plain AlphaEdit only if it edited the same records of the same model in the same batches with the same seed
# (`mechanism.stream_mismatch` on the run keys; for tables written before run keys existed, the evaluated case ids).

# %%
def read_table(folder: Path, name: str, method: str) -> pd.DataFrame | None:
    path = folder / f"{name}-{method}.csv"
    return pd.read_csv(path) if path.exists() else None


sources = {PLAIN: (reference, PLAIN), MEMIT: (reference, MEMIT), **{v: (folders[v], method_of(v)) for v in specs}}
streams: dict[str, dict] = {}
for name, (folder, method) in sources.items():
    raw = read_table(folder, "metrics_raw", method)
    if raw is None:
        print(f"{name}: not run yet ({folder})")
        continue
    key = mechanism.run_key_of(raw, f"{folder}/metrics_raw-{method}.csv")
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else {}
    checkpoint = cache_dir("runs", "edit_count") / key / method if key else None
    # the editor's reports live in the checkpoint (this machine's cache); a copy beside the stream's tables keeps
    # them for a machine without it (the plain streams' folder belongs to the edit-count chapter: not written)
    reports, fresh = mechanism.stream_reports(checkpoint, folder / f"reports-{method}.csv")
    if fresh and name in specs:
        reports.to_csv(folder / f"reports-{method}.csv", index=False)
    streams[name] = dict(raw=raw.assign(stream=name), run_key=key, summary=summary, method=method,
                         diag=read_table(folder, "diagnostics", method),
                         cap=read_table(folder, "capability_raw", method),
                         hidden=read_table(folder, "hidden_drift", method), reports=reports)
if PLAIN not in streams:
    raise FileNotFoundError(f"no plain AlphaEdit stream in {reference}: run the edit_count notebook first")
for name, s in streams.items():
    if name == PLAIN:
        continue
    ref = streams[PLAIN]
    if s["run_key"] and ref["run_key"]:
        why = mechanism.stream_mismatch(s["run_key"], ref["run_key"])
        if name in specs and s["run_key"] == ref["run_key"] and s["method"] == PLAIN:
            why = "it has the plain stream's hyperparameters (run key)"
    else:
        why = mechanism.sample_mismatch(s["raw"], ref["raw"])
    if why:
        raise ValueError(f"stream {name!r} is not comparable with the plain AlphaEdit stream of {reference}: {why}. "
                         "Rerun the plain streams on the current data (edit_count) or the variant on theirs.")
present = [v for v in specs if v in streams]  # every variant, ablation and calibrated stream that ran
stabilisers = [v for v in variants if v in streams]  # the ones N1 and C7 are about
order = [s for s in (PLAIN, MEMIT, *specs) if s in streams]
reached = {s: int(streams[s]["raw"].edits.max()) for s in order}


def checkpointed_edits(s: str) -> int | None:
    """Edits in the stream's checkpoint: from its summary.json once its edit_count finished, else from the
    checkpoint's batch reports (a stream still editing)."""
    done = streams[s]["summary"].get("edits_checkpointed", {}).get(streams[s]["method"])
    if done is None and streams[s]["reports"] is not None and len(streams[s]["reports"]):
        done = min(len(streams[s]["reports"]) * setting["batch_size"], setting["n_edits"])
    return None if done is None else int(done)


stream_table = pd.DataFrame([dict(stream=s, kind=kind.get(s, "reference"), method=streams[s]["method"],
                                  hyperparameters=json.dumps(overrides_of(s) if s in specs else {}),
                                  edits_planned=planned_edits(s), edits_evaluated=reached[s],
                                  edits_checkpointed=checkpointed_edits(s),
                                  seconds_this_execution=launched.get(s), run_key=streams[s]["run_key"])
                             for s in order])
stream_table.to_csv(out / "streams.csv", index=False)
unfinished = [s for s in order if reached[s] < planned_edits(s)]
display(Markdown(
    f"**In this build:** {len(order)} streams; "
    + ("every one evaluated to its last milestone." if not unfinished else
       "still editing or stopped early: " + ", ".join(f"{s} (evaluated to {reached[s]:,} of {planned_edits(s):,} "
                                                       "edits)" for s in unfinished) + ".")
    + (f" Not run yet: {', '.join(v for v in specs if v not in streams)}." if set(specs) - set(streams) else "")
    + " Comparisons below use only the milestones each stream has reached."))
shown_streams = stream_table.assign(
    hyperparameters=[", ".join(f"{k}={v}" for k, v in json.loads(h).items()) or "—" for h in stream_table.hyperparameters],
    edits_checkpointed=stream_table.edits_checkpointed.astype("Int64"),
    edits_evaluated=[f"{e:,}" if e else "not yet" for e in stream_table.edits_evaluated],
).drop(columns=["run_key"] + (["seconds_this_execution"] if stream_table.seconds_this_execution.isna().all() else []))
shown_streams.rename(columns={"hyperparameters": "settings (beside the preset)", "edits_planned": "planned",
                              "edits_evaluated": "evaluated to", "edits_checkpointed": "checkpointed",
                              "seconds_this_execution": "seconds, this execution"}).set_index("stream")

# %% [markdown]
# ## The metric families per stream
# Means over the evaluated records with 95% intervals, as in the edit-count chapter; edits = 0 is the unedited model.

# %%
keep = {("official", "rewrite", "efficacy"), ("official", "paraphrase", "generalization"),
        ("official", "neighborhood", "specificity"), ("easyedit", "rewrite", "rewrite_acc"),
        ("easyedit", "paraphrase", "rephrase_acc"), ("easyedit", "neighborhood", "locality"),
        ("generation", "rewrite", "exact_match"), ("official", "generation", "fluency"),
        ("official", "generation", "consistency")}
raw = pd.concat([streams[s]["raw"] for s in order], ignore_index=True)
raw = raw[[k in keep for k in zip(raw.family, raw.prompt_kind, raw.metric)]]
raw.to_csv(out / "metrics_raw.csv", index=False)
by_edits = summarize(raw.drop(columns=["method"], errors="ignore"),
                     by=["stream", "edits", "family", "prompt_kind", "metric"])
by_edits.to_csv(out / "metrics_by_edits.csv", index=False)
by_edits["measure"] = by_edits.family + ": " + by_edits.metric

# %% tags=["hide-input"] mystnb={"figure": {"name": "fig-collapse-accuracy", "caption": "Each measure against the number of sequential edits, for plain AlphaEdit, MEMIT and AlphaEdit with each stabiliser, on the same records (means with 95% intervals). Look at where each stream's edit measures (efficacy, rewrite_acc) bend down, and whether a stabiliser that keeps them up pays in locality or fluency."}, "image": {"alt": "A grid of small line charts, one per measure, each with the number of edits on the horizontal axis and the measure's mean on the vertical axis, one coloured line with markers per stream."}}
g = sns.relplot(by_edits, x="edits", y="mean", hue="stream", hue_order=order, col="measure", col_wrap=3,
                kind="line", marker="o", height=2.6, aspect=1.25, facet_kws=dict(sharey=False))
g.set_titles("{col_name}")
g.figure.savefig(out / "accuracy_vs_edits.png", dpi=120, bbox_inches="tight")

# %% tags=["hide-input", "hide-output"]
by_edits.pivot_table(index=["stream", "edits"], columns="measure", values="mean").round(3).reindex(order, level=0)

# %% [markdown]
# ## Stabilised − plain AlphaEdit, paired on the same records
# At each milestone every stream is scored on the same seeded sample of the records edited so far, so each
# stabiliser is compared with plain AlphaEdit by the per-record difference and its paired bootstrap 95% interval
# (`metrics.paired.paired_differences`). Above zero the stabilised stream is higher; higher is better for every
# measure here. Only milestones (and, for fluency, scorings) that both streams have are paired.

# %%
edited = raw[raw.edits > 0]
group = ["edits", "family", "prompt_kind", "metric"]


def paired_against(names: list[str], reference: str) -> pd.DataFrame:
    """Each stream in `names` minus `reference`, per milestone and measure, on the records both scored."""
    parts = [paired_differences(both, v, reference, by=group, method_col="stream").assign(stream=v)
             for v in names if len(both := mechanism.shared_groups(edited, v, reference, group))]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=[*group, "stream", "n", "n_only_a", "n_only_b", "mean_a", "mean_b", "diff", "ci_low", "ci_high"])


SHOWN = ["official: efficacy", "official: generalization", "official: specificity", "easyedit: rewrite_acc",
         "easyedit: locality"]  # the measures of the paired tables on the page (the CSV files keep every one)


def intervals(table: pd.DataFrame) -> pd.DataFrame:
    """A paired table as "diff [low, high]" per stream and milestone (rows) and the main measures (columns)."""
    wide = table.assign(measure=table.family + ": " + table.metric,
                        interval=[f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi in
                                  zip(table["diff"], table.ci_low, table.ci_high)]) \
        .pivot_table(index=["stream", "edits"], columns="measure", values="interval", aggfunc="first")
    return wide[[c for c in SHOWN if c in wide.columns]]


paired = paired_against(present, PLAIN)
paired.to_csv(out / "paired_vs_plain.csv", index=False)
if len(paired):
    display(intervals(paired))

# %% tags=["hide-input"] mystnb={"figure": {"name": "fig-collapse-paired", "caption": "Each stabiliser, ablation and calibrated stream minus plain AlphaEdit on the same evaluated records, at each milestone, with paired bootstrap 95% intervals; one panel per measure, one line per stream, zero line = no difference. Look at the late milestones of the edit measures: a stabiliser that postpones the collapse sits above zero there, and the neighbourhood measures show what it costs."}, "image": {"alt": "A grid of small charts, one per measure, with the number of edits on the horizontal axis and the paired difference (stabilised minus plain) on the vertical axis, one line with error bars per stabiliser and a horizontal line at zero."}}
if len(paired):
    fig = plot_paired_differences(paired, panel=("family", "metric"), hue="stream", a="stabilised",
                                  b="plain AlphaEdit")
    fig.savefig(out / "paired_vs_plain.png", dpi=120, bbox_inches="tight")
else:
    print("no stabilised stream evaluated yet")

# %% [markdown]
# ## Against MEMIT: where AlphaEdit's advantage comes from
# Plain AlphaEdit, the two ablations and the calibrated stream, each minus MEMIT on the same records at each
# milestone (paired bootstrap 95% intervals). If P is what keeps AlphaEdit's edits alive, **p-identity** loses
# AlphaEdit's advantage in the edit measures; if the remembered keys are, **no-cache** does. The calibrated stream
# answers whether a protecting P buys the preservation advantage (specificity, locality) the paper reports, and at
# what cost in efficacy.

# %% tags=["hide-input"]
versus = [s for s in (PLAIN, *present) if s == PLAIN or kind[s] != "stabiliser"]
vs_memit = paired_against(versus, MEMIT)
vs_memit.to_csv(out / "paired_vs_memit.csv", index=False)
versus_memit = [dict(stream=r.stream, edits=int(r.edits), metric=r.metric, diff=round(float(r["diff"]), 4),
                     ci_low=round(float(r.ci_low), 4), ci_high=round(float(r.ci_high), 4), n=int(r.n))
                for _, r in vs_memit.iterrows() if r.metric in ("efficacy", "specificity", "rewrite_acc", "locality")]
if len(vs_memit) and len(versus) > 1:
    display(intervals(vs_memit).reindex(versus, level=0))
else:
    print("no ablation or calibrated stream evaluated yet")

# %% [markdown]
# ## The mechanism: norm growth, target shift, conditioning, drift
# Per batch (diagnostics of each stream, and the editor's reports in its checkpoint): ‖W − W⁰‖/‖W⁰‖ of each edited
# layer, the mean ‖z − h0‖ of the batch's targets (how far each target asks the layer's output to move; after
# anchoring for NAS), the condition number of the solved system, the drift of the edited layers' outputs on held-out
# preserved keys, the Adam steps per request and the seconds per batch. At the milestones also the hidden-state
# distance from the unedited model on held-out text. `target_shift` is NaN for a stream whose diagnostics and
# checkpoint predate its recording.

# %% tags=["hide-input", "hide-output"]
diag = pd.concat([s["diag"].assign(stream=n) for n, s in streams.items() if s["diag"] is not None], ignore_index=True)
diag = diag.drop_duplicates(["stream", "batch", "layer"], keep="last")
reports = [s["reports"].assign(stream=n) for n, s in streams.items() if s["reports"] is not None and len(s["reports"])]
batches = mechanism.per_batch(diag, pd.concat(reports, ignore_index=True) if reports else None)
batches.to_csv(out / "mechanism_by_batch.csv", index=False)
diag.to_csv(out / "diagnostics.csv", index=False)
milestones = sorted(set(diag.edits) & set(raw.edits[raw.edits > 0]))
mech = mechanism.at_milestones(diag, batches, milestones)
mech.to_csv(out / "mechanism.csv", index=False)
last_layer = {n: int(g.layer.max()) for n, g in diag.groupby("stream")}
hidden = [s["hidden"].assign(stream=n) for n, s in streams.items() if s["hidden"] is not None]
hidden_by_edits = (pd.concat(hidden).groupby(["stream", "edits", "layer"]).relative_distance.mean().reset_index()
                   if hidden else pd.DataFrame(columns=["stream", "edits", "layer", "relative_distance"]))
hidden_by_edits.to_csv(out / "hidden_drift_by_edits.csv", index=False)
mech.pivot_table(index=["stream", "edits"], columns="layer", values="relative_change").round(3).reindex(order, level=0)

# %% tags=["hide-input", "hide-output"]
mech.drop_duplicates(["stream", "edits"]).set_index(["stream", "edits"])[
    ["target_shift", "target_shift_mean", "target_steps_mean", "seconds_per_batch"]].round(3).reindex(order, level=0)

# %% tags=["hide-input", "hide-output"]
mech.pivot_table(index=["stream", "edits"], columns="layer", values=["condition", "drift"]).round(3).reindex(
    order, level=0)

# %% [markdown]
# Held-out text at the milestones: the distance of the hidden states from the unedited model's (‖h − h⁰‖/‖h⁰‖,
# mean over tokens, at the last edited, middle and last layer) and the perplexity on each held-out source.

# %% tags=["hide-input", "hide-output"]
if len(hidden_by_edits):
    display(hidden_by_edits.pivot_table(index=["stream", "edits"], columns="layer", values="relative_distance")
            .round(4).reindex(order, level=0))
cap = [s["cap"].assign(stream=n) for n, s in streams.items() if s["cap"] is not None]
if cap:
    cap = pd.concat(cap, ignore_index=True).drop_duplicates(["stream", "edits", "corpus", "window"], keep="last")
    ppl = (cap.groupby(["stream", "edits", "corpus"])[["nll_sum", "tokens"]].sum()
           .assign(perplexity=lambda t: (t.nll_sum / t.tokens).map(math.exp)).reset_index())
    ppl.to_csv(out / "perplexity.csv", index=False)
    display(ppl.pivot_table(index=["stream", "edits"], columns="corpus", values="perplexity").round(3).reindex(
        order, level=0))

# %% tags=["hide-input"] mystnb={"figure": {"name": "fig-collapse-norm-growth", "caption": "Norm growth and the collapse. **Left:** \u2016W \u2212 W\u2070\u2016/\u2016W\u2070\u2016 of the last edited layer after each batch, per stream. **Middle:** mean \u2016z \u2212 h0\u2016 of each batch's targets. **Right:** rewrite_acc at each milestone against the norm at that milestone, one path per stream (edits increase along the path). Look at whether the streams that grow less keep their accuracy longer, and whether, at equal norm, the streams lose the same accuracy."}, "image": {"alt": "Three charts side by side. Left: relative weight change against the number of edits, one line per stream. Middle: mean target shift against the number of edits, one line per stream. Right: rewrite accuracy against relative weight change, one path with markers per stream."}}
last_rows = diag[diag.layer == diag.stream.map(last_layer)]
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
sns.lineplot(last_rows, x="edits", y="relative_change", hue="stream", hue_order=order, ax=axes[0], legend=False)
axes[0].set(title="‖W − W⁰‖ / ‖W⁰‖, last edited layer", yscale="log")
shift = batches.dropna(subset=["target_shift"])
if len(shift):
    sns.lineplot(shift, x="edits", y="target_shift", hue="stream", hue_order=order, ax=axes[1], legend=False)
axes[1].set(title="mean ‖z − h0‖ of the batch")
acc = by_edits[(by_edits.metric == "rewrite_acc") & (by_edits.edits > 0)][["stream", "edits", "mean"]]
path = acc.merge(last_rows[["stream", "edits", "relative_change"]], on=["stream", "edits"])
sns.lineplot(path, x="relative_change", y="mean", hue="stream", hue_order=order, sort=False, marker="o", ax=axes[2],
             estimator=None)
axes[2].set(title="rewrite_acc against the norm", xlabel="‖W − W⁰‖ / ‖W⁰‖", ylabel="EasyEdit rewrite_acc")
sns.move_legend(axes[2], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
fig.tight_layout()
fig.savefig(out / "norm_growth.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# **What the figure shows, in numbers.** At each milestone from 1,000 edits that several streams reached, the
# streams ordered by ‖W − W⁰‖/‖W⁰‖ of their last edited layer, each with the change of its rewrite_acc / efficacy
# in points since its own first milestone. Whether the larger norms go with the larger losses across the stabilised
# AlphaEdit streams is N1's "tracks" (the ablations and MEMIT are listed for scale; the rule does not count them).

# %% tags=["hide-input"]
def loss_since_first(stream: str, metric: str, at: int) -> float:
    rows = by_edits[(by_edits.stream == stream) & (by_edits.metric == metric) & (by_edits.edits > 0)]
    rows = rows.set_index("edits")["mean"]
    return float(rows.get(at, math.nan) - rows.iloc[0]) if len(rows) else math.nan


norm_at = last_rows.set_index(["stream", "edits"]).relative_change
lines = []
for at in [m for m in (1000, 2000) if m in set(milestones)]:
    there = [s for s in order if (s, at) in norm_at.index and reached[s] >= at]
    if len(there) < 3:
        continue
    there.sort(key=lambda s: norm_at[(s, at)])
    lines.append(f"- **{at:,} edits**, smallest norm first: " + "; ".join(
        f"{s} {norm_at[(s, at)]:.2f} ({100 * loss_since_first(s, 'rewrite_acc', at):+.1f} / "
        f"{100 * loss_since_first(s, 'efficacy', at):+.1f})" for s in there) + ".")
display(Markdown("\n".join(lines) if lines else "Fewer than three streams share a milestone from 1,000 edits on."))

# %% [markdown]
# ## At a matched norm: is it the norm, or the over-optimised targets?
# Early stopping (mpes) bounds the norm by asking less of each target; the norm penalty (norm) bounds it in the solve
# while every target is optimised as far as plain AlphaEdit's. Where the two leave the last edited layer about
# equally far from its original (the norms below), their paired difference on the same records says what the way of
# bounding adds at that norm: zero if the norm alone sets what survives, above zero for mpes if the over-optimised
# targets do harm of their own.

# %% tags=["hide-input"]
pairs = [(a, b) for a, b in matched if a in streams and b in streams]
versus_matched = pd.concat([paired_against([a], b).assign(reference=b) for a, b in pairs], ignore_index=True) \
    if pairs else pd.DataFrame(columns=["stream", "reference", *group, "n", "diff", "ci_low", "ci_high"])
versus_matched.to_csv(out / "paired_matched_norm.csv", index=False)
if len(versus_matched):
    for a, b in pairs:
        both = [e for e in milestones if (a, e) in norm_at.index and (b, e) in norm_at.index]
        display(Markdown(f"**{a} − {b}**, paired. ‖W − W⁰‖/‖W⁰‖ of the last edited layer ({a} / {b}): "
                         + "; ".join(f"{e:,} edits {norm_at[(a, e)]:.2f} / {norm_at[(b, e)]:.2f}" for e in both)
                         + "."))
        display(intervals(versus_matched[versus_matched.reference == b]).loc[[a]])
else:
    display(Markdown("No matched pair of streams evaluated yet."))

# %% [markdown]
# ## Does the value vector grow? Norm-Anchor Scaling's premise
# NAS rescales each solved value vector v* = v0 + (z − h0) to the norm of those solved on the unedited model, on the
# premise that along a long stream v* and the edited weights amplify each other. Whether v* grows is measured without
# editing: the same probe requests (records the stream never edits, about none of its subjects) get their targets
# optimised with a stream's hyperparameters on the unedited model and on each of its milestone snapshots
# (`alphaedit_core/value_norms.py`); on the anchor stream this is v* *before* NAS rescales it. The table gives the
# probes' mean ‖v0‖ (the last edited layer's MLP output at the subject's last token, before the edit), ‖z − h0‖ (the
# change their target asks), ‖v*‖, and the mean ratio of each probe's ‖v*‖ to its own on the unedited model. Each
# milestone is computed once and cached beside the stream's checkpoints; a stream whose snapshots are not in this
# machine's cache is listed as not measured.

# %% tags=["hide-input"]
from alphaedit_core import runs
from alphaedit_core.checkpoint import snapshot_path
from alphaedit_core.value_norms import probe_records, value_norm_summary, value_norms


def value_norm_context() -> dict:
    """The model, tokenizer and probe requests, loaded once (only when a milestone is not cached yet)."""
    if "lm" not in vn_context:
        import torch

        from alphaedit_core.data import load_offline_counterfact, to_requests
        from alphaedit_core.models import load_model

        torch.manual_seed(setting["seed"])
        vn_context["lm"], vn_context["tok"] = load_model(model)
        edited = load_offline_counterfact(n=setting["n_edits"], seed=setting["seed"])
        vn_context["probes"] = to_requests(probe_records(load_offline_counterfact(), edited, value_norm_probes))
    return vn_context


def stream_editor(name: str):
    """An editor with the stream's method and hyperparameters (its snapshots are checked against it)."""
    if name not in vn_editors:
        from alphaedit_core.editor import Editor
        from alphaedit_core.hparams import EditHParams

        ctx = value_norm_context()
        extra = {} if name == PLAIN else overrides_of(name)
        hp = EditHParams.load(setting["hparams"] or model, **{**setting["overrides"], **extra})
        vn_editors[name] = Editor.prepare(ctx["lm"], ctx["tok"], hp, method=streams[name]["method"], progress=False)
    return vn_editors[name]


vn_context, vn_editors, vn_rows, vn_missing = {}, {}, [], []
for name in value_norm_streams if value_norm_probes else []:
    key = streams.get(name, {}).get("run_key")
    run = cache_dir("runs", "edit_count") / key / streams[name]["method"] if key else None
    snaps = {m: snapshot_path(run, m) for m in milestones if run and snapshot_path(run, m).exists()}
    if not snaps:
        vn_missing.append(name)
        continue
    for m, path in {0: None, **snaps}.items():
        folder = cache_dir("runs", "value-norms", f"{key}-p{value_norm_probes}", f"edits-{m:06d}")
        rows = runs.cached_tables(folder, ["value_norms"], lambda path=path, m=m, name=name: (value_norms(
            stream_editor(name), value_norm_context()["probes"], {m: path}, progress=False),))[0]
        vn_rows.append(rows.assign(stream=name))
if vn_rows:
    value_rows = pd.concat(vn_rows, ignore_index=True)
    value_rows.to_csv(out / "value_norms.csv", index=False)
    value_summary = pd.concat([value_norm_summary(g).assign(stream=n) for n, g in value_rows.groupby("stream")])
    value_summary.to_csv(out / "value_norms_summary.csv", index=False)
    display(value_summary.rename(columns={"v0_norm": "‖v0‖", "shift_norm": "‖z − h0‖", "value_norm": "‖v*‖",
                                          "value_ratio": "‖v*‖ / unedited", "target_steps": "Adam steps"})
            .set_index(["stream", "edits"]).round(3).reindex([s for s in order if s in set(value_rows.stream)],
                                                             level=0))
    growth = []
    for name, g in value_summary.groupby("stream"):
        first, last = g.set_index("edits").sort_index().iloc[[0, -1]].itertuples()
        growth.append(f"- **{name}**, {last.Index:,} edits against the unedited model: ‖v*‖ ×{last.value_ratio:.2f}, "
                      f"‖v0‖ ×{last.v0_norm / first.v0_norm:.2f}, ‖z − h0‖ ×{last.shift_norm / first.shift_norm:.2f}.")
    display(Markdown("\n".join(growth)))
if vn_missing or not vn_rows:
    display(Markdown("Not measured: " + ("`value_norm_probes` is 0." if not value_norm_probes else
                                         ", ".join(("plain AlphaEdit" if n == PLAIN else n)
                                                   for n in (vn_missing or value_norm_streams))
                                         + " (the stream's milestone snapshots are not in this machine's cache).")))

# %% [markdown]
# ## Where each stream's collapse begins
# As in the edit-count chapter (`verdicts.onsets`): for each stream and measure the first milestone more than 10
# points below the stream's first milestone ("drop") and the first below half of it ("collapse"), shown as
# "drop / collapse" for the main measures, with — where the stream never got there (up to the milestone it was
# evaluated to).

# %%
onset = pd.DataFrame([dict(stream=s, measure=m, **onsets(dict(zip(g.edits, g["mean"]))))
                      for (s, m), g in by_edits[by_edits.edits > 0].groupby(["stream", "measure"])])
onset.to_csv(out / "onsets.csv", index=False)
shown_onset = onset[onset.measure.isin(SHOWN)].assign(
    at=lambda t: [" / ".join("—" if pd.isna(x) else f"{int(x):,}" for x in (d, c))
                  for d, c in zip(t["drop"], t["collapse"])])
shown_onset = shown_onset.pivot_table(index="stream", columns="measure", values="at", aggfunc="first")
shown_onset = shown_onset.reindex(order)[[c for c in SHOWN if c in shown_onset.columns]]
shown_onset = shown_onset.fillna("not evaluated yet")  # a stream with only its unedited scores
shown_onset.insert(0, "evaluated to", [f"{reached[s]:,}" for s in shown_onset.index])
shown_onset  # drop / collapse milestone per measure (— : not reached); the CSV file has every measure

# %% tags=["hide-input"] mystnb={"figure": {"name": "fig-collapse-onset", "caption": "Collapse onset per stream: the bar spans the milestones each stream was evaluated at, the triangle marks the first drop of more than 10 points below its first milestone and the cross the first fall below half of it. Look at whether the stabilised streams' markers sit right of plain AlphaEdit's, or are absent."}, "image": {"alt": "Two panels (efficacy and rewrite accuracy) with the number of edits on the horizontal axis and one row per stream: a grey horizontal bar over the evaluated milestones, a triangle at the drop and a cross at the collapse."}}
panels = ["official: efficacy", "easyedit: rewrite_acc"]
fig, axes = plt.subplots(1, len(panels), figsize=(11, 0.5 * len(order) + 1.6), sharey=True)
for ax, measure in zip(axes, panels):
    sub = onset[onset.measure == measure].set_index("stream")
    for y, s in enumerate(order):
        if s not in sub.index:
            continue
        r = sub.loc[s]
        ax.plot([r["first"], r["last"]], [y, y], color="0.8", lw=6, solid_capstyle="butt")
        if pd.notna(r["drop"]):
            ax.plot(r["drop"], y, "v", color="tab:orange", ms=9, label="drop")
        if pd.notna(r["collapse"]):
            ax.plot(r["collapse"], y, "X", color="tab:red", ms=9, label="collapse")
    ax.set(title=measure, xlabel="edits", yticks=range(len(order)), yticklabels=order)
axes[0].invert_yaxis()  # plain AlphaEdit on top (the axes share y)
handles = {l.get_label(): l for ax in axes for l in ax.lines if l.get_label() in ("drop", "collapse")}
if handles:
    axes[-1].legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
fig.tight_layout()
fig.savefig(out / "onsets.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Cost of each stream
# Mean seconds per batch and per edit, mean Adam steps per request and seconds of the target optimisation per
# batch, total hours, and the change against plain AlphaEdit (negative: saved). Steps compare across machines;
# seconds only between streams run on the same machine under the same load (the plain streams may have run at
# another time, beside other work). A dash: not recorded (the plain streams' batches predate the separate timing of
# the target optimisation).

# %%
cost = mechanism.cost_table(batches[batches.stream.isin(order)], reference=PLAIN)
cost.to_csv(out / "cost.csv", index=False)
cost.set_index("stream")[["edits", "hours", "seconds_per_batch", "seconds_targets_per_batch", "adam_steps",
                          "steps_vs_reference", "seconds_vs_reference"]].rename(columns={
    "seconds_per_batch": "s per batch", "seconds_targets_per_batch": "targets, s per batch",
    "adam_steps": "Adam steps", "steps_vs_reference": "steps vs plain", "seconds_vs_reference": "seconds vs plain"}
).round(2).astype(object).fillna("—")  # —: not recorded (the plain streams predate the per-part timing)

# %% [markdown]
# ## Closing table
# Each stabiliser at the milestones of `report_at`: efficacy, specificity and EasyEdit locality (stabilised − plain
# AlphaEdit, paired 95% interval) and ‖W − W⁰‖/‖W⁰‖ of the last edited layer (stabilised / plain).

# %%
rows = []
for v in present:
    for m in [m for m in report_at if m in milestones and m <= reached[v]]:
        row = dict(stream=v, edits=m)
        for metric in ("efficacy", "specificity", "locality"):
            p = paired[(paired.stream == v) & (paired.edits == m) & (paired.metric == metric)]
            if len(p):
                p = p.iloc[0]
                row[metric] = f"{p['mean_a']:.3f} ({p['diff']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}])"
        norm = {s: last_rows[(last_rows.stream == s) & (last_rows.edits == m)].relative_change for s in (v, PLAIN)}
        if all(len(x) for x in norm.values()):
            row["norm, last layer"] = f"{norm[v].iloc[0]:.3g} (×{norm[v].iloc[0] / norm[PLAIN].iloc[0]:.2f})"
        rows.append(row)
closing = pd.DataFrame(rows, columns=["stream", "edits", "efficacy", "specificity", "locality", "norm, last layer"])
closing.to_csv(out / "closing.csv", index=False)
if len(closing):
    display(closing.set_index(["stream", "edits"]))
else:
    display(Markdown(f"No stream beside the plain ones has reached a milestone of `report_at` ({report_at}) yet."))

# %% [markdown]
# ## Verdicts
# The rules are in `alphaedit_core/verdicts.py` (`norm_mechanism`, `n1_norm_growth`, `c7_why`); this cell only
# feeds them each stream's efficacy and rewrite_acc and its norm at the last edited layer at the milestones. In
# short: the norm must grow (×2 or more over the plain stream), the collapse must track it at equal edits (the
# streams with more growth have lost more since their first milestone: mean Spearman ρ ≤ −0.5 across the AlphaEdit
# streams at each milestone from 1,000 edits), and a stabiliser that bounds the norm (to ≤ 0.75 of plain's) without
# editing worse at the start must reach plain AlphaEdit's onset later. MEMIT is quoted beside them, not pooled.
# Verdicts: all three → reproduced; tracking or postponement → partly reproduced; neither → not reproduced; not
# testable here until plain AlphaEdit and a stabilised stream have reached 1,000 edits and the planned number.
#
# The calibrated stream's question (`calibrated_preservation`) is decided at its last milestone, once it has reached
# the planned number of edits: against MEMIT, specificity better with locality not worse is the paper's preservation
# advantage ("yes", or "yes, at a cost in efficacy" when its efficacy is below MEMIT's); specificity or locality
# better alone → "partly"; neither → "no". Its efficacy minus plain AlphaEdit's is the cost of calibrating.
#
# Where the durability comes from (`stability_source`): each ablation, once it has reached its planned edits, is
# paired with plain AlphaEdit at its last milestone; the part it removes (cache_c for **no-cache**, P for
# **p-identity**) is *needed* when efficacy or rewrite_acc is worse without it, *not needed* when neither is.

# %%
def series(stream_name: str, family: str, metric: str) -> dict[int, float]:
    s = by_edits[(by_edits.stream == stream_name) & (by_edits.family == family) & (by_edits.metric == metric)]
    return {int(e): float(v) for e, v in zip(s.edits, s["mean"]) if e > 0}


scores = {"efficacy": {s: series(s, "official", "efficacy") for s in order},
          "rewrite_acc": {s: series(s, "easyedit", "rewrite_acc") for s in order}}
assert set(scores) == set(FAMILIES)
norms = {s: {int(e): float(r) for e, r in zip(g.edits, g.relative_change) if e in milestones}
         for s, g in last_rows.groupby("stream")}
n_planned = plain_summary["n_edits_planned"] if plain_summary else setting["n_edits"]
claims = {"N1": n1_norm_growth(scores, norms, n_planned, stabilisers)}
rank = norm_mechanism(scores, norms, n_planned, stabilisers)  # N1's "tracks", kept as a table for the book
pd.DataFrame(rank.get("rhos") or [], columns=["family", "edits", "rho"]).to_csv(out / "norm_rank.csv", index=False)
why = {"C7": c7_why(scores, norms, n_planned, stabilisers)}
for a, b in pairs if claims["N1"]["verdict"] != "not testable here" else []:  # the matched-norm pair qualifies N1
    rows_ab = versus_matched[(versus_matched.stream == a) & (versus_matched.reference == b)]
    at = int(rows_ab.edits.max()) if len(rows_ab) else 0
    if not at or (PLAIN, at) not in norm_at.index:
        continue
    picked = [g.iloc[0] for f, m in (("official", "efficacy"), ("easyedit", "locality"), ("easyedit", "rewrite_acc"))
              if len(g := rows_ab[(rows_ab.edits == at) & (rows_ab.family == f) & (rows_ab.metric == m)])]
    text = "; ".join(f"{r.metric} {100 * r['diff']:+.1f} [{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]"
                     for r in picked)
    ahead = [who for who, won in ((a, any(r.ci_low > 0 for r in picked)), (b, any(r.ci_high < 0 for r in picked)))
             if won]
    ratio = {x: norm_at[(x, at)] / norm_at[(PLAIN, at)] for x in (a, b)}
    claims["N1"]["evidence"] += (
        f" At a matched norm ({a} ×{ratio[a]:.2f}, {b} ×{ratio[b]:.2f} of plain at {at:,} edits), "
        f"{a} − {b} paired, points: {text}: "
        + (f"how the norm is bounded matters beyond the norm itself ({' and '.join(ahead)} ahead in some measure)."
           if ahead else "no difference beyond the norm itself."))


def last_rows_of(table: pd.DataFrame, stream_name: str,
                 judged=(("official", "efficacy"), ("official", "specificity"), ("easyedit", "locality"))
                 ) -> tuple[int, dict[str, dict]]:
    """The stream's paired rows at its last paired milestone, keyed by metric (`judged`: (family, metric) pairs;
    by default official efficacy and specificity, EasyEdit locality)."""
    judged = set(judged)
    t = table[(table.stream == stream_name) & pd.Series([k in judged for k in zip(table.family, table.metric)],
                                                        index=table.index, dtype=bool)]
    if not len(t):
        return 0, {}
    at = int(t.edits.max())
    return at, {r.metric: dict(diff=r["diff"], ci_low=r.ci_low, ci_high=r.ci_high)
                for _, r in t[t.edits == at].iterrows()}


if CALIBRATED in streams:
    at, calibrated_vs_memit = last_rows_of(vs_memit, CALIBRATED)
    at_plain, calibrated_vs_plain = last_rows_of(paired, CALIBRATED)
    why["calibrated"] = calibrated_preservation(calibrated_vs_memit, calibrated_vs_plain, min(at, at_plain), n_planned)
    why["calibrated"]["edits"] = min(at, at_plain)  # what the answer was tested with (the ledger shows it)
stability_rows, stability_reached = {}, {}
for v in (v for v in ablations if v in streams):
    stability_reached[v], stability_rows[v] = last_rows_of(paired, v, judged=(
        ("official", "efficacy"), ("easyedit", "rewrite_acc"), ("official", "specificity"), ("easyedit", "locality")))
why["stability"] = stability_source(stability_rows, stability_reached,
                                    {v: a.get("stop_after_edits") or n_planned for v, a in ablations.items()})
why["stability"]["edits"] = max(stability_reached.values(), default=0)
summary = dict(model=model_dir, notebook="collapse",
               n_edits=min(reached[s] for s in [PLAIN, *stabilisers]) if stabilisers else 0, n_edits_planned=n_planned,
               edits_evaluated=reached, quick=quick, variants={v: variants[v] for v in stabilisers},
               ablations={v: ablations[v] for v in present if kind[v] == "ablation"},
               calibrated=dict(rule=calibrated_rule, source=str(calibrated_path), ran=CALIBRATED in streams)
               if calibrated_rule else None, versus_memit=versus_memit,
               not_run=[v for v in specs if v not in streams], run_keys={s: streams[s]["run_key"] for s in order},
               stream_setting={k: setting[k] for k in ("n_edits", "batch_size", "milestones", "eval_cap", "seed")},
               cost=cost.astype(object).where(cost.notna(), None).to_dict("records"), claims=claims, why=why)
(out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
titles = {"C7": "C7, why", "calibrated": "The calibrated P", "stability": "Where the durability comes from"}
display(Markdown("\n".join(
    [f"- **{cid}**: *{c['verdict']}*. {c['evidence']}" for cid, c in claims.items()]
    + [f"- **{titles.get(k, k)}** ({w['question']}): *{w['answer']}*. {w['evidence']}" for k, w in why.items()])))
