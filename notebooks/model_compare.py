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
# # Across models: scale, family and the projector (C8, C10; C1 and C5 per model)
#
# **C8** LLaMA3-8B does best and keeps high accuracy after 2,000 sequential edits; LLaMA2-7B drops clearly and
# needs careful tuning. **C10** Families differ (Qwen vs LLaMA); non-LLaMA models need their own tuning. **C1**
# (across models) P is built from each model's own statistics. **C5** (per model) check P before editing.
#
# Neither LLaMA3-8B nor LLaMA2-7B installs offline, so C8 is read here *inside one family*: Qwen2.5-Coder-0.5B vs
# 1.5B, same generation, same training recipe, three times the parameters. That tests "does a larger model of the
# same family edit better and hold longer?", not "does a newer generation (LLaMA3 vs LLaMA2, more data, another
# tokenizer) hold longer?"; and it tests it over the edits both models reached (a few hundred), not 2,000. C10 is
# read across the three families installed offline: LLaMA (SmolLM2-135M-Instruct), Gemma (Gemma-3-270M, a *base*
# model) and Qwen (Qwen2.5-Coder, instruct). One model per family: family, size, instruction tuning and
# quantisation noise (the weights are dequantised GGUF files) go together, and the chapter says so where it matters.
#
# This chapter measures nothing. Each model's numbers come from the study's own notebooks run once per model
# (`projection_check` for P, `edit_count` for the stream of AlphaEdit and MEMIT edits) into `results/<model>/`, each
# with the preset derived for that model by the documented rule (`alphaedit_core/presets/`). Every model runs with two
# projector rules, so that a model effect can be told from a mis-set P: the **official** absolute threshold
# (eigenvalue < 0.02, whatever the scale of the model's keys) and a **calibrated** rule (keep the smallest directions
# holding a fixed share of the keys' energy, the same share on every model), AlphaEdit only for the latter (MEMIT has
# no P). The decision rules are pure functions in `alphaedit_core/compare.py`, pinned by
# `tests/test_model_compare.py`.

# %% tags=["parameters"]
models = ["smollm2-135m-instruct", "gemma3-270m", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
labels = {}  # model -> {rule: results folder name}; missing: <model> (official P) and <model>-calibrated
families = {}  # model -> family; missing: alphaedit_core.compare.MODELS (models outside it: the model's name)
rules = ["official", "calibrated"]
scale_pair = ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]  # C8: smaller, larger (one family)
reference_family = "LLaMA"  # C10: the family the paper's settings come from
default_model = "smollm2-135m-instruct"  # whose operating_points/calibrated.json carries across models
lambda_checks = "../benchmarks/results"  # where benchmarks/memit_lambda_check.py left memit_lambda-<model>.csv
preset_arms = {"gemma3-270m": dict(label="gemma3-270m-vlr0.5", setting="v_lr 0.5 (the family's)")}  # a model's
# run with the preset before the rule's v_lr amendment (official P, AlphaEdit), paired with its current run
label = "across-models"  # this chapter writes results/<label>/model_compare/
results_dir = "../results"
n_boot = 2000  # bootstrap resamples of the paired intervals
seed = 0
quick = False

# %% tags=["hide-input"]
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from alphaedit_core import compare
from alphaedit_core.compare import (EDIT_MEASURES, KEEP_MEASURES, MODELS, c1_across, c8_scale, c10_families,
                                    combine_rules, common_milestones, first_last, long_frame, paired_rows,
                                    read_projection, read_run, run_cost, same_records, summarize_runs)

root = Path(results_dir)
out = root / label / "model_compare"
out.mkdir(parents=True, exist_ok=True)
sns.set_theme(style="whitegrid")


def panel_grid(panels: list[str], height: float):
    """Five (or fewer) panels in two rows of three, the last place kept for the legend: legible in the book."""
    fig, grid = plt.subplots(2, 3, figsize=(10, height))
    return fig, grid, grid.flat[: len(panels)], grid.flat[-1]


