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
# **P1–P3** (the paper's own claims) After 2,000 sequential edits AlphaEdit keeps unrelated knowledge and text
# quality better than MEMIT while editing better (P1), keeps general ability near the unedited model's (P2) and
# keeps hidden representations close to the unedited model's (P3).
#
# One sequential stream of edits (batches of `batch_size`), AlphaEdit and its ablation MEMIT from the same
# original weights and on the same records, evaluated at milestones on the same seeded sample of the records edited
# so far with the official (probability comparison) and EasyEdit (token accuracy) metrics, generation-based exact
# match and the official fluency and consistency on subsamples; the general-capability measures (perplexity on two
# held-out text sources) and the drift of hidden states on held-out text at the same milestones. Neighbourhood
# prompts never name a subject edited in the stream: the evaluator refuses to score one. Per batch: norm of the
# weight change, condition number of the solved system, drift of the edited layers' outputs on held-out preserved
# keys. The run checkpoints after every batch, keeps a snapshot of the edited weights at every milestone (so the
# milestone can be re-scored without re-editing), and resumes where it stopped.

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
stop_after_edits = None  # end the stream after this many edits (None: n_edits); the records stay the n_edits stream's
eval_cap = 300  # records evaluated per milestone, a seeded sample of those edited so far (None: all)
gen_cap = 50  # records of that sample also evaluated by greedy generation
fluency_cap = 50  # records of that sample also scored for fluency and consistency (100-token generations)
fluency_at = None  # milestones scored for fluency and consistency (None: the unedited model and the last milestone)
eval_chunk = 50  # records scored at a time (fluency: a tenth of it); each chunk's rows are kept as it finishes
drift_tokens = 4000  # held-out corpus tokens for the drift of preserved outputs
capability_corpora = ["fortunes", "wordnet"]  # held-out text sources for perplexity and hidden-state drift
capability_tokens = 4000  # tokens of each source
seed = 0
results_dir = "../results"
quick = False

# %%
import hashlib
import json
import math
import random
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from alphaedit_core import capability
from alphaedit_core.arch import ModelAdapter
from alphaedit_core.checkpoint import snapshot_path
from alphaedit_core.corpus import get_corpus
from alphaedit_core.data import load_offline_counterfact, to_requests
from alphaedit_core.editor import Editor
from alphaedit_core.hparams import EditHParams
from alphaedit_core.metrics import EVALUATOR_VERSION, evaluate, fit_tfidf, summarize
from alphaedit_core.metrics.paired import paired_differences, plot_paired_differences
from alphaedit_core.models import load_model, model_fingerprint
from alphaedit_core import runs
from alphaedit_core.paths import cache_dir
from alphaedit_core.provenance import code_version
from alphaedit_core.stats import corpus_keys
from alphaedit_core.verdicts import edit_count_claims, onsets, p1_preservation, p2_capability, p3_representations

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
# the unedited model is scored on the sample of the whole plan's last milestone, however the run is split into
# sittings (`stop_after_edits`): a run stopped at 100 and resumed shares its 0-edit scores with one that runs through
sample_at = max([m for m in milestones if m <= n_edits], default=n_edits)
milestones = [m for m in milestones if m <= (stop_after_edits or n_edits)]
data_digest = runs.data_digest(requests)
run_key = runs.run_key(model_fingerprint(lm), n_edits, batch_size, seed, hp.to_dict(), requests)
run_dir = cache_dir("runs", "edit_count", run_key)
print(f"{n_edits} edits in batches of {batch_size}; milestones {milestones}; checkpoints in {run_dir}")
print("hyperparameters:", json.dumps(hp.to_dict()))

# %% [markdown]
# The unedited model's argmax tokens (for EasyEdit locality) are computed once per model and records, when a score
# first needs them (a process that edits first finds them computed by another), and kept in the shared cache.

# %%
def unedited_argmax(stream_records=records, stream_requests=requests, fingerprint=model_fingerprint(lm)) -> dict:
    """runs.cached_baseline on first use: shared by every run of this model and records (the stream's, bound here:
    later cells reuse the names for a batch)."""
    return runs.cached_baseline(lm, tok, stream_records, fingerprint, stream_requests)


corpus = get_corpus(hp.mom2_corpus)
probe_keys = corpus_keys(lm, tok, adapter, hp.layers, corpus, skip_tokens=hp.mom2_n_tokens, n_tokens=drift_tokens,
                         seq_len=hp.mom2_seq_len)
