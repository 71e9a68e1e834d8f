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
# # How many sequential edits does AlphaEdit survive?
#
# **C7** At 100 edits all models are stable; beyond 1,000 edits performance can drop markedly; around 2,000
# edits some models collapse. **C11** For a new model, start with about 100 edits before scaling up.
#
# One sequential stream of edits (batches of `batch_size`), AlphaEdit and its ablation MEMIT from the same
# original weights, evaluated at milestones on the records edited so far with the official (probability
# comparison) and EasyEdit (token accuracy) metrics, plus generation-based exact match on a subsample. Per batch:
# norm of the weight change, condition number of the solved system, drift of the edited layers' outputs on
# held-out preserved keys. The run checkpoints after every batch and resumes where it stopped.

# %% tags=["parameters"]
model = "smollm2-135m-instruct"  # offline short name, hub id or local folder
label = ""  # results folder name (empty: the model name, slashes as double dashes)
hparams = ""  # preset name (empty: the model's own preset)
overrides = {}
methods = ["alphaedit", "memit"]
n_edits = 2000
batch_size = 100
milestones = [100, 200, 500, 1000, 1500, 2000]  # batch boundaries (250 is none with batches of 100)
time_budget_min = None  # stop starting new batches after this many minutes (the run resumes next time)
eval_cap = 300  # records evaluated per milestone, a seeded sample of those edited so far (None: all)
gen_cap = 50  # records of that sample also evaluated by greedy generation
drift_tokens = 4000  # held-out corpus tokens for the drift of preserved outputs
seed = 0
results_dir = "../results"
quick = False

# %%
import hashlib
import json
import os
import random
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from alphaedit_core.arch import ModelAdapter
from alphaedit_core.corpus import get_corpus
from alphaedit_core.data import load_offline_counterfact, to_requests
from alphaedit_core.editor import Editor
from alphaedit_core.hparams import EditHParams
from alphaedit_core.metrics import compute_baseline, evaluate, summarize
from alphaedit_core.models import load_model, model_fingerprint
from alphaedit_core.paths import cache_dir
from alphaedit_core.stats import corpus_keys
from alphaedit_core.verdicts import edit_count_claims, onsets