def edits_axis(ax, ticks) -> None:
    """A logarithmic edits axis labelled at `ticks` with plain numbers."""
    ax.set(xscale="log", xlabel="edits")
    ax.set_xticks(list(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelrotation=45)


def finish_grid(fig, grid, axes, legend_ax, ylabel: str, name: str) -> None:
    """Y labels on the left column, the first panel's legend in the spare place, saved as `out / name`."""
    for ax in grid[:, 0]:
        ax.set_ylabel(ylabel)
    legend_ax.axis("off")
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        legend_ax.legend(handles, names, loc="center left", fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(out / name, dpi=120, bbox_inches="tight")


family = {m: families.get(m) or MODELS.get(m, {}).get("family") or m for m in models}
runs = {(m, r): read_run(root, m, r, labels.get(m, {}).get(r)) for m in models for r in rules}
present = [run for run in runs.values() if run.raw is not None]
status = pd.DataFrame([dict(model=run.model, family=family[run.model], rule=run.rule, folder=f"results/{run.label}/",
                            status=run.status, **{f"{meth} milestones": ", ".join(map(str, run.reached.get(meth, [])))
                                                  for meth in ("alphaedit", "memit")},
                            notes="; ".join(run.notes))
                       for run in runs.values()])
status.to_csv(out / "runs.csv", index=False)
not_run = sorted({f"{run.model} ({run.rule} P)" + (", failed" if run.status == "failed" else "")
                  for run in runs.values() if run.status in ("not run yet", "failed")})
display(Markdown(f"**Runs found** under `{root}`: {len(present)} of {len(runs)}. "
                 + (f"Not run yet: {', '.join(not_run)}." if not_run else "Every run has results.")))
shown = status[status.status != "not run yet"]
display(shown.assign(model=shown.model + " (" + shown.family + ")")
        .drop(columns=["family", "folder", "notes"])
        .rename(columns={"status": "Status", "alphaedit milestones": "AlphaEdit milestones",
                         "memit milestones": "MEMIT milestones"})
        .set_index(["model", "rule"]).rename_axis(["Model (family)", "P rule"]))
notes = [f"- **{row.model}, {row.rule} P** (`{row.folder}`): {row.notes}" for row in shown.itertuples() if row.notes]
if notes:  # in full here: a table cell would cut them
    display(Markdown("\n".join(notes)))

# %% [markdown]
# ## How each model's results are made
# One command per model and P rule, from the repository root; it runs `projection_check` (the official P; the
# calibrated P once `projection_check` builds P with `nullspace_mode`) and then `edit_count` into `results/<label>/`,
# and resumes where it stopped (checkpoints after every batch, snapshots at every milestone). Every model edits the
# first records of the default model's 2,000-edit stream (same seed, same records in the same order) and is scored at
# edit_count's milestones (100, 200, 500, 1,000, 1,500, 2,000) up to its size, on the same seeded samples of the
# records edited so far. The Qwen-1.5B stream draws 400 records and stops at 200 (edit_count's `stop_after_edits`;
# where edit_count lacks that parameter the runner says so, and the stream is stopped by hand once milestone 200 is
# written): a stream drawn with fewer than 342 records is not a prefix of the 2,000-edit stream (Python's
# `random.sample` changes algorithm below that). The slower models score fluency on fewer records (`fluency_cap` 20,
# 20 and 10 instead of 50; the first records of the same sample, so fluency is still paired on common records).
# The calibrated rule's energy share comes from the operating-points chapter (`results/<model>/operating_points/
# calibrated.json`, else the default model's), else from the documented default of 1% of tr C; the table says which.
#
# The estimates are for two quiet cores (hours; editing from the seconds per edit and method measured on SmolLM2
# and Qwen-0.5B, Gemma and Qwen-1.5B scaled by their forward throughput: `compare.MODELS`; plus the covariance
# statistics and the unedited model's scores once per model, and the evaluation at every milestone). `--jobs 2` runs AlphaEdit and MEMIT in two
# processes of one thread each. When every run is there, `python -m alphaedit_core.compare chapters` re-executes
# this chapter and the Instruct-vs-Base one.

# %% tags=["hide-input"]
plans = []
for m in models:
    for r in rules:
        p = compare.plan(m, r, root)
        n_methods = len(p["edit_count"].get("methods", ["alphaedit", "memit"]))
        shared = compare.shared_stream(root, m, r)
        hours = compare.run_hours(m, r, p, shared)  # only projection_check's where another chapter edits the stream
        plans.append(dict(model=m, rule=r, status=runs[(m, r)].status, edits=p["edits"],
                          stream=p["edit_count"]["n_edits"], methods=n_methods,
                          estimate_hours=round(hours, 1) if not math.isnan(hours) else None,
                          P_rule=p["rule_source"], command=compare.command(m, r),
                          edited_by=f"notebooks/{shared['chapter']} ({shared['stream']!r} stream)" if shared
                          else "this command"))
plans = pd.DataFrame(plans)
plans.to_csv(out / "plans.csv", index=False)
display(Markdown("\n".join(f"- `{row.command}` — {row.model}, {row.rule} P, {row.edits:,} edits "
                           f"({row.status}; " + (f"~{row.estimate_hours:g} h" if pd.notna(row.estimate_hours)
                                                 else "no estimate") + ")"
                           + ("" if row.edited_by == "this command" else
                              f"; the edits are {row.edited_by}'s, which makes the same stream: the command adds "
                              "only projection_check") for row in plans.itertuples())))
plans.drop(columns="command").set_index(["model", "rule"])

# %% [markdown]
# ## Like with like: the common milestones and the records behind them
# Models are compared at the milestones every run with results reached (a model still editing, or a smaller budget,
# sets them), and only where every run was scored on the same records. Milestone 0 (the unedited model) is scored on
# the sample of each run's *last* milestone, which differs between models of different lengths: it is shown as a
# reference, never compared across models.

# %% tags=["hide-input"]
reached = {(run.model, run.rule, meth): ms for run in present for meth, ms in run.reached.items()}


def common_of(*keys: tuple[str, str, str]) -> list[int]:
    """The milestones every one of these runs (model, P rule, method) reached; none while one has no milestone."""
    return common_milestones({k: reached[k] for k in keys}) if all(reached.get(k) for k in keys) else []


common = common_milestones(reached)
long = long_frame(present)
check = []
for e in common:
    at = long[(long.edits == e) & (long.measure == "efficacy")]
    ids = {key: at[(at.model == key[0]) & (at.rule == key[1]) & (at.method == key[2])].case_id for key in reached}
    s = same_records(ids)
    check.append(dict(edits=e, same_records=s["same"], records=s["n_common"], union=s["n_union"],
                      differing=", ".join("/".join(k) for k in s["differing"])))
check = pd.DataFrame(check, columns=["edits", "same_records", "records", "union", "differing"])
check.to_csv(out / "common_milestones.csv", index=False)
# the comparisons of the official runs (AlphaEdit − MEMIT, the weights) stop at the official runs' last common
# milestone: a calibrated run that lags behind does not pull them back
official = common_milestones({k: v for k, v in reached.items() if k[1] == "official"})
last_common = official[-1] if official else (common[-1] if common else None)
display(Markdown(f"Common milestones of every run: **{', '.join(map(str, common)) or 'none'}**"
                 + (f"; of the official runs: **{', '.join(map(str, official))}**" if official != common else "")
                 + (f". AlphaEdit − MEMIT and the weights are read at {last_common} edits; the families, each pair "
                    "at the last milestone both reached (Verdicts)." if last_common else
                    " (fewer than one run with results, or runs without a milestone in common).")))
check

# %% [markdown]
# ## Scores at the common milestones
# Means over the evaluated records with 95% intervals (Wilson for the binary official rates, t over records for the
# token accuracies), per model, P rule and method, at the official runs' common milestones (a calibrated run shows
# those it reached). Fluency and consistency are scored only at the unedited model and
# at each run's last milestone, so they appear here only where that is a common milestone.

# %% tags=["hide-input", "hide-output"]
scores = summarize_runs(long)
scores.to_csv(out / "scores.csv", index=False)
shown = scores[scores.edits.isin([0, *(official or common)])].copy()
shown["cell"] = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in zip(shown["mean"], shown.ci_low, shown.ci_high)]
order = [m for m in compare.MEASURES.values() if m in set(shown.measure)]
table = (shown.pivot_table(index=["model", "rule", "method", "edits"], columns="measure", values="cell",
                           aggfunc="first")[order] if len(shown) else pd.DataFrame())
table

# %% [markdown]
# {numref}`fig-models-vs-edits` shows each model's whole stream, so that a longer run is visible beyond the common
# milestones (the dotted vertical line): compare the lines at or left of that line.

# %% tags=["hide-input"] mystnb={"figure": {"name": "fig-models-vs-edits", "caption": "Edit success (official efficacy, EasyEdit rewrite_acc, generalisation) and preservation (specificity, EasyEdit locality) against the number of sequential edits, one colour per model; solid: AlphaEdit with the official threshold, dashed: AlphaEdit with the calibrated P, dotted: MEMIT. Bands are 95% intervals over the evaluated records. The dotted vertical line is the last milestone every run reached: only left of it are the models compared on the same records."}, "image": {"alt": "Five line charts in two rows, each with the number of edits on a logarithmic horizontal axis and a score between 0 and 1 on the vertical axis; one colour per model, solid, dashed and dotted lines for the three method and projector combinations, shaded interval bands."}}
panels = ["efficacy", "rewrite_acc", "generalization", "specificity", "locality"]
fig, grid, axes, legend_ax = panel_grid(panels, 6.6)
palette = dict(zip(models, sns.color_palette("tab10", len(models))))
styles = {("alphaedit", "official"): "-", ("alphaedit", "calibrated"): "--", ("memit", "official"): ":"}
curves = scores[scores.edits > 0]
for ax, measure in zip(axes, panels):
    for (m, r, meth), g in curves[curves.measure == measure].groupby(["model", "rule", "method"]):
        if (meth, r) not in styles:
            continue
        g = g.sort_values("edits")
        ax.plot(g.edits, g["mean"], styles[(meth, r)], marker="o", ms=3, color=palette[m],
                label=f"{m}: {meth}, {r} P")
        ax.fill_between(g.edits, g.ci_low, g.ci_high, color=palette[m], alpha=0.12)
    if common:
        ax.axvline(common[-1], color="grey", ls=":", lw=1)
    ax.set(title=measure, ylim=(-0.02, 1.02))
    edits_axis(ax, sorted(set(curves.edits)))
finish_grid(fig, grid, axes, legend_ax, "score", "models_vs_edits.png")

# %% [markdown]
# ## AlphaEdit − MEMIT on each model, paired on the same records
# Per model and P rule: the mean per-record difference AlphaEdit − MEMIT at each milestone both reached, with a paired
# bootstrap 95% interval (`alphaedit_core/metrics/paired.py`). The calibrated AlphaEdit is paired with the official
# run's MEMIT (MEMIT has no P, so that is the same MEMIT). Above 0 AlphaEdit is higher; higher is better for every
# measure here.

# %% tags=["hide-input"]
rows = []
for m in models:
    for r in rules:
        sub = long[(long.model == m) & (((long.rule == r) & (long.method == "alphaedit"))
                                        | ((long.rule == "official") & (long.method == "memit")))]
        for e in common_of((m, r, "alphaedit"), (m, "official", "memit")):
            for measure, row in paired_rows(sub, col="method", a="alphaedit", b="memit", edits=e,
                                            n_boot=n_boot, seed=seed).items():
                rows.append(dict(model=m, rule=r, edits=e, measure=measure, **{k: row[k] for k in (
                    "n", "n_only_a", "n_only_b", "mean_a", "mean_b", "diff", "ci_low", "ci_high")}))
vs_memit = pd.DataFrame(rows, columns=["model", "rule", "edits", "measure", "n", "n_only_a", "n_only_b", "mean_a",
                                       "mean_b", "diff", "ci_low", "ci_high"])
vs_memit.to_csv(out / "alphaedit_minus_memit.csv", index=False)

# %% [markdown]
# {numref}`fig-models-alphaedit-minus-memit` shows these differences at every milestone; the table under it gives
# them at the official runs' last common milestone (every milestone: `alphaedit_minus_memit.csv`).

# %% tags=["hide-input"] mystnb={"figure": {"name": "fig-models-alphaedit-minus-memit", "caption": "AlphaEdit − MEMIT on each model, paired on the same records: the mean per-record difference with its paired 95% bootstrap interval at each milestone both methods reached, one colour per model; circles and solid lines: AlphaEdit with the official threshold, squares and dashed lines: with the calibrated P (both against the same MEMIT). Above the grey line AlphaEdit scores higher; higher is better for every measure."}, "image": {"alt": "Five small charts in two rows, each with the number of edits on a logarithmic horizontal axis and a difference in score on the vertical axis, a grey horizontal line at zero, and per model two lines of points with vertical interval bars."}}
panels = ["efficacy", "rewrite_acc", "generalization", "specificity", "locality"]
fig, grid, axes, legend_ax = panel_grid(panels, 6.4)
rule_style = {"official": ("o", "-", 0.97), "calibrated": ("s", "--", 1.03)}  # marker, line, x offset
for ax, measure in zip(axes, panels):
    ax.axhline(0, color="grey", lw=1)
    for (m, r), g in vs_memit[vs_memit.measure == measure].groupby(["model", "rule"]):
        g = g.dropna(subset=["diff"]).sort_values("edits")
        marker, line, shift = rule_style.get(r, ("^", ":", 1.0))
        ax.errorbar(g.edits * shift, g["diff"], yerr=[g["diff"] - g.ci_low, g.ci_high - g["diff"]], fmt=marker,
                    ls=line, ms=4, lw=1, capsize=2, color=palette[m], label=f"{m}, {r} P")
    ax.set(title=measure)
    edits_axis(ax, sorted(set(vs_memit.edits)))
finish_grid(fig, grid, axes, legend_ax, "AlphaEdit − MEMIT", "alphaedit_minus_memit.png")

# %% tags=["hide-input"]
last_vs = vs_memit[vs_memit.edits == (last_common or -1)].dropna(subset=["diff"])
if len(last_vs):
    display(Markdown(f"At {last_common:,} edits, the official runs' last common milestone: points for the rates "
                     "and accuracies, "
                     "the n-gram entropy itself for fluency (not a rate); a dash: not scored there (fluency and "
                     "consistency are scored at a run's last milestone only)."))

    def cell(measure: str, d: float, lo: float, hi: float) -> str:
        k = 1 if measure == "fluency" else 100
        return f"{k * d:+.{2 if k == 1 else 1}f} [{k * lo:+.{2 if k == 1 else 1}f}, {k * hi:+.{2 if k == 1 else 1}f}]"

    cells = last_vs.assign(cell=[cell(*row) for row in zip(last_vs.measure, last_vs["diff"], last_vs.ci_low,
                                                            last_vs.ci_high)])
    order = [m for m in compare.MEASURES.values() if m in set(cells.measure)]
    table = cells.pivot_table(index=["model", "rule"], columns="measure", values="cell", aggfunc="first")
    table = table.reindex(index=[(m, r) for m in models for r in rules if (m, r) in table.index], columns=order)
    display(table.fillna("—").rename_axis(index=["Model", "P rule"], columns=None))
else:
    display(Markdown("No common milestone with both methods yet."))

# %% [markdown]
# ## The projector on each model (C5 per model, C1 across models)
# From each model's `projection_check`: per edited layer, the share of directions P keeps, the share of the keys'
# energy they carry, and ‖Pk‖/‖k‖ for held-out preserved keys (0 is perfect annihilation), edit keys and random
# directions (≈ √(kept share)). The same absolute threshold keeps very different shares of directions on models whose
# keys have different scales; the calibrated rule keeps the same share of energy on each. `check_wall_hours` is what
# the check took on the machine of its provenance.json; a model's first check also computes its statistics (300k
# tokens), later ones read them from the cache.

# %% tags=["hide-input"]
proj_rows, c1_inputs, sweeps = [], {}, []
for m in models:
    for r in rules:
        p = read_projection(root, m, r)
        if p["table"] is None:
            proj_rows.append(dict(model=m, rule=r, status=p["status"], note=p["note"]))
            continue
        t = p["table"]
        proj_rows.append(dict(model=m, rule=r, status=p["status"], layers=", ".join(map(str, t.layer)),
                              d_ff=int(t.d_ff.iloc[0]), kept_share=t.kept_share.mean(),
                              kept_share_range=f"{t.kept_share.min():.2f}–{t.kept_share.max():.2f}",
                              energy_kept=t.energy_kept.mean(), leak_heldout=t.ratio_heldout_mean.mean(),
                              leak_edit_keys=t.ratio_edit_keys_mean.mean() if "ratio_edit_keys_mean" in t else None,
                              leak_random=t.ratio_random_mean.mean(),
                              C5=p["summary"].get("claims", {}).get("C5", {}).get("verdict", ""),
                              check_wall_hours=p["wall_hours"], note=p["note"]))
        if r == "official":
            c1_inputs[m] = dict(verdict=p["summary"].get("claims", {}).get("C1", {}).get("verdict"),
                                kept_share=t.kept_share.mean(), energy_kept=t.energy_kept.mean(),
                                leak=t.ratio_heldout_mean.mean())
            sweep_path = root / compare.run_label(m, r) / "projection_check" / "threshold_sweep.csv"
            if sweep_path.is_file():
                sweeps.append(pd.read_csv(sweep_path).assign(model=m))
projection = pd.DataFrame(proj_rows)
projection.to_csv(out / "projection_by_model.csv", index=False)
checked = projection[projection.status != "not run yet"]
display(Markdown("P not checked yet: " + ", ".join(f"{r.model} ({r.rule} P)" for r in projection.itertuples()
                                                  if r.status == "not run yet") + "." if len(checked) < len(projection)
                 else "Every model's P is checked."))
checked.set_index(["model", "rule"]).round(3)

# %% tags=["hide-input"] mystnb={"figure": {"name": "fig-models-projector", "caption": "The projector at the official absolute threshold is a different object on each model. **Left:** share of directions P keeps against the threshold (the official value 0.02 is the dashed line), mean over the edited layers, one line per model. **Right:** the leakage ‖Pk‖/‖k‖ of held-out preserved keys against the same thresholds. Where the lines sit apart at 0.02, one absolute threshold keeps different shares and lets different amounts through on each model."}, "image": {"alt": "Two line charts with the threshold on a logarithmic horizontal axis: left, the kept share of directions between 0 and 1; right, the mean leakage of held-out keys; one line with markers per model and a dashed vertical line at 0.02."}}
if sweeps:
    sweep = pd.concat(sweeps).groupby(["model", "threshold"])[["kept_share", "ratio_heldout_mean"]].mean().reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, col, title in zip(axes, ["kept_share", "ratio_heldout_mean"],
                              ["share of directions kept", "held-out ‖Pk‖/‖k‖"]):
        sns.lineplot(sweep, x="threshold", y=col, hue="model", marker="o", ax=ax, palette=palette)
        ax.axvline(0.02, color="k", ls="--", lw=1)
        ax.set(xscale="log", title=title, ylabel="")
    fig.tight_layout()
    fig.savefig(out / "projector_by_model.png", dpi=120, bbox_inches="tight")
else:
    print("No model's projection_check has run yet: no threshold sweep to show.")

# %% [markdown]
# ## What the edits did to the weights, per model
# From `edit_count`'s per-batch diagnostics at the common milestones, mean over the edited layers: the relative
# change of the weights ‖W − W⁰‖/‖W⁰‖, the condition number of the solved system and the drift of the edited layers'
# outputs on held-out preserved keys. First, how strongly each model was asked to edit: the target optimisation's
# final loss and its Adam steps, means over every batch up to the milestone. Adam's step is absolute while the
# models' hidden states differ in scale by more than an order of magnitude (`benchmarks/results/target_lr-*.md`
# measures ‖h0‖ and the loss reached at several v_lr), so one v_lr can leave one model's targets further from
# reached; the preset rule therefore amends v_lr where the family's leaves the first requests' targets above twice
# the loss threshold (Gemma: 5 instead of 0.5). A model whose targets still end at a higher loss was asked weaker
# edits, and its lower edit scores are then partly the preset's. Gemma normalises the MLP output before it joins the
# residual, and the editor translates each residual through that norm (the method page, section 4): its drift is
# read before the norm, where the edit writes, so it measures the same thing as on the other models but not the same
# effect on the residual.

# %% tags=["hide-input"]
diag_rows = []
for run in present:
    d = run.diagnostics
    if d is None:
        continue
    d = d[d.edits.isin(official)]
    if run.rule != "official":
        d = d[d.method == "alphaedit"]
    for (meth, e), g in d.groupby(["method", "edits"]):
        diag_rows.append(dict(model=run.model, rule=run.rule, method=meth, edits=e,
                              **compare.targets_upto(run.diagnostics, meth, e),
                              relative_change=g.relative_change.mean(), condition=g.condition.mean(),
                              drift=g.drift.mean()))
weights = pd.DataFrame(diag_rows, columns=["model", "rule", "method", "edits", "target_loss", "target_steps",
                                           "relative_change", "condition", "drift"])
weights.to_csv(out / "weights_by_model.csv", index=False)
(weights.set_index(["model", "rule", "method", "edits"])
 .round({"target_loss": 3, "target_steps": 1, "relative_change": 3, "condition": 0, "drift": 3})
 .rename(columns={"target_loss": "target loss", "target_steps": "Adam steps", "relative_change": "‖W − W⁰‖/‖W⁰‖",
                  "condition": "condition number", "drift": "drift"}))

# %% [markdown]
# ## AlphaEdit − MEMIT and the size of MEMIT's update
# A gap between the methods that is much larger on one model than on another is either the model's or a setting
# that does not carry. MEMIT's λ (`mom2_update_weight`, the weight of the preserved keys' second moment C in its
# solve Δ(λC + KKᵀ) = RKᵀ) comes from the LLaMA files; how large λC is next to the batch's KKᵀ depends on the
# model's key scale, so one λ asks for updates of different sizes on different models. The table puts each model's
# AlphaEdit − MEMIT efficacy at the last common milestone (official P, paired) next to MEMIT's update as a share of
# AlphaEdit's (mean ‖W − W⁰‖/‖W⁰‖ over the edited layers, from the same diagnostics as the table above).

# %% tags=["hide-input"]
gaps = (compare.method_gaps(vs_memit, weights, edits=last_common) if last_common is not None
        else compare.method_gaps(vs_memit.iloc[:0], weights.iloc[:0], edits=0))
gaps.to_csv(out / "method_gaps.csv", index=False)
if len(gaps):
    display(gaps.assign(gap=[f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
                             for d, lo, hi in zip(gaps["diff"], gaps.ci_low, gaps.ci_high)])
            .set_index("model")[["edits", "gap", "change_alphaedit", "change_memit", "change_ratio"]]
            .round({"change_alphaedit": 3, "change_memit": 3, "change_ratio": 2})
            .rename(columns={"gap": "AlphaEdit − MEMIT efficacy (points)", "change_alphaedit": "AlphaEdit ‖ΔW‖/‖W‖",
                             "change_memit": "MEMIT ‖ΔW‖/‖W‖", "change_ratio": "MEMIT / AlphaEdit"})
            .rename_axis("Model"))
    reading = compare.method_gap_reading(gaps, default_model)
    display(Markdown(reading or f"No model's gap exceeds {default_model}'s by {compare.DROP:.0%} or more."))
else:
    display(Markdown("No model has both methods' scores and diagnostics at a common milestone yet."))

# %% [markdown]
# **MEMIT's λ at matched update size.** Where `benchmarks/memit_lambda_check.py` has run on a model, one batch of
# the stream's first requests is edited by AlphaEdit and by MEMIT at several λ from the same targets (optimised
# once), so the methods differ only in their solve. {numref}`fig-models-memit-lambda` shows each λ as a point of
# MEMIT's trade-off curve; the λ whose update is as large as AlphaEdit's is the comparison at matched edit strength.

# %% tags=["hide-input"] mystnb={"figure": {"name": "fig-models-memit-lambda", "caption": "MEMIT at several λ against AlphaEdit on the same targets, one batch of each model's first requests: efficacy (left) and specificity (right), on the full 0–1 scale, against the update's size, the mean relative change of the edited layers' weights. Circles joined by a line: MEMIT, labelled with λ; star: AlphaEdit with the official P; grey dashed line: the unedited model. A smaller λ asks for a larger update."}, "image": {"alt": "Two charts with the relative weight change on the horizontal axis and a score from 0 to 1 on the vertical axis; in each, a line of labelled circles for MEMIT at several values of lambda, a star for AlphaEdit and a dashed grey line for the unedited model."}}
checks = {}
for m in models:
    path = Path(lambda_checks) / f"memit_lambda-{compare.model_dir(m)}.csv"
    if path.is_file():
        checks[m] = pd.read_csv(path)
matched = {m: compare.lambda_matched(c) for m, c in checks.items()}  # None: no AlphaEdit or no MEMIT row
lam_rows = []
for m, c in checks.items():
    found = matched[m]
    if found:
        lam_rows.append(dict(model=m, requests=int(c.requests.iloc[0]), matched_lambda=found["matched"]["lam"],
                             **{f"{k}_{w}": found[w][k] if found[w] is not None else math.nan
                                for w in ("alphaedit", "matched", "preset")
                                for k in ("efficacy", "specificity", "rewrite_acc", "change")}))
lambda_table = pd.DataFrame(lam_rows)
lambda_table.to_csv(out / "lambda_checks.csv", index=False)
if checks:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, measure in zip(axes, ("efficacy", "specificity")):
        for m, c in checks.items():
            mem = c[c.method == "memit"].sort_values("change")
            ax.plot(mem.change, mem[measure], "o-", color=palette[m], ms=4, lw=1, label=f"{m}, MEMIT")
            for i, r in enumerate(mem.itertuples()):  # labels above and below in turn: neighbours do not collide
                ax.annotate(f"λ {r.lam:g}", (r.change, getattr(r, measure)), fontsize=7,
                            xytext=(3, 5 if i % 2 == 0 else -11), textcoords="offset points")
            alpha = c[c.method == "alphaedit"]
            ax.plot(alpha.change, alpha[measure], "*", color=palette[m], ms=12, label=f"{m}, AlphaEdit")
            ax.axhline(float(c[c.method == "unedited"][measure].iloc[0]), color="grey", ls="--", lw=1)
        ax.set(xlabel="mean ‖ΔW‖/‖W‖ of the edited layers", ylabel=measure, title=measure, ylim=(0, 1.05))
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "memit_lambda.png", dpi=130)
    plt.show()