tfidf = fit_tfidf(records)
held_out = {name: get_corpus(name) for name in capability_corpora}
drift_layers = sorted({hp.layers[-1], adapter.n_layers // 2, adapter.n_layers - 1})
reference_states = {name: capability.hidden_states(lm, tok, c, layers=drift_layers, n_tokens=capability_tokens,
                                                   seq_len=hp.mom2_seq_len) for name, c in held_out.items()}


def eval_sample(n_done: int) -> list[dict]:
    done = records[:n_done]
    if eval_cap is None or n_done <= eval_cap:
        return done
    return random.Random(seed + n_done).sample(done, eval_cap)


def versions() -> dict:
    return dict(code_version=code_version(), evaluator_version=EVALUATOR_VERSION)


def eval_parts(n_done: int, method: str) -> tuple[Path, str]:
    """Where the parts of a milestone's evaluation are kept until its rows are in the table (`runs.in_parts`): the
    folder (the unedited model's scores are shared by every method) and a name that holds the evaluation settings."""
    settings = json.dumps(dict(edits=n_done, eval_cap=eval_cap, gen_cap=gen_cap, fluency_cap=fluency_cap,
                               fluency_at=fluency_at, eval_chunk=eval_chunk, evaluator=EVALUATOR_VERSION),
                          sort_keys=True)
    folder = unedited_dir / "eval-parts" if n_done == 0 else run_dir / f"eval-parts-{method}"
    return folder, f"metrics-{n_done}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


def evaluate_at(n_done: int, method: str) -> pd.DataFrame:
    """Every metric family on the milestone's sample; the unedited model (0 edits) on the plan's last. Scored
    `eval_chunk` records at a time, each chunk's rows kept as it finishes, so an interrupted evaluation resumes."""
    sample = eval_sample(n_done) if n_done else eval_sample(sample_at)
    edited = records[:n_done]  # the evaluator refuses a neighbourhood prompt about any of these subjects
    extra = dict(method=method, edits=n_done, **versions())

    def scores(chunk: list[dict], families: tuple[str, ...], keep: list[str] | None = None, **kw):
        def compute() -> pd.DataFrame:
            rows = evaluate(lm, tok, chunk, families=families, edited=edited, extra_columns=extra, progress=False,
                            **kw)
            return rows if keep is None else rows[rows.metric.isin(keep)]
        return compute

    def chunks(rows: list[dict], size: int) -> list[list[dict]]:
        return [rows[i : i + size] for i in range(0, len(rows), size)]

    base = unedited_argmax()
    parts = [scores(c, ("official", "easyedit"), baseline=base) for c in chunks(sample, eval_chunk)]
    parts += [scores(c, ("generation",), answer_max_new_tokens=8) for c in chunks(sample[:gen_cap], eval_chunk)]
    if n_done in ({0, milestones[-1]} if fluency_at is None else set(fluency_at) | {0}):  # ten generations each
        parts += [scores(c, ("official",), keep=["fluency", "consistency"], fluency=True, max_new_tokens=100,
                         tfidf_vectorizer=tfidf) for c in chunks(sample[:fluency_cap], max(1, eval_chunk // 10))]
    return runs.in_parts(*eval_parts(n_done, method), parts)[0]


def capability_at(n_done: int, method: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Perplexity per window of each held-out source, and the drift of hidden states from the unedited model's
    per block of tokens (the pairing units of the paired intervals)."""
    ppl_rows, drift_rows = [], []
    for name, c in held_out.items():
        ppl = capability.perplexity(lm, tok, c, n_tokens=capability_tokens, seq_len=hp.mom2_seq_len)
        ppl_rows += [dict(method=method, edits=n_done, corpus=name, window=w, nll_sum=s, tokens=n, **versions())
                     for w, s, n in ppl["windows"]]
        states = capability.hidden_states(lm, tok, c, layers=drift_layers, n_tokens=capability_tokens,
                                          seq_len=hp.mom2_seq_len)
        for l in drift_layers:
            ref, now = reference_states[name][l], states[l]
            rel = (now - ref).norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-12)  # [tokens]
            cos = torch.nn.functional.cosine_similarity(now, ref, dim=-1)
            for b, start in enumerate(range(0, len(rel), hp.mom2_seq_len)):
                block = slice(start, start + hp.mom2_seq_len)
                drift_rows.append(dict(method=method, edits=n_done, corpus=name, layer=l, block=b,
                                       tokens=len(rel[block]), relative_distance=float(rel[block].mean()),
                                       cosine=float(cos[block].mean()), **versions()))
    return pd.DataFrame(ppl_rows), pd.DataFrame(drift_rows)


# The unedited model's scores (0 edits) do not depend on the method or the editing hyperparameters: they are
# computed once per model, records and evaluation settings, and shared by every method and variant of the stream.
unedited_key = hashlib.sha256(json.dumps(dict(
    model=model_fingerprint(lm), data=data_digest, n_edits=n_edits, sample=sample_at, seed=seed,
    eval_cap=eval_cap, gen_cap=gen_cap, fluency_cap=fluency_cap, drift_layers=drift_layers,
    seq_len=hp.mom2_seq_len, capability=[c.identity for c in held_out.values()], capability_tokens=capability_tokens,
    evaluator=EVALUATOR_VERSION), sort_keys=True, default=str).encode()).hexdigest()[:16]
unedited_dir = cache_dir("runs", "unedited", unedited_key)


def unedited(names: tuple[str, ...], method: str, compute, wait: bool = True) -> tuple[pd.DataFrame, ...] | None:
    """The unedited model's tables `names` (labelled with `method`), computed once by `compute` (one frame per
    name) and shared through the cache. While another method's process computes them, None with `wait=False` (this
    process edits first and asks again once its model is restored), so that parallel processes never compute them
    twice."""
    def announced():
        print(f"{method}: computing the unedited model's {', '.join(names)} (shared by every method)", flush=True)
        return compute()

    frames = runs.cached_tables(unedited_dir, names, announced, wait=wait)
    if frames is None:
        print(f"{method}: another process computes the unedited model's {', '.join(names)}: editing first",
              flush=True)
    return None if frames is None else tuple(f.assign(method=method) for f in frames)


# per-method tables carry the run key: rows of another run are never extended or taken for this run's progress
run_tables = runs.RunTables(run_key, "stream")
append, check_table, done = run_tables.append, run_tables.check, run_tables.done

# %% [markdown]
# ## The runs
# One table per method (`metrics_raw-<method>.csv`, `diagnostics-<method>.csv`), so that the methods can also run
# as separate processes; milestones and batches already written are not redone, and the editor resumes from its
# checkpoint. The first batch's targets (optimised on the unedited model, the same for AlphaEdit and MEMIT and for
# either P rule) are shared: two method processes split its chunks, and a later stream of the model reads them.

# %%
deadline = time.time() + 60 * time_budget_min if time_budget_min is not None else None
checkpointed: dict[str, int] = {}  # edits in each method's checkpoint (ahead of the last milestone mid-stream)
for method in methods:
    metrics_path, diag_path = out / f"metrics_raw-{method}.csv", out / f"diagnostics-{method}.csv"
    editor = Editor.prepare(lm, tok, hp, method=method, diagnostics=True, progress=False)
    capability_path, hidden_path = out / f"capability_raw-{method}.csv", out / f"hidden_drift-{method}.csv"
    for path in (metrics_path, diag_path, capability_path, hidden_path):
        check_table(path)

    def unedited_rows(wait: bool, method=method, metrics_path=metrics_path, capability_path=capability_path,
                      hidden_path=hidden_path) -> bool:
        """Append the unedited model's rows (edits = 0) where missing; False if another process still computes
        them (`wait=False`). Only while the model is unedited."""
        ready = True
        if 0 not in done(metrics_path, "edits"):
            got = unedited(("metrics",), method, lambda: (evaluate_at(0, method),), wait=wait)
            if got is None:
                ready = False
            else:
                append(metrics_path, got[0])
                runs.drop_parts(*eval_parts(0, method))
        if 0 not in done(capability_path, "edits"):
            got = unedited(("capability", "hidden_drift"), method, lambda: capability_at(0, method), wait=wait)
            if got is None:
                ready = False
            else:
                append(hidden_path, got[1])
                append(capability_path, got[0])
        return ready

    unedited_ready = unedited_rows(wait=False)

    def on_batch(ed: Editor, batch, report, metrics_path=metrics_path, diag_path=diag_path, method=method,
                 capability_path=capability_path, hidden_path=hidden_path) -> None:
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
        if n_done in milestones and not snapshot_path(run_dir / method, n_done).exists():
            ed.save_snapshot(snapshot_path(run_dir / method, n_done), **versions())
        if n_done in milestones and n_done not in done(metrics_path, "edits"):
            append(metrics_path, evaluate_at(n_done, method))
            runs.drop_parts(*eval_parts(n_done, method))
        if n_done in milestones and n_done not in done(capability_path, "edits"):
            ppl, drift = capability_at(n_done, method)
            append(hidden_path, drift)
            append(capability_path, ppl)  # written last: its rows mark the milestone as done
        seconds = report.seconds_targets + report.seconds_keys + report.seconds_solve
        print(f"{method}: {n_done} edits, {seconds:.0f} s for this batch", flush=True)

    editor.run(requests, batch_size=batch_size, checkpoint=run_dir / method, on_batch=on_batch, deadline=deadline,
               stop_after=None if stop_after_edits is None else math.ceil(stop_after_edits / batch_size),
               first_batch_cache=cache_dir("runs", "first-batch-targets"))  # shared by the model's streams
    checkpointed[method] = min(editor.batches_done * batch_size, n_edits)
    print(f"{method}: {checkpointed[method]} of {n_edits} edits done")
    editor.restore()
    if not unedited_ready:  # another method's process was computing them: read them now (the model is unedited)
        unedited_rows(wait=True)

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
        ("generation", "rewrite", "exact_match"), ("official", "generation", "fluency"),
        ("official", "generation", "consistency")}
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
# ## AlphaEdit − MEMIT, paired on the same records
# Both methods edit the same stream and are scored on the same seeded sample of records at each milestone, so the
# comparison is the per-record difference, with a paired bootstrap 95% interval (2,000 resamples of the records;
# `alphaedit_core/metrics/paired.py`). Above the zero line AlphaEdit is higher; for every measure here higher is
# better.

# %%
raw_edited = raw[raw.edits > 0]
paired = paired_differences(raw_edited, "alphaedit", "memit") if set(methods) >= {"alphaedit", "memit"} and len(
    set(raw_edited[raw_edited.method == "alphaedit"].edits) & set(raw_edited[raw_edited.method == "memit"].edits)
) else pd.DataFrame()
if len(paired):
    paired = paired[[k in keep for k in zip(paired.family, paired.prompt_kind, paired.metric)]]
    paired.to_csv(out / "paired_differences.csv", index=False)
    fig = plot_paired_differences(paired, panel=("family", "metric"), hue=None)
    fig.savefig(out / "paired_differences.png", dpi=120, bbox_inches="tight")
    show = paired.assign(measure=paired.family + ": " + paired.metric,
                         interval=[f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi in
                                   zip(paired["diff"], paired.ci_low, paired.ci_high)])
    display(show.pivot_table(index="edits", columns="measure", values="interval", aggfunc="first"))

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
                      for (m, name), s in plot.groupby(["method", "measure"])
                      if (s.edits > 0).any()])  # measures taken at 0 edits only (yet) have no onset
onset.to_csv(out / "onsets.csv", index=False)
onset.astype({c: "Int64" for c in ["first", "drop", "collapse", "last"]})

# %% [markdown]
# ## General capability and hidden representations
# Perplexity of each model on two held-out text sources that the statistics never saw, and the distance of its
# hidden states from the unedited model's on the same tokens (‖h − h⁰‖ / ‖h⁰‖, mean over tokens), at the last
# edited layer, the middle layer and the last layer. Comparisons are paired over the same text windows
# (perplexity, weighted by tokens: windows are cut at document ends, so some are short) and the same
# token blocks (drift).

# %%
def tidy(frame: pd.DataFrame, unit: str, metric: str, value: pd.Series) -> pd.DataFrame:
    """Rows in the evaluator's tidy shape, so that `paired_differences` pairs them by token block."""
    return pd.DataFrame(dict(case_id=frame.corpus + ":" + frame[unit].astype(str), family="held-out text",
                             prompt_kind=frame.corpus, metric=metric, value=value, method=frame.method,
                             edits=frame.edits))


cap = pd.concat([pd.read_csv(out / f"capability_raw-{m}.csv") for m in methods
                 if (out / f"capability_raw-{m}.csv").exists()], ignore_index=True)
cap = cap.drop_duplicates(["method", "edits", "corpus", "window"], keep="last")
cap.to_csv(out / "capability_raw.csv", index=False)
hidden = pd.concat([pd.read_csv(out / f"hidden_drift-{m}.csv") for m in methods
                    if (out / f"hidden_drift-{m}.csv").exists()], ignore_index=True)
hidden = hidden.drop_duplicates(["method", "edits", "corpus", "layer", "block"], keep="last")
hidden.to_csv(out / "hidden_drift.csv", index=False)
ppl = (cap.groupby(["method", "edits", "corpus"])[["nll_sum", "tokens"]].sum()
       .assign(perplexity=lambda t: (t.nll_sum / t.tokens).map(math.exp)).reset_index())
ppl.to_csv(out / "perplexity.csv", index=False)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
sns.lineplot(ppl, x="edits", y="perplexity", hue="method", style="corpus", marker="o", ax=axes[0])
axes[0].set(title="held-out perplexity")
drift_mean = hidden.groupby(["method", "edits", "layer"]).relative_distance.mean().reset_index()
sns.lineplot(drift_mean, x="edits", y="relative_distance", hue="method", style="layer", marker="o", ax=axes[1])
axes[1].set(title="hidden-state distance from the unedited model", ylabel="‖h − h⁰‖ / ‖h⁰‖")
fig.tight_layout()
fig.savefig(out / "capability.png", dpi=120, bbox_inches="tight")
drift_rows = pd.concat([tidy(h, "block", f"layer {l}", h.relative_distance) for l, h in hidden.groupby("layer")])
ppl.pivot_table(index=["method", "edits"], columns="corpus", values="perplexity").round(3)

# %% [markdown]
# ## Verdicts
# The decision rules (thresholds included) are in `alphaedit_core/verdicts.py`; this cell only feeds them the
# means above and the paired differences. A drop or a collapse counts in either metric family: the official efficacy (a probability
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
both = sorted(set(efficacy.get("alphaedit", {})) & set(efficacy.get("memit", {})) - {0})
if both:
    final = both[-1]
    at = paired[paired.edits == final]
    p1_rows = {metric: r for metric, r in zip(at.metric, at.to_dict("records"))
               if metric in ("efficacy", "generalization", "specificity", "locality", "fluency", "consistency")}
    claims["P1"] = p1_preservation(p1_rows, final)
    # perplexity pairs by text window, weighted by tokens: the difference is that of the pooled perplexities above
    unedited = cap[(cap.method == "alphaedit") & (cap.edits == 0)].assign(method="unedited")

    def capability_pairs(e: int) -> pd.DataFrame:
        """AlphaEdit − unedited and AlphaEdit − MEMIT at `e` edits: perplexity (per text source) and drift (per layer)."""
        now = cap[cap.edits == e]
        return pd.concat([
            capability.paired_nll(pd.concat([now[now.method == "alphaedit"], unedited]), "alphaedit", "unedited")
            .assign(comparison="alphaedit - unedited"),
            capability.paired_nll(now, "alphaedit", "memit").assign(comparison="alphaedit - memit"),
            paired_differences(drift_rows[drift_rows.edits == e], "alphaedit", "memit", by=("metric",))
            .assign(comparison="alphaedit - memit")]).assign(edits=e)

    measured = [e for e in both if {"alphaedit", "memit"} <= set(cap[cap.edits == e].method)
                and {"alphaedit", "memit"} <= set(drift_rows[drift_rows.edits == e].method)]
    paired_cap = pd.concat([capability_pairs(e) for e in measured] or [pd.DataFrame(columns=["edits"])],
                           ignore_index=True)
    paired_cap.to_csv(out / "paired_capability.csv", index=False)
    at_final = paired_cap[paired_cap.edits == final]
    if len(at_final):  # capability is measured at every milestone of both methods
        ppl_final = at_final[at_final.prompt_kind.notna()]
        vs_unedited, vs_memit = (ppl_final[ppl_final.comparison == c]
                                 for c in ("alphaedit - unedited", "alphaedit - memit"))
        drift_paired = at_final[at_final.metric.notna()]
        claims["P2"] = p2_capability(dict(zip(vs_unedited.prompt_kind, vs_unedited.to_dict("records"))),
                                     dict(zip(vs_memit.prompt_kind, vs_memit.to_dict("records"))), final)
        claims["P3"] = p3_representations(dict(zip(drift_paired.metric, drift_paired.to_dict("records"))), final)
summary = dict(model=model_dir, notebook="edit_count", n_edits=last, n_edits_planned=n_edits,
               stop_after_edits=stop_after_edits,
               edits_checkpointed=checkpointed, batch_size=batch_size, quick=quick, methods=methods,
               milestones=milestones, eval_cap=eval_cap, claims=claims)
(out / "summary.json").write_text(json.dumps(summary, indent=1))
for cid, c in claims.items():
    print(f"{cid}: {c['verdict']} — {c['evidence']}")