model_dir = label or model.replace("/", "--")
out = Path(results_dir) / model_dir / "edit_count"
out.mkdir(parents=True, exist_ok=True)
sns.set_theme(style="whitegrid")
torch.manual_seed(seed)
lm, tok = load_model(model)
hp = EditHParams.load(hparams or model, **overrides)
adapter = ModelAdapter.from_model(lm)
records = load_offline_counterfact(n=n_edits, seed=seed)
requests = to_requests(records)
milestones = [m for m in milestones if m <= n_edits]
hp_digest = hashlib.sha256(json.dumps(hp.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
run_key = f"{model_fingerprint(lm)}-n{n_edits}-b{batch_size}-s{seed}-{hp_digest}"
run_dir = cache_dir("runs", "edit_count", run_key)
print(f"{n_edits} edits in batches of {batch_size}; milestones {milestones}; checkpoints in {run_dir}")
print("hyperparameters:", json.dumps(hp.to_dict()))

# %% [markdown]
# The unedited model's argmax tokens (for EasyEdit locality) and the held-out preserved keys are computed once and
# kept next to the checkpoints.

# %%
baseline_path = run_dir / "baseline.json"
if baseline_path.exists():
    baseline = json.loads(baseline_path.read_text())
else:
    baseline = compute_baseline(lm, tok, records)
    tmp = baseline_path.with_suffix(f".{os.getpid()}.tmp")  # other processes may write the same file
    tmp.write_text(json.dumps(baseline))
    tmp.replace(baseline_path)
corpus = get_corpus(hp.mom2_corpus)
probe_keys = corpus_keys(lm, tok, adapter, hp.layers, corpus, skip_tokens=hp.mom2_n_tokens, n_tokens=drift_tokens,
                         seq_len=hp.mom2_seq_len)


def eval_sample(n_done: int) -> list[dict]:
    done = records[:n_done]
    if eval_cap is None or n_done <= eval_cap:
        return done
    return random.Random(seed + n_done).sample(done, eval_cap)


def evaluate_at(n_done: int, method: str) -> pd.DataFrame:
    sample = eval_sample(n_done) if n_done else eval_sample(milestones[-1])
    extra = dict(method=method, edits=n_done)
    parts = [evaluate(lm, tok, sample, baseline=baseline, families=("official", "easyedit"), extra_columns=extra,
                      progress=False),
             evaluate(lm, tok, sample[:gen_cap], families=("generation",), answer_max_new_tokens=8,
                      extra_columns=extra, progress=False)]
    return pd.concat(parts, ignore_index=True)


def append(path: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(path, mode="a", header=not path.exists(), index=False)


def done(path: Path, column: str) -> set[int]:
    """Values of `column` already written to a per-method table (what a resumed run must not redo)."""
    return set(pd.read_csv(path)[column].unique()) if path.exists() else set()

# %% [markdown]
# ## The runs
# One table per method (`metrics_raw-<method>.csv`, `diagnostics-<method>.csv`), so that the methods can also run
# as separate processes; milestones and batches already written are not redone, and the editor resumes from its
# checkpoint.

# %%
deadline = time.time() + 60 * time_budget_min if time_budget_min is not None else None
checkpointed: dict[str, int] = {}  # edits in each method's checkpoint (ahead of the last milestone mid-stream)
for method in methods:
    metrics_path, diag_path = out / f"metrics_raw-{method}.csv", out / f"diagnostics-{method}.csv"
    editor = Editor.prepare(lm, tok, hp, method=method, diagnostics=True, progress=False)
    if 0 not in done(metrics_path, "edits"):
        append(metrics_path, evaluate_at(0, method))

    def on_batch(ed: Editor, batch, report, metrics_path=metrics_path, diag_path=diag_path, method=method) -> None:
        n_done = report.edits_done
        if report.batch not in done(diag_path, "batch"):
            rows = []
            for l, d in ed.weight_deltas().items():
                k = probe_keys[l]
                base = k @ ed.original[l].T
                rows.append(dict(method=method, batch=report.batch, edits=n_done, layer=l,
                                 delta_norm=report.delta_norm[l], total_norm=report.total_norm[l],
                                 relative_change=report.total_norm[l] / report.weight_norm[l],
                                 condition=report.condition.get(l, float("nan")),
                                 drift=float((k @ d.T).norm(dim=-1).mean() / base.norm(dim=-1).mean()),
                                 residual_left=report.residual_left, target_steps=report.target_steps_mean,
                                 target_loss=report.target_loss_mean, seconds=report.seconds_targets
                                 + report.seconds_keys + report.seconds_solve))
            append(diag_path, pd.DataFrame(rows))
        if n_done in milestones and n_done not in done(metrics_path, "edits"):
            append(metrics_path, evaluate_at(n_done, method))
        seconds = report.seconds_targets + report.seconds_keys + report.seconds_solve
        print(f"{method}: {n_done} edits, {seconds:.0f} s for this batch", flush=True)

    editor.run(requests, batch_size=batch_size, checkpoint=run_dir / method, on_batch=on_batch, deadline=deadline)
    checkpointed[method] = min(editor.batches_done * batch_size, n_edits)
    print(f"{method}: {checkpointed[method]} of {n_edits} edits done")
    editor.restore()

# %% [markdown]
# ## Accuracy against the number of edits
# Means over the evaluated records with 95% confidence intervals (Wilson for the binary official rates, t
# intervals over records for the token accuracies). Edits = 0 is the unedited model.

# %%
raw = pd.concat([pd.read_csv(out / f"metrics_raw-{m}.csv") for m in methods], ignore_index=True)
raw.to_csv(out / "metrics_raw.csv", index=False)
by_edits = summarize(raw, by=["method", "edits", "family", "prompt_kind", "metric"])
by_edits.to_csv(out / "metrics_by_edits.csv", index=False)
keep = {("official", "rewrite", "efficacy"), ("official", "paraphrase", "generalization"),
        ("official", "neighborhood", "specificity"), ("easyedit", "rewrite", "rewrite_acc"),
        ("easyedit", "paraphrase", "rephrase_acc"), ("easyedit", "neighborhood", "locality"),
        ("generation", "rewrite", "exact_match")}
plot = by_edits[[k in keep for k in zip(by_edits.family, by_edits.prompt_kind, by_edits.metric)]].copy()
plot["measure"] = plot.family + ": " + plot.metric
g = sns.relplot(plot, x="edits", y="mean", hue="method", col="measure", col_wrap=4, kind="line", marker="o",
                height=2.6, aspect=1.2, facet_kws=dict(sharey=False))
for ax, (name, sub) in zip(g.axes.flat, plot.groupby("measure", sort=False)):
    for method, s in sub.groupby("method"):
        ax.fill_between(s.edits, s.ci_low, s.ci_high, alpha=0.2)
g.set_titles("{col_name}")
g.figure.savefig(out / "accuracy_vs_edits.png", dpi=120)
pivot = plot.pivot_table(index=["method", "edits"], columns="measure", values="mean").round(3)
pivot

# %% [markdown]
# ## What goes with a collapse: weight growth, conditioning, drift

# %%
diag = pd.concat([pd.read_csv(out / f"diagnostics-{m}.csv") for m in methods
                  if (out / f"diagnostics-{m}.csv").exists()], ignore_index=True)
diag = diag.drop_duplicates(["method", "batch", "layer"], keep="last")
diag.to_csv(out / "diagnostics.csv", index=False)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for ax, col, title in zip(axes, ["relative_change", "condition", "drift"],
                          ["‖W − W⁰‖ / ‖W⁰‖", "condition number of the solved system", "drift on held-out keys"]):
    sns.lineplot(diag, x="edits", y=col, hue="method", style="layer", ax=ax, legend=(col == "drift"))
    ax.set(title=title, yscale="log")
sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
fig.tight_layout()
fig.savefig(out / "diagnostics.png", dpi=120, bbox_inches="tight")
diag.groupby(["method", "edits"])[["relative_change", "condition", "drift", "target_steps", "seconds"]].mean().round(4)

# %% [markdown]
# ## Where the collapse begins
# For each method and measure: the first milestone, the first milestone more than 10 points below it ("drop") and
# the first below half of it ("collapse"); empty where the stream never got there. Thresholds are those of
# `alphaedit_core/verdicts.py`. Locality and specificity are included: their fall is the edits' side effect.

# %%
onset = pd.DataFrame([dict(method=m, measure=name, **onsets(dict(zip(s.edits, s["mean"]))))
                      for (m, name), s in plot.groupby(["method", "measure"])])
onset.to_csv(out / "onsets.csv", index=False)
onset.astype({c: "Int64" for c in ["first", "drop", "collapse", "last"]})

# %% [markdown]
# ## Verdicts
# The decision rules (thresholds included) are in `alphaedit_core/verdicts.py`; this cell only feeds them the
# means above. A drop or a collapse counts in either metric family: the official efficacy (a probability
# comparison) or EasyEdit's rewrite_acc (token accuracy, the "accuracy" of the claim).

# %%
def value(method: str, edits: int, family: str, metric: str) -> float:
    row = plot[(plot.method == method) & (plot.edits == edits) & (plot.family == family) & (plot.metric == metric)]
    return float(row["mean"].iloc[0]) if len(row) else float("nan")


efficacy = {m: {e: value(m, e, "official", "efficacy") for e in sorted(set(plot[plot.method == m].edits))}
            for m in methods}
rewrite = {m: {e: value(m, e, "easyedit", "rewrite_acc") for e in sorted(set(plot[plot.method == m].edits))}
           for m in methods}
claims = edit_count_claims(efficacy, rewrite, n_planned=n_edits, checkpointed=checkpointed)
last = max(e for m in methods for e in efficacy[m])
summary = dict(model=model_dir, notebook="edit_count", n_edits=last, n_edits_planned=n_edits,
               edits_checkpointed=checkpointed, batch_size=batch_size, quick=quick, methods=methods,
               milestones=milestones, eval_cap=eval_cap, claims=claims)
(out / "summary.json").write_text(json.dumps(summary, indent=1))
for cid, c in claims.items():
    print(f"{cid}: {c['verdict']} — {c['evidence']}")