# %% tags=["hide-input"]
display(Markdown(" ".join(compare.lambda_reading(m, matched[m], int(c.requests.iloc[0]))
                          for m, c in checks.items() if matched[m])
                 or "No λ check has run yet (`benchmarks/memit_lambda_check.py`)."))

# %% [markdown]
# ## A preset's share of a model's result: the v_lr amendment, paired
# Where a model's preset changed under the rule's v_lr amendment, its run with the earlier preset (`preset_arms`) is
# paired with its current one: AlphaEdit, official P, the same records and checkpointed stream order, at the
# milestones both reached. The difference current − earlier is what the preset, not the model, does to the scores;
# the target loss column says how far each preset left its targets from reached.

# %% tags=["hide-input"]
arm_rows, arm_loss = [], []
for m, arm in preset_arms.items():
    current, earlier = runs.get((m, "official")), read_run(root, m, "official", arm["label"])
    if current is None or current.raw is None or earlier.raw is None:
        continue
    both = pd.concat([compare.tidy_measures(current.raw).assign(arm="current"),
                      compare.tidy_measures(earlier.raw).assign(arm="earlier")], ignore_index=True)
    both = both[both.method == "alphaedit"]
    at = common_milestones({a: sorted(set(g.edits) - {0}) for a, g in both.groupby("arm")})
    for e in at:
        for measure, row in paired_rows(both, col="arm", a="current", b="earlier", edits=e, n_boot=n_boot,
                                        seed=seed).items():
            arm_rows.append(dict(model=m, earlier=arm["setting"], edits=e, measure=measure,
                                 **{k: row[k] for k in ("n", "mean_a", "mean_b", "diff", "ci_low", "ci_high")}))
        for name, r in (("current", current), ("earlier", earlier)):
            arm_loss.append(dict(model=m, arm=name, edits=e, **compare.targets_upto(r.diagnostics, "alphaedit", e)))
preset_arm = pd.DataFrame(arm_rows, columns=["model", "earlier", "edits", "measure", "n", "mean_a", "mean_b", "diff",
                                             "ci_low", "ci_high"])
preset_arm.to_csv(out / "preset_arms.csv", index=False)
pd.DataFrame(arm_loss, columns=["model", "arm", "edits", "target_loss", "target_steps"]).to_csv(
    out / "preset_arm_targets.csv", index=False)
if len(preset_arm):
    shown = preset_arm.assign(cell=[f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" for d, lo, hi in
                                    zip(preset_arm["diff"], preset_arm.ci_low, preset_arm.ci_high)])
    order = [m for m in compare.MEASURES.values() if m in set(shown.measure)]
    display(Markdown("Current preset − earlier preset, AlphaEdit, official P, in points (paired 95% interval):"))
    display(shown.pivot_table(index=["model", "earlier", "edits"], columns="measure", values="cell",
                              aggfunc="first")[order].rename_axis(index=["Model", "earlier preset", "Edits"],
                                                                  columns=None))
    display(pd.DataFrame(arm_loss).set_index(["model", "edits", "arm"]).round(3)
            .rename(columns={"target_loss": "target loss", "target_steps": "Adam steps"}))
else:
    display(Markdown("No model's current run has a milestone in common with its earlier preset's run yet."))

# %% [markdown]
# ## What each run cost
# Editing hours per method are the sum over batches of the time spent on targets, keys and solves (`diagnostics.csv`,
# every sitting); wall hours add loading, statistics and evaluation and are known for the sittings recorded in
# `sittings.jsonl` (written by `python -m alphaedit_core.compare run`); `provenance.json` describes the last sitting
# only (it is rewritten at every sitting). The first batch's targets are optimised once per model and target settings
# and shared by its streams (both methods, both P rules); each stream counts them at what they cost where they were
# optimised, so a method's editing hours are what its stream would cost alone, and the streams of one sitting can
# add up to more than its wall time.

# %% tags=["hide-input"]
cost = pd.DataFrame([run_cost(run) for run in present])
cost.to_csv(out / "cost.csv", index=False)
cost_names = {"alphaedit_edit_hours": "AlphaEdit editing (h)", "alphaedit_s_per_edit": "AlphaEdit s per edit",
              "memit_edit_hours": "MEMIT editing (h)", "memit_s_per_edit": "MEMIT s per edit",
              "sittings_wall_hours": "wall, recorded sittings (h)", "last_sitting_wall_hours": "wall, last sitting (h)",
              "sittings": "Sittings", "machine": "Machine", "git_commit": "Commit"}
(cost.set_index(["model", "rule"]).round(2).rename(columns=cost_names).rename_axis(["Model", "P rule"])
 .fillna("—") if len(cost) else Markdown("No run has results yet."))

# %% [markdown]
# ## Verdicts
# **C8 (scale inside a family).** AlphaEdit on the larger and the smaller Qwen2.5-Coder, on the same records, at the
# last milestone both reached (L) and the first (F); the paired difference larger − smaller in the two edit measures
# (official efficacy, EasyEdit rewrite_acc). The larger model worse in some edit measure → *not reproduced*; better in
# both, while it keeps ≥ 90% in both with no fall of more than 10 points from F and the smaller falls by more than 10
# points in one → *reproduced*; better in one, or that hold-versus-drop pattern alone → *partly reproduced*; none of
# these → *not reproduced* when L ≥ 1,000 edits, *not testable here* before (the claim's contrast is at 2,000 edits).
#
# **C10 (families).** AlphaEdit on one model per family (the first listed with results), on the same records, each
# pair of families at the last milestone both reached (a family whose run is shorter does not hold the other pairs
# back at its milestone; every row of `cross_model_differences.csv` names its milestone). Families *differ* when
# some pair differs by 10 points or more in some measure (efficacy, rewrite_acc, generalisation, rephrase_acc,
# specificity, locality, exact match) with a paired interval
# that excludes 0. They *need their own tuning* when the official absolute threshold keeps shares of directions at
# least 25 points apart on two families (the same number means a different P), or when the calibrated P changes a
# non-LLaMA model's AlphaEdit by 10 points or more in some measure (at the last milestone both of its P rules
# reached; `cross_model_differences.csv` has every milestone). Both → *reproduced*; one → *partly reproduced*;
# neither → *not reproduced*; fewer than two families with results → *not testable here*.
#
# C8 and C10 are judged under each P rule; when the rules agree that is the verdict, when they disagree the effect
# depends on how P is set and the verdict is *partly reproduced* if either rule reproduces the claim at least
# partly. **C1 across models**: every model's `projection_check` C1 verdict reproduced → *reproduced*, some →
# *partly reproduced*; the evidence lists how differently one threshold cuts each model's spectrum. Thresholds are
# those of `alphaedit_core/compare.py`.

# %% tags=["hide-input"]
def pair_common(model_a: str, model_b: str, rule: str) -> list[int]:
    return common_of((model_a, rule, "alphaedit"), (model_b, rule, "alphaedit"))


def has(model: str, rule: str) -> bool:
    return bool(runs[(model, rule)].reached.get("alphaedit"))


claims, cross_rows = {}, []
small, large = scale_pair
c8 = {}
for r in rules:
    both = pair_common(small, large, r)
    if not both:
        missing = [m for m in scale_pair if not has(m, r)]
        c8[r] = dict(verdict="not testable here", evidence=(f"Not run yet: {', '.join(missing)}." if missing else
                                                            "No milestone in common yet."))
        continue
    first, last = both[0], both[-1]
    diffs = paired_rows(long, col="model", a=large, b=small, edits=last, where=dict(rule=r, method="alphaedit"),
                        measures=EDIT_MEASURES, n_boot=n_boot, seed=seed)
    cross_rows += [dict(claim="C8", rule=r, a=large, b=small, edits=last, measure=k, **v) for k, v in diffs.items()]
    c8[r] = c8_scale(diffs, first_last(scores, model=small, rule=r, method="alphaedit", first=first, last=last),
                     first_last(scores, model=large, rule=r, method="alphaedit", first=first, last=last),
                     first=first, last=last, names=(small, large))
claims["C8"] = combine_rules(c8)
claims["C8"]["evidence"] = (f"Read inside one family ({small} vs {large}), not LLaMA3-8B vs LLaMA2-7B: size at equal "
                            f"generation, not generation. " + claims["C8"]["evidence"])

representatives = {}
for m in models:  # one model per family: the first listed with an official AlphaEdit run
    if has(m, "official"):
        representatives.setdefault(family[m], m)
# what the calibrated P changes on each model's AlphaEdit, at every milestone both of its P rules reached (so that
# models can be compared at one milestone); the verdict reads the last
rule_effect = {}
for m in representatives.values():
    effects = {e: paired_rows(long, col="rule", a="calibrated", b="official", edits=e,
                              where=dict(model=m, method="alphaedit"), n_boot=n_boot, seed=seed)
               for e in common_of((m, "official", "alphaedit"), (m, "calibrated", "alphaedit"))}
    cross_rows += [dict(claim="C10 (P rule)", rule="calibrated − official", a=m, b=m, edits=e, measure=k, **v)
                   for e, rows in effects.items() for k, v in rows.items()]
    if effects:
        rule_effect[m] = effects[max(effects)]
c10 = {}
for r in rules:
    reps = {f: m for f, m in representatives.items() if has(m, r)}
    names = sorted(reps)
    # each pair of families at its own last common milestone: a shorter run does not pull the others back
    pair_last = {(fa, fb): pair_common(reps[fa], reps[fb], r) for i, fa in enumerate(names) for fb in names[i + 1:]}
    pair_last = {pair: ms[-1] for pair, ms in pair_last.items() if ms}
    if not pair_last:
        c10[r] = dict(verdict="not testable here",
                      evidence=f"Fewer than two families with a common milestone under this P rule "
                               f"({', '.join(f'{f}: {m}' for f, m in reps.items()) or 'none'}); not run yet: "
                               + (", ".join(m for m in models if not has(m, r)) or "none") + ".")
        continue
    pair_diffs = {}
    for (fa, fb), last in pair_last.items():
        pair_diffs[(fa, fb)] = paired_rows(long, col="model", a=reps[fa], b=reps[fb], edits=last,
                                           where=dict(rule=r, method="alphaedit"),
                                           measures=[*EDIT_MEASURES, "generalization", "rephrase_acc",
                                                     *KEEP_MEASURES, "exact_match"], n_boot=n_boot, seed=seed)
        cross_rows += [dict(claim="C10", rule=r, a=reps[fa], b=reps[fb], edits=last, measure=k, **v)
                       for k, v in pair_diffs[(fa, fb)].items()]
    kept = {f: c1_inputs[m]["kept_share"] for f, m in reps.items() if m in c1_inputs}
    effect = {f: rule_effect[m] for f, m in reps.items() if m in rule_effect}
    c10[r] = c10_families(pair_diffs, kept, effect, last=pair_last, reference=reference_family)
claims["C10"] = combine_rules(c10)
claims["C10"]["evidence"] = ("One model per family (" + (", ".join(f"{f}: {m}" for f, m in representatives.items())
                                                         or "none with results yet") + "): family goes with size, instruction tuning (Gemma is a base model) and quantisation. "
                             + claims["C10"]["evidence"])
claims["C1"] = c1_across({m: c1_inputs.get(m, {}) for m in models})
not_yet = [m for m in models if m not in c1_inputs]
if not_yet:
    claims["C1"]["evidence"] += f" Not run yet: {', '.join(not_yet)}."

cross = pd.DataFrame(cross_rows)
cross.to_csv(out / "cross_model_differences.csv", index=False)
summary = dict(model=label, notebook="model_compare", n_edits=last_common, quick=quick, models=models,
               families=family, rules=rules, common_milestones=common, official_common_milestones=official,
               runs={f"{run.model}|{run.rule}": dict(status=run.status, label=run.label, reached=run.reached,
                                                      notes=run.notes) for run in runs.values()},
               not_run_yet=not_run, scale_pair=scale_pair, family_representatives=representatives,
               claims=claims)
(out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
display(Markdown("\n".join(f"- **{cid}**: *{c['verdict']}*. {c['evidence']}" for cid, c in claims.items())))

# %% [markdown]
# **Reading C10.** A family difference can be a ranking (one family better or no worse in every measure) or a move
# along the edit/preservation trade-off: one model lands more edits and keeps fewer unrelated facts. The second is
# what a stronger or weaker edit does on a single model, so it says that the families sit at different points of
# the trade-off under the same preset, not that one edits better; a matched-strength comparison (the
# operating-points chapter's curves, per model) would tell them apart.

# %% tags=["hide-input"]
c10_rows = cross[cross.claim == "C10"] if len(cross) else cross
lines = []
for (r, a, b, e), g in (c10_rows.groupby(["rule", "a", "b", "edits"], sort=False) if len(c10_rows) else []):
    move = compare.trade_off({x.measure: dict(diff=x.diff, ci_low=x.ci_low, ci_high=x.ci_high)
                              for x in g.itertuples()})
    if move is None:
        lines.append(f"- [{r} P] {a} − {b} at {e:,} edits: not a trade-off (a ranking, or no clear difference).")
        continue
    up = move["lands_more"] + move["keeps_more"]
    down = move["lands_fewer"] + move["keeps_fewer"]
    lines.append(f"- [{r} P] {a} − {b} at {e:,} edits: a trade-off — {a} is higher in {', '.join(up)} and lower "
                 f"in {', '.join(down)}, every interval clear of 0: it {compare.trade_off_words(move)}.")
display(Markdown("\n".join(lines) if lines else "No two families with paired scores yet."))

# %% [markdown]
# **How much of a model's result is its preset's (C3 per model; context, not an input of the rules above).** Every
# model edits with the preset derived by the documented rule. Where the operating-points chapter ran C3 on a model
# (that preset against the paper's LLaMA3-8B values applied unchanged, same records), its paired differences say
# whether the derived preset over- or under-pushes on that model; a model whose derived preset loses to the migrated
# values in preservation reads, in this chapter, partly as a preset effect rather than a model effect.

# %% tags=["hide-input"]
preset_rows = [dict(model=m, run=c["label"], edits=c["edits"], verdict=c["verdict"],
                    current_preset=c["current_preset"], measure=k, diff=d, ci_low=lo, ci_high=hi)
               for m in models for c in compare.preset_checks(root, m) for k, (d, lo, hi) in c["diffs"].items()]
preset_table = pd.DataFrame(preset_rows, columns=["model", "run", "edits", "verdict", "current_preset", "measure",
                                                  "diff", "ci_low", "ci_high"])
preset_table.to_csv(out / "preset_checks.csv", index=False)
lines = []
for (m, run_label_, edits, verdict), g in preset_table.groupby(["model", "run", "edits", "verdict"], sort=False):
    current = g.current_preset.iloc[0]
    lines.append(f"- **{m}** (`results/{run_label_}/operating_points/`, {edits:,} edits): derived − migrated "
                 + "; ".join(f"{r.measure} {100 * r.diff:+.1f} points [{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]"
                             for r in g.itertuples()) + f" (C3 {verdict})"
                 + (". Made with the model's preset as it was then, not the one its runs in this chapter use"
                    " (`alphaedit_core/hparams.py` says what changed)." if current is False else "."))
missing = [m for m in models if m not in set(preset_table.model)]
display(Markdown("\n".join(lines) + ("\n\n" if lines else "")
                 + (f"No C3 run on {', '.join(missing)}: there the preset's share is not measured." if missing
                    else "")))

# %% tags=["hide-input"]
if len(cross):
    display(cross.assign(interval=[f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi in
                                   zip(cross["diff"], cross.ci_low, cross.ci_high)])
            [["claim", "rule", "a", "b", "edits", "measure", "n", "interval"]])
