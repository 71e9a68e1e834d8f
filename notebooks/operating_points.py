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
# # Operating points: AlphaEdit and MEMIT compared at equal edit strength
#
# **The question.** AlphaEdit's null-space threshold and L2 are absolute numbers, so they depend on the scale of the
# keys; MEMIT's λ does not. At their default knobs the two methods sit at different points of one trade-off between
# fitting the edits and leaking into preserved knowledge, so a comparison at default knobs says little. Here each
# method is swept along its knobs on one fixed stream of edits, and the methods are compared **at equal efficacy**,
# paired on the same records. A projector rule that carries across models is calibrated from the sweep.
#
# Claims tested here (see the claims ledger): **C3** when moving AlphaEdit to another model, start from that
# model's MEMIT configuration, not from the LLaMA3-8B AlphaEdit configuration; **C4** nullspace_threshold strongly
# changes editing results, L2 changes stability, clamp_norm_factor bounds the size of the edit vector; **C5**
# check P before editing (restated: is P verified at the official rule, and what fixes it); **P4** adding the
# projection to other methods improves them.
#
# **Setup.** The first `n_edits` edits of the `edit_count` stream (same seeded sample of the offline set, whose
# neighbourhood prompts never name an edited subject), in batches of `batch_size`, edited from the same original
# weights for every setting. One knob moves at a time from the model's preset: AlphaEdit's absolute threshold,
# its energy rule (keep the smallest directions holding at most a share of tr C), L2; MEMIT's λ
# (`mom2_update_weight`); `clamp_norm_factor` for both; extra seeds (hparams `seed`: the sampled context templates)
# at the default point of both; AlphaEdit with its statistics, hence P, computed on another text (`corpora`: WordNet's
# dictionary glosses, an encyclopedic text that installs from Debian, against the preset's Jane Austen novels);
# AlphaEdit with the LLaMA3-8B preset's settings (C3); and, for P4, MEMIT with its
# update projected by AlphaEdit's P (Δ ← Δ P after MEMIT's solve, the paper's "one line") and the official
# repository's sequential MEMIT (λ C + the earlier batches' K Kᵀ + the new K Kᵀ, no P), which tells "remembers the
# earlier edits' keys" apart from "projects onto the null space", both at their default point. All settings but the
# corpus ones read one cached second-moment computation per layer; only the projector (or λ) changes. Every setting is scored on all
# edited records (official efficacy, generalisation and specificity; EasyEdit rewrite_acc and locality), on the
# drift of the edited layers' outputs on held-out corpus keys, and, after the first batch, on that batch's records
# (so that the second batch's damage to them, the *retention*, is measured). Each setting's stream checkpoints after
# every batch in its own folder (keyed by its hparams); a run stops starting new work after `time_budget_min` and
# resumes where it stopped.

# %% tags=["parameters", "remove-cell"]
model = "smollm2-135m-instruct"  # offline short name, hub id or local folder
label = ""  # results folder name (empty: the model name, slashes as double dashes)
hparams = ""  # preset name (empty: the model's own preset)
overrides = {}  # hparams fields to override in the preset (every setting starts from it)
methods = ["alphaedit", "memit", "memit_projected", "memit_seq"]  # the last two: P4 (default point only)
n_edits = 200
batch_size = 100
stream_of = 2000  # the records are the first n_edits of edit_count's seeded stream of this many
thresholds = [0.05, 0.02, 0.005]  # AlphaEdit, absolute eigenvalue threshold (official rule; preset 0.02)
energies = [0.1, 0.03, 0.01, 0.001]  # AlphaEdit, energy rule: share of tr C the kept directions may hold
l2s = [1.0, 10.0, 100.0, 1000.0]  # AlphaEdit L2 (preset 10)
memit_lambdas = [1500.0, 5000.0, 15000.0, 50000.0, 150000.0]  # MEMIT mom2_update_weight (preset 15,000)
clamps = [0.75]  # clamp_norm_factor values besides the preset's, for both methods (0.75: the LLaMA3-8B file)
seeds = [1, 2]  # hparams seeds besides the preset's, at the default point of both methods
migration_preset = "alphaedit-llama3-8b"  # C3: AlphaEdit with this preset's algorithm settings ("" : none)
corpora = ["wordnet"]  # other texts for AlphaEdit's statistics (its P) at the preset's rule: names or text files
fact_tokens = 4000  # tokens of held-out factual text (true statements of records not edited here) for the leak
leak_target = 0.1  # calibration: held-out ‖Pk‖/‖k‖ (mean over the edited layers) a protecting P stays under
efficacy_floor = 0.9  # calibration: mean efficacy at which the edits count as landing
probe_tokens = 4000  # held-out corpus tokens (after those of the statistics) for drift and leak
block_tokens = 64  # tokens per block: the pairing unit of the drift
retention = True  # also score the first batch's records right after it (official family)
time_budget_min = None  # start no new setting or batch after this many minutes (the run resumes next time)
seed = 0
results_dir = "../results"
quick = False

# %% tags=["hide-input", "remove-output"]
import functools
import json
import math
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from alphaedit_core import runs, sweeps
from alphaedit_core.arch import ModelAdapter
from alphaedit_core.corpus import TextCorpus, get_corpus
from alphaedit_core.data import load_offline_counterfact, to_requests
from alphaedit_core.editor import USES_P, Editor
from alphaedit_core.hparams import EditHParams
from alphaedit_core.keys import keys_and_outputs
from alphaedit_core.metrics import EVALUATOR_VERSION, evaluate, summarize
from alphaedit_core.metrics.paired import paired_differences
from alphaedit_core.models import load_model, model_fingerprint
from alphaedit_core.paths import cache_dir
from alphaedit_core.projection import ProjectorWarning, decompose, projector_from_spectrum
from alphaedit_core.provenance import code_version
from alphaedit_core.requests import EditRequest
from alphaedit_core.stats import corpus_keys, layer_stats

model_dir = label or model.replace("/", "--")
out = Path(results_dir) / model_dir / "operating_points"
out.mkdir(parents=True, exist_ok=True)
sns.set_theme(style="whitegrid")
torch.manual_seed(seed)
lm, tok = load_model(model)
hp = EditHParams.load(hparams or model, **overrides)
adapter = ModelAdapter.from_model(lm)
fingerprint = model_fingerprint(lm)
stream_records = load_offline_counterfact(n=max(stream_of, n_edits), seed=seed)
records, fact_records = stream_records[:n_edits], stream_records[n_edits:]  # edited here; their facts are held out
requests = to_requests(records)
case_ids = [r["case_id"] for r in records]
n_batches = math.ceil(len(requests) / batch_size)
base = hp.to_dict()
migration, kept_own = None, {}
migration_name = Path(migration_preset).stem if migration_preset else ""  # a preset name or a JSON file
if migration_preset:
    reference = EditHParams.load(migration_preset).to_dict()
    migration = (migration_name, sweeps.migrated_overrides(base, reference))
    kept_own = {k: (base[k], reference[k]) for k in sweeps.MODEL_FIELDS  # not migrated: the model's own
                if k in reference and k != "source" and base[k] != reference[k]}
grid = sweeps.operating_grid(base, thresholds=thresholds, energies=energies, l2s=l2s, lambdas=memit_lambdas,
                             clamps=clamps, seeds=seeds, migration=migration, methods=methods, corpora=corpora)
STATS_FIELDS = ("layers", "mom2_corpus", "mom2_n_tokens", "mom2_seq_len", "mom2_dtype")
for s in grid:  # one statistics computation serves every setting but the corpus ones, which change only the text
    changed = [f for f in STATS_FIELDS if s.hparams(base)[f] != base[f] and not (f == "mom2_corpus" and
                                                                                 s.knob == "mom2_corpus")]
    if changed:
        raise ValueError(f"setting {s.id} changes {changed}: the sweep shares one set of statistics")
run_key = runs.run_key(fingerprint, n_edits, batch_size, seed, base, requests)
run_dir = cache_dir("runs", "operating_points", run_key)
print(f"{len(grid)} settings, {n_edits} edits each in batches of {batch_size}; checkpoints in {run_dir}")
print("preset:", json.dumps(base))
if migration:
    print(f"C3 migration ({migration[0]}): {json.dumps(migration[1])}")
pd.DataFrame([dict(setting=s.id, method=s.method, knob=s.knob, value=s.value, tier=s.tier)
              for s in grid]).rename_axis("order")

# %% [markdown]
# ## The projector at every rule of the sweep
# For every projector rule the sweep uses: per edited layer, the directions P keeps, the share of tr C they carry,
# the eigenvalue at the cut (an absolute threshold just above it keeps the same directions), and the leak ‖Pk‖/‖k‖
# of three kinds of keys: held-out generic keys (corpus tokens the statistics did not see), the subject keys of the
# neighbourhood prompts (facts that must not change), the subject keys of the edits themselves (bare prompt) and
# the keys of held-out factual text (every token of true statements "subject relation object." of the stream's
# records that are not edited here, `leak_facts`). Rules named `…@<corpus>` are P at the preset's rule from the
# statistics of another text. A rule that keeps no direction or every direction at some layer is not run (it is
# listed as degenerate). The table gives each rule's range of kept directions over the edited layers and the means of
# the rest; `projector.csv` has every layer's row, with the eigenvalue at the cut and the equivalent threshold.

# %% tags=["hide-input", "shared-setup"]
corpus_names = [hp.mom2_corpus] + [str(s.value) for s in grid if s.knob == "mom2_corpus"]
stats_of, heldout_of = {}, {}  # per text: the second moments (AlphaEdit's C) and held-out keys after them
for name in corpus_names:
    text = get_corpus(name)
    stats_of[name] = layer_stats(lm, tok, adapter, hp.layers, text, fingerprint=fingerprint,
                                 n_tokens=hp.mom2_n_tokens, seq_len=hp.mom2_seq_len, dtype=hp.mom2_dtype,
                                 progress=False)
    heldout_of[name] = corpus_keys(lm, tok, adapter, hp.layers, text, skip_tokens=hp.mom2_n_tokens,
                                   n_tokens=probe_tokens, seq_len=hp.mom2_seq_len)
covs, probe_keys = stats_of[hp.mom2_corpus], heldout_of[hp.mom2_corpus]  # the preset's: every other setting's
edit_keys, _ = keys_and_outputs(lm, tok, adapter, requests, ["{}"], hp.layers)
neighbour_requests = [EditRequest(p.replace(subj, "{}", 1), subj, "x", case_id=f"{r['case_id']}:{i}")
                      for r in records for i, (p, subj) in enumerate(zip(r["neighborhood_prompts"],
                                                                         r.get("neighborhood_subjects", [])))
                      if subj and subj in p]
neighbour_keys, _ = keys_and_outputs(lm, tok, adapter, neighbour_requests, ["{}"], hp.layers) \
    if neighbour_requests else ({l: torch.empty(0, adapter.d_ff) for l in hp.layers}, None)

statements = [f"{r['requested_rewrite']['prompt'].format(r['requested_rewrite']['subject'])} "
              f"{r['requested_rewrite']['target_true']['str']}." for r in fact_records]
fact_docs = [" ".join(statements[i:i + 20]) for i in range(0, len(statements), 20)]
fact_keys = {l: k[:fact_tokens] for l, k in corpus_keys(lm, tok, adapter, hp.layers, TextCorpus(fact_docs, "facts"),
                                                       skip_tokens=0, n_tokens=None, seq_len=hp.mom2_seq_len).items()} \
    if fact_docs else {l: torch.empty(0, adapter.d_ff) for l in hp.layers}
print(f"held-out factual text: {len(statements)} true statements, {len(fact_keys[hp.layers[0]])} keys per layer")


def rule_of(h: dict) -> tuple[str, float]:
    return ("threshold", h["nullspace_threshold"]) if h["nullspace_mode"] == "threshold" \
        else ("energy", h["nullspace_energy"])


def rule_name(rule: tuple[str, float]) -> str:
    return f"{rule[0]}={rule[1]:g}"


def rule_label(rule: tuple[str, float], corpus: str) -> str:
    """The rule's name, with `@<corpus>` when the statistics come from another text than the preset's."""
    return rule_name(rule) + ("" if corpus == hp.mom2_corpus else f"@{sweeps.corpus_label(corpus)}")


def setting_rule(h: dict) -> str:
    return rule_label(rule_of(h), h["mom2_corpus"])


@functools.lru_cache(maxsize=1)  # one corpus's spectra at a time: [d_ff, d_ff] float64 per layer
def spectra_of(corpus: str) -> dict:
    """Each layer's C decomposed once, for every rule built from that corpus's statistics."""
    return {l: decompose(stats_of[corpus][l], layer=l) for l in hp.layers}


def build_projectors(rule: tuple[str, float], allow_degenerate: bool = False, corpus: str = "") -> dict:
    mode, value = rule
    spectra = spectra_of(corpus or hp.mom2_corpus)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProjectorWarning)  # near-degenerate rules are the sweep's ends: shown below
        return {l: projector_from_spectrum(spectra[l], mode=mode, threshold=value if mode == "threshold" else 1.0,
                                           energy=value if mode == "energy" else 0.5,
                                           allow_degenerate=allow_degenerate) for l in hp.layers}


def mean_leak(p, keys: torch.Tensor) -> float:
    return float(p.key_ratio(keys).mean()) if len(keys) else math.nan


rules = sorted({rule_of(s.hparams(base)) for s in grid if s.method != "memit"})
proj_rows = []
for rule, corpus in [(r, hp.mom2_corpus) for r in rules] + [(rule_of(base), c) for c in corpus_names[1:]]:
    for l, p in build_projectors(rule, allow_degenerate=True, corpus=corpus).items():
        held = p.key_ratio(heldout_of[corpus][l])
        proj_rows.append(dict(rule=rule_label(rule, corpus), corpus=corpus, mode=rule[0], value=rule[1], layer=l, d_ff=p.d, n_kept=p.n_kept,
                              kept_share=p.n_kept / p.d, energy_kept=p.energy_kept(),
                              cut_eigenvalue=float(p.eigenvalues[p.n_kept - 1]) if p.n_kept else math.nan,
                              threshold_equivalent=sweeps.threshold_for(p.eigenvalues.double().numpy(), p.n_kept),
                              leak_heldout=float(held.mean()), leak_heldout_p90=float(held.quantile(0.9)),
                              leak_neighbour=mean_leak(p, neighbour_keys[l]), leak_edit=mean_leak(p, edit_keys[l]),
                              leak_facts=mean_leak(p, fact_keys[l]),
                              **{f"leak_heldout_{sweeps.corpus_label(c)}": mean_leak(p, heldout_of[c][l])
                                 for c in corpus_names},
                              degenerate=p.n_kept in (0, p.d)))
projector = pd.DataFrame(proj_rows)
projector.to_csv(out / "projector.csv", index=False)
degenerate = set(projector[projector.degenerate].rule)
held_columns = [f"leak_heldout_{sweeps.corpus_label(c)}" for c in corpus_names]
# per rule, the mean over the edited layers (every layer's row: projector.csv)
projector.groupby("rule", sort=False).agg(
    directions_kept=("n_kept", lambda n: f"{n.min()}–{n.max()}"), kept_share=("kept_share", "mean"),
    energy_kept=("energy_kept", "mean"), leak_heldout=("leak_heldout", "mean"),
    leak_neighbour=("leak_neighbour", "mean"), leak_edit=("leak_edit", "mean"), leak_facts=("leak_facts", "mean"),
    degenerate=("degenerate", "any"),
).round(3)

# %% [markdown]
# **The covariance corpus.** P at the preset's rule from the statistics of each text, and its leak ‖Pk‖/‖k‖
# (mean over the edited layers) on the held-out keys of every text, on the factual statements, the neighbourhood
# subjects and the edit subjects. A P that protects preserved knowledge has a small leak on the facts and the
# neighbours; the edit subjects are what the edits must still reach.

# %% tags=["hide-input"]
corpus_leak = projector[projector.rule.isin({setting_rule({**base, "mom2_corpus": c}) for c in corpus_names})] \
    .groupby("corpus")[["kept_share", "energy_kept"] + held_columns + ["leak_facts", "leak_neighbour", "leak_edit"]] \
    .mean().reindex(corpus_names).rename(index=sweeps.corpus_label)
corpus_leak.to_csv(out / "corpus_leak.csv")
corpus_leak.round(3)

# %% [markdown]
# ## The runs
# One setting after the other, in the order of the table above (defaults, then each knob's two ends, then the
# interior, then clamp and migration, then seeds), each from the original weights. The tables are shared by all
# settings and carry the run key; a setting counts as done once its row is in `settings.csv` (written last), so a
# second run skips it, and a setting interrupted mid-stream resumes from its checkpoint. Several processes may run
# this loop at once (`python -m alphaedit_core.study --jobs 2` starts one-thread workers that execute the notebook
# up to this cell): each claims a setting before running it and skips the settings another worker holds, and the
# tables take one append at a time.

# %% tags=["hide-input", "sweep-loop"]
def versions() -> dict:
    return dict(code_version=code_version(), evaluator_version=EVALUATOR_VERSION)


# the tables carry the run key: rows of another run are never extended or taken for this run's progress
run_tables = runs.RunTables(run_key, "sweep")
append, check_table, done = run_tables.append, run_tables.check, run_tables.done


tables = {name: out / f"{name}.csv" for name in ("settings", "metrics_raw", "drift_raw", "batches")}
for path in tables.values():
    check_table(path)
baseline = runs.cached_baseline(lm, tok, records, fingerprint, requests, progress=False)  # shared with other runs


def score(setting: str, method: str, n_done: int, families=("official", "easyedit")) -> pd.DataFrame:
    edited = records[:n_done] if n_done else None
    return evaluate(lm, tok, records[:n_done] if n_done else records, baseline=baseline, families=families,
                    edited=edited, extra_columns=dict(setting=setting, method=method, edits=n_done, **versions()),
                    progress=False)


def drift(ed: Editor, setting: str, method: str) -> pd.DataFrame:
    """‖Δ k‖ / ‖W⁰ k‖ over blocks of held-out keys, per edited layer and averaged over them ("all layers")."""
    rows, per_layer = [], []
    for l, d in ed.weight_deltas().items():
        k = probe_keys[l]
        moved, orig = (k @ d.T).norm(dim=-1), (k @ ed.original[l].T).norm(dim=-1)
        vals = [float(moved[i:i + block_tokens].sum() / orig[i:i + block_tokens].sum())
                for i in range(0, len(k), block_tokens)]
        per_layer.append(vals)
        rows += [dict(case_id=f"block{b}", prompt_kind=f"layer {l}", value=v) for b, v in enumerate(vals)]
    rows += [dict(case_id=f"block{b}", prompt_kind="all layers", value=float(np.mean(v)))
             for b, v in enumerate(zip(*per_layer))]
    return pd.DataFrame(rows).assign(family="held-out keys", metric="drift", n_prompts=block_tokens,
                                     setting=setting, method=method, edits=n_edits)


def batch_rows(ed: Editor, setting: str, method: str) -> pd.DataFrame:
    return pd.DataFrame([dict(setting=setting, method=method, batch=r.batch, edits=r.edits_done, layer=l,
                              delta_norm=r.delta_norm[l], total_norm=r.total_norm[l],
                              relative_change=r.total_norm[l] / r.weight_norm[l],
                              condition=r.condition.get(l, math.nan), residual_left=r.residual_left,
                              target_steps=r.target_steps_mean, target_loss=r.target_loss_mean,
                              target_shift=getattr(r, "target_shift_mean", math.nan),
                              seconds=r.seconds_targets + r.seconds_keys + r.seconds_solve)
                         for r in ed.reports for l in hp.layers])


unedited_claim = runs.claim(run_dir / "unedited")  # parallel workers (study --jobs) score it once
if unedited_claim is not None:
    if "unedited" not in done(tables["metrics_raw"], "setting"):
        append(tables["metrics_raw"], score("unedited", "unedited", 0))
    unedited_claim.release()
deadline = time.time() + 60 * time_budget_min if time_budget_min is not None else None
stopped, elsewhere = None, []
for s in grid:
    if s.id in done(tables["settings"], "setting"):
        print(f"{s.id}: done earlier")
        continue
    if deadline is not None and time.time() >= deadline:
        stopped = s.id
        break
    h = EditHParams.from_dict(s.hparams(base))
    rule = rule_of(h.to_dict())
    row = dict(setting=s.id, method=s.method, knob=s.knob, value=str(s.value), tier=s.tier,
               overrides=json.dumps(s.overrides), hparams_digest=sweeps.hparams_digest(s.method, h.to_dict()),
               rule=setting_rule(h.to_dict()) if s.method in USES_P else "", status="", seconds_edit=0.0,
               seconds_eval=0.0, seconds_sitting=0.0)
    ckpt = run_dir / f"{s.id}-{row['hparams_digest']}"
    claimed = runs.claim(ckpt.with_name(ckpt.name + ".setting"))  # another worker may be running this setting
    if claimed is None:
        elsewhere.append(s.id)
        print(f"{s.id}: being run by another worker, skipped here")
        continue
    try:
        if s.id in done(tables["settings"], "setting"):  # finished by another worker since the check above
            continue
        if s.method in USES_P and row["rule"] in degenerate:
            append(tables["settings"], pd.DataFrame([{**row, "status": "degenerate P"}]))
            print(f"{s.id}: not run, P keeps no direction or every direction at some layer")
            continue
        if model_fingerprint(lm) != fingerprint:
            raise RuntimeError("the model is not the unedited one: a previous setting was not restored")
        started = time.time()
        editor = Editor(lm, tok, h, method=s.method,
                        projectors=build_projectors(rule, corpus=h.mom2_corpus) if s.method in USES_P else None,
                        covs=stats_of[h.mom2_corpus], diagnostics=True, progress=False)

        def on_batch(ed, batch, report, s=s) -> None:
            n_done = report.edits_done
            if retention and report.batch == 0 and n_done < len(requests) and \
                    (s.id, n_done) not in done(tables["metrics_raw"], "setting", "edits"):
                append(tables["metrics_raw"], score(s.id, s.method, n_done, families=("official",)))
            print(f"{s.id}: {n_done} edits, "
                  f"{report.seconds_targets + report.seconds_keys + report.seconds_solve:.0f} s for this batch",
                  flush=True)

        try:
            editor.run(requests, batch_size=batch_size, checkpoint=ckpt, on_batch=on_batch, deadline=deadline)
            if editor.batches_done < n_batches:
                stopped = s.id
                print(f"{s.id}: stopped by the time budget after {editor.batches_done} of {n_batches} batches")
                break
            t_eval = time.time()
            if (s.id, n_edits) not in done(tables["metrics_raw"], "setting", "edits"):
                append(tables["metrics_raw"], score(s.id, s.method, n_edits))
            if s.id not in done(tables["drift_raw"], "setting"):
                append(tables["drift_raw"], drift(editor, s.id, s.method))
            if s.id not in done(tables["batches"], "setting"):
                append(tables["batches"], batch_rows(editor, s.id, s.method))
            seconds_edit = sum(r.seconds_targets + r.seconds_keys + r.seconds_solve for r in editor.reports)
            append(tables["settings"], pd.DataFrame([{**row, "status": "done",
                                                      "seconds_edit": round(seconds_edit, 1),
                                                      "seconds_eval": round(time.time() - t_eval, 3),
                                                      "seconds_sitting": round(time.time() - started, 1)}]))
            print(f"{s.id}: done, {seconds_edit:.0f} s editing, {time.time() - t_eval:.0f} s scoring")
        finally:
            editor.restore()
    finally:
        claimed.release()
settings = pd.read_csv(tables["settings"]).drop_duplicates("setting", keep="last") if tables["settings"].exists() \
    else pd.DataFrame(columns=["setting", "status", "seconds_edit", "seconds_eval"])
finished = settings[settings.status == "done"]
pending = [s.id for s in grid if s.id not in set(settings.setting)]
if len(finished):
    per = float((finished.seconds_edit + finished.seconds_eval).mean())
    print(f"{len(finished)} settings done ({per / 60:.1f} min each on average), {len(pending)} pending "
          f"(about {per * len(pending) / 3600:.1f} h more)" + (f"; stopped at {stopped}" if stopped else "")
          + (f"; {len(elsewhere)} left to other workers" if elsewhere else ""))
# what each setting cost (every column, the overrides and run keys included: settings.csv)
settings.set_index("setting")[["status", "seconds_edit", "seconds_eval"]].assign(
    minutes_editing=lambda t: (t.seconds_edit / 60).round(1), minutes_scoring=lambda t: (t.seconds_eval / 60).round(1)
).drop(columns=["seconds_edit", "seconds_eval"])

# %% [markdown]
# ## Every setting's numbers
# Means over the edited records after the whole stream, with 95% intervals (Wilson for the binary official rates,
# t intervals over records for the token accuracies and over key blocks for the drift). `retention` is the change
# of the first batch's efficacy between right after it and the end of the stream (paired per record; 0: the later
# batches did not undo it). The projector columns are means over the edited layers.

# %% tags=["hide-input"]
MEASURES = {"efficacy": ("official", "rewrite", "efficacy"),
            "generalization": ("official", "paraphrase", "generalization"),
            "specificity": ("official", "neighborhood", "specificity"),
            "rewrite_acc": ("easyedit", "rewrite", "rewrite_acc"),
            "locality": ("easyedit", "neighborhood", "locality")}
if finished.empty:
    raise RuntimeError("no setting has finished yet (time budget too short?): run the notebook again, it resumes")
raw = pd.read_csv(tables["metrics_raw"])
raw["measure"] = [next((m for m, k in MEASURES.items() if k == key), None)
                  for key in zip(raw.family, raw.prompt_kind, raw.metric)]
final = raw[raw.setting.isin(set(finished.setting)) & (raw.edits == n_edits) & raw.measure.notna()]
unedited = raw[(raw.setting == "unedited") & raw.measure.notna()]
drift_raw = pd.read_csv(tables["drift_raw"]) if tables["drift_raw"].exists() else pd.DataFrame(
    columns=["setting", "case_id", "prompt_kind", "value"])
drift_all = drift_raw[drift_raw.prompt_kind == "all layers"].assign(measure="drift")
batches = pd.read_csv(tables["batches"])


def retention_rows() -> pd.DataFrame:
    """Per record of the first batch: efficacy at the end of the stream − right after the first batch."""
    first = raw[(raw.measure == "efficacy") & (raw.edits == batch_size) & (raw.edits < n_edits)]
    end = raw[(raw.measure == "efficacy") & (raw.edits == n_edits)]
    m = first.merge(end, on=["setting", "case_id"], suffixes=("_first", "_end"))
    return pd.DataFrame(dict(setting=m.setting, method=m.method_end, case_id=m.case_id, family="official",
                             prompt_kind="first batch", metric="retention", measure="retention",
                             value=m.value_end - m.value_first, edits=n_edits))


kept = retention_rows()
tidy = pd.concat([final, drift_all.assign(family="held-out keys", metric="drift"), kept], ignore_index=True)
stats = summarize(tidy[["setting", "measure", "case_id", "value"]], by=["setting", "measure"])
wide = stats.pivot_table(index="setting", columns="measure", values=["mean", "ci_low", "ci_high"])
wide.columns = [f"{m}" if s == "mean" else f"{m}_{s}" for s, m in wide.columns]
by_rule = projector.groupby("rule")[["kept_share", "energy_kept", "leak_heldout", "leak_neighbour",
                                     "leak_edit"]].mean()
diag = batches.groupby("setting")[["delta_norm", "condition", "residual_left", "target_shift"]].mean().reset_index()
points = finished[["setting", "method", "knob", "value", "tier", "rule", "seconds_edit", "seconds_eval"]] \
    .merge(wide.reset_index(), on="setting", how="left").merge(diag, on="setting", how="left") \
    .merge(by_rule.reset_index(), on="rule", how="left")
points.to_csv(out / "points.csv", index=False)
show = ["setting", "efficacy", "rewrite_acc", "specificity", "locality", "drift", "retention", "kept_share",
        "energy_kept", "leak_heldout", "seconds_edit"]
points[[c for c in show if c in points.columns]].round(3)

# %% [markdown]
# ## The trade-off
# {numref}`fig-operating-tradeoff` puts every setting in the plane of edit strength (horizontal) against
# preservation (vertical). One curve per method and knob, in knob order; crosses mark each method's default point
# (blue AlphaEdit, red MEMIT, purple MEMIT with its update projected, brown sequential MEMIT), open circles its
# other seeds, diamonds the clamp and migration settings, squares P from another text, the ring the calibrated
# projector.

# %% tags=["hide-input"] mystnb={"figure": {"name": "fig-operating-tradeoff", "caption": "Preservation against edit strength after the stream, one point per setting with 95% intervals on both axes. **Rows:** edit strength as official efficacy and as EasyEdit rewrite_acc. **Columns:** specificity and EasyEdit locality (higher is better; the dotted line is the unedited model) and the drift of the edited layers' outputs on held-out keys (lower is better). A method dominates where its curve lies above (left columns) or below (right column) the other's at the same horizontal position."}, "image": {"alt": "A grid of six scatter plots with connected lines, one line per method and knob, edit strength on the horizontal axis and a preservation measure on the vertical axis, with error bars."}}
CURVES = [("nullspace_threshold", "AlphaEdit: threshold"), ("nullspace_energy", "AlphaEdit: energy share"),
          ("L2", "AlphaEdit: L2"), ("mom2_update_weight", "MEMIT: λ")]
done_settings = [s for s in grid if s.id in set(finished.setting)]
curves = {name: sweeps.curve(done_settings, knob, base) for knob, name in CURVES}
curves = {name: c for name, c in curves.items() if c}
P = points.set_index("setting")
fig, axes = plt.subplots(2, 3, figsize=(14, 8), squeeze=False)
palette = dict(zip([n for _, n in CURVES], sns.color_palette("tab10", len(CURVES))))
METHOD_COLOURS = {"alphaedit": "tab:blue", "alphaedit_no_cache": "tab:cyan", "memit": "tab:red",
                  "memit_projected": "tab:purple", "memit_seq": "tab:brown"}
for i, xm in enumerate(["efficacy", "rewrite_acc"]):
    for j, ym in enumerate(["specificity", "locality", "drift"]):
        ax = axes[i, j]
        for name, c in curves.items():
            ids = [s.id for s, _ in c]
            sub = P.loc[ids]
            ax.errorbar(sub[xm], sub[ym], xerr=[sub[xm] - sub[f"{xm}_ci_low"], sub[f"{xm}_ci_high"] - sub[xm]],
                        yerr=[sub[ym] - sub[f"{ym}_ci_low"], sub[f"{ym}_ci_high"] - sub[ym]], marker="o", ms=4,
                        capsize=2, lw=1.2, color=palette[name], label=name)
        for s in done_settings:
            if s.knob in ("default", "seed", "clamp_norm_factor", "migration", "mom2_corpus"):
                colour = METHOD_COLOURS[s.method]
                marker = {"default": "X", "seed": "o", "clamp_norm_factor": "D", "migration": "D",
                          "mom2_corpus": "s"}[s.knob]
                ax.scatter(P.loc[s.id, xm], P.loc[s.id, ym], marker=marker, s=60 if s.knob == "default" else 30,
                           facecolors="none" if s.knob == "seed" else colour, edgecolors=colour, zorder=3)
        if ym != "drift":
            base_y = unedited[unedited.measure == ym].value.mean()
            ax.axhline(base_y, color="k", ls=":", lw=1)
        ax.set(xlabel=xm, ylabel=ym)
axes[0, 0].legend(fontsize=8)
fig.tight_layout()
fig.savefig(out / "tradeoff.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## The methods at equal efficacy
# Each AlphaEdit curve against MEMIT's λ curve. **Interpolated:** at a target efficacy (each default point's
# efficacy where the other curve reaches it, else the middle of the overlap), each curve is interpolated linearly
# between the two settings that bracket the target, and the outcome with the same weight; AlphaEdit − MEMIT with a
# paired bootstrap 95% interval over the records (and over key blocks for the drift) that redoes the matching in
# every resample (`sweeps.equal_efficacy`). **Nearest pair:** the AlphaEdit and MEMIT settings whose efficacies
# are closest, compared record by record without interpolation (`paired_differences`; their efficacy gap is
# quoted). Both pair the same records: every setting is scored on the same case ids.

# %% tags=["hide-input"]
OUTCOMES = ["generalization", "specificity", "rewrite_acc", "locality", "drift"]


def matrix(ids: list[str], measure: str) -> np.ndarray:
    """[settings, units] of per-record (per-block for drift) values, units in one order for every setting."""
    src = drift_all if measure == "drift" else final[final.measure == measure]
    table = src[src.setting.isin(ids)].pivot_table(index="setting", columns="case_id", values="value")
    if table.isna().any().any() or len(table) != len(ids):
        raise ValueError(f"{measure}: the settings {ids} were not scored on the same units")
    return table.loc[ids].to_numpy()


def case_sets(ids: list[str]) -> set:
    return {frozenset(final[(final.setting == i) & (final.measure == "efficacy")].case_id) for i in ids}


default_eff = {m: float(P.loc[f"{m}-default", "efficacy"]) for m in ("alphaedit", "memit") if f"{m}-default" in P.index}
rows = []
memit_curve = curves.get("MEMIT: λ", [])
for name, c in curves.items():
    if name.startswith("MEMIT") or not memit_curve:
        continue
    ids_a, ids_b = [s.id for s, _ in c], [s.id for s, _ in memit_curve]
    if len(case_sets(ids_a + ids_b)) != 1:
        raise ValueError("the settings were not scored on the same records")
    start_a = next((i for i, (s, _) in enumerate(c) if s.knob == "default"), len(c) // 2)
    start_b = next((i for i, (s, _) in enumerate(memit_curve) if s.knob == "default"), len(memit_curve) // 2)
    eff_a, eff_b = matrix(ids_a, "efficacy"), matrix(ids_b, "efficacy")
    targets = sweeps.match_targets(eff_a.mean(1), eff_b.mean(1), list(default_eff.values()))
    comparison = f"{name} − MEMIT: λ"
    for target in targets:
        for o in OUTCOMES:
            r = sweeps.equal_efficacy(eff_a, matrix(ids_a, o), eff_b, matrix(ids_b, o), target, start_a=start_a,
                                      start_b=start_b, same_units=o != "drift", seed=seed)
            seg = lambda ids, i, w: (ids[int(i)] + (f" → {ids[int(i) + 1]}" if w else "")) if np.isfinite(i) else ""
            rows.append(dict(comparison=comparison, kind="interpolated", measure=o, **r,
                             settings_a=seg(ids_a, r["seg_a"], r["w_a"]), settings_b=seg(ids_b, r["seg_b"], r["w_b"]),
                             n=r["n_units"], n_only_a=0, n_only_b=0))
    a, b, gap = sweeps.nearest_pair(dict(zip(ids_a, eff_a.mean(1))), dict(zip(ids_b, eff_b.mean(1))))
    pair = tidy[tidy.setting.isin([a, b]) & tidy.measure.isin(OUTCOMES + ["efficacy"])]
    pd_rows = paired_differences(pair, a, b, by=("measure",), method_col="setting", seed=seed)
    for r in pd_rows.to_dict("records"):
        rows.append(dict(comparison=comparison, kind="nearest pair", target=float(P.loc[a, "efficacy"]),
                         settings_a=a, settings_b=b, efficacy_gap=gap, value_a=r["mean_a"], value_b=r["mean_b"],
                         **{k: r[k] for k in ("measure", "diff", "ci_low", "ci_high", "n", "n_only_a", "n_only_b")}))
equal = pd.DataFrame(rows)
equal.to_csv(out / "equal_efficacy.csv", index=False)
if len(equal):
    equal["interval"] = [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi in zip(equal["diff"], equal.ci_low,
                                                                                 equal.ci_high)]
    display(equal.pivot_table(index=["comparison", "kind", "target"], columns="measure", values="interval",
                              aggfunc="first"))
else:
    print("no AlphaEdit curve and MEMIT curve to compare yet")

# %% [markdown]
# {numref}`fig-operating-equal` shows the same differences. Above the zero line AlphaEdit is higher; that is
# better for every measure but the drift, where lower is better.

# %% tags=["hide-input"] mystnb={"figure": {"name": "fig-operating-equal", "caption": "AlphaEdit \u2212 MEMIT at equal efficacy, per AlphaEdit curve (rows) and outcome (columns), with paired 95% intervals; filled markers interpolate both curves to the target efficacy, open markers compare the nearest pair of settings. The horizontal axis is the matched efficacy."}, "image": {"alt": "A grid of small dot-and-whisker plots of the difference AlphaEdit minus MEMIT against the matched efficacy, with a zero line."}}
if len(equal):
    comps = list(dict.fromkeys(equal.comparison))
    fig, axes = plt.subplots(len(comps), len(OUTCOMES), figsize=(3 * len(OUTCOMES), 2.6 * len(comps)),
                             squeeze=False)
    for i, comp in enumerate(comps):
        for j, o in enumerate(OUTCOMES):
            ax = axes[i, j]
            for kind, fill in (("interpolated", True), ("nearest pair", False)):
                sub = equal[(equal.comparison == comp) & (equal.measure == o) & (equal.kind == kind)]
                ax.errorbar(sub.target, sub["diff"], yerr=[sub["diff"] - sub.ci_low, sub.ci_high - sub["diff"]],
                            fmt="o", mfc=None if fill else "none", capsize=3, label=kind)
            ax.axhline(0, color="k", lw=0.8)
            ax.set(title=f"{o}" if i == 0 else "", xlabel="matched efficacy", ylabel=comp.split(" − ")[0] if j == 0
                   else "")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "equal_efficacy.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## The noise at the default point
# The default point of each method at the preset's seed and at the extra seeds (the context templates of the target
# optimisation change with it; the records do not). The spread across seeds is the scale against which a
# difference between settings can be read.

# %% tags=["hide-input"]
noise = points[points.knob.isin(["default", "seed"])][["setting", "method", "efficacy", "rewrite_acc",
                                                        "specificity", "locality", "drift"]]
spread = noise.groupby("method")[["efficacy", "rewrite_acc", "specificity", "locality", "drift"]].agg(
    lambda x: x.max() - x.min())
noise.to_csv(out / "seeds.csv", index=False)
display(noise.round(3))
spread.round(3)

# %% [markdown]
# ## A calibrated projector rule
# The energy rule is scale-free: it keeps the smallest directions of C that together hold at most a share of its
# trace, whatever the scale of the keys. The share is chosen from the sweep's energy-rule points by a fixed criterion
# (`sweeps.calibrate_energy`): among the points whose edits land (mean efficacy at least `efficacy_floor`), the
# largest share whose held-out leak ‖Pk‖/‖k‖ (mean over the edited layers) stays at most `leak_target`; when none
# protects, the landing point with the smallest leak. The choice is written as data (`calibrated.json`: the rule,
# the numbers behind it, and per layer the directions kept and the absolute threshold that keeps the same ones) for
# the comparison across models to read.

# %% tags=["hide-input"]
energy_curve = curves.get("AlphaEdit: energy share", [])
calibrated = None
if energy_curve:
    cal_points = [dict(energy=v, setting=s.id, leak=float(P.loc[s.id, "leak_heldout"]),
                       efficacy=float(P.loc[s.id, "efficacy"])) for s, v in energy_curve]
    calibrated = sweeps.calibrate_energy(cal_points, leak_target=leak_target, efficacy_floor=efficacy_floor)
    chosen = next(p for p in cal_points if p["energy"] == calibrated["nullspace_energy"])
    layers = projector[projector.rule == rule_name(("energy", calibrated["nullspace_energy"]))]
    record = dict(model=model_dir, notebook="operating_points", run_key=run_key, n_edits=n_edits,
                  rule=dict(nullspace_mode="energy", nullspace_energy=calibrated["nullspace_energy"]),
                  criterion=dict(leak_target=leak_target, efficacy_floor=efficacy_floor, reason=calibrated["reason"]),
                  protects=calibrated["protects"], edits_land=calibrated["edits_land"], setting=chosen["setting"],
                  leak_heldout=calibrated["leak"], efficacy=calibrated["efficacy"],
                  per_layer=[dict(layer=int(r.layer), n_kept=int(r.n_kept), kept_share=float(r.kept_share),
                                  energy_kept=float(r.energy_kept), threshold_equivalent=float(r.threshold_equivalent),
                                  leak_heldout=float(r.leak_heldout)) for r in layers.itertuples()],
                  grid=cal_points, quick=quick)
    (out / "calibrated.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
else:
    print("no energy-rule setting done yet: nothing to calibrate from")

# %% [markdown]
# ## P's diagnostics against the rule
# {numref}`fig-operating-projector` plots each rule's leak for the three kinds of keys against the share of the
# trace it keeps, per edited layer. For keys drawn like the statistics' own, the mean squared leak equals the energy
# kept, so held-out keys should sit near the curve √(energy kept); keys that differ from the corpus's (edits,
# neighbours) sit above it when P treats them as generic directions.

# %% tags=["hide-input"] mystnb={"figure": {"name": "fig-operating-projector", "caption": "Leak \u2016Pk\u2016/\u2016k\u2016 of held-out generic keys, neighbourhood subject keys and edit subject keys (panels) against the share of tr C that P keeps (log scale), one point per rule and edited layer; the dashed curve is \u221a(energy kept). The ring marks the calibrated rule."}, "image": {"alt": "Three scatter plots of leak against energy kept on a logarithmic horizontal axis, coloured by layer, with a dashed square-root curve."}}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
grid_x = np.logspace(np.log10(max(projector.energy_kept[projector.energy_kept > 0].min(), 1e-6)), 0, 50) \
    if (projector.energy_kept > 0).any() else np.logspace(-4, 0, 50)
for ax, col, title in zip(axes, ["leak_heldout", "leak_neighbour", "leak_edit"],
                          ["held-out generic keys", "neighbourhood subject keys", "edit subject keys"]):
    sns.scatterplot(projector[projector.energy_kept > 0], x="energy_kept", y=col, hue="layer", style="mode", ax=ax,
                    palette="viridis", legend=col == "leak_edit")
    ax.plot(grid_x, np.sqrt(grid_x), "k--", lw=0.8)
    if calibrated is not None:
        c = projector[projector.rule == rule_name(("energy", calibrated["nullspace_energy"]))]
        ax.scatter(c.energy_kept, c[col], s=120, facecolors="none", edgecolors="k")
    ax.set(xscale="log", title=title, xlabel="energy kept (share of tr C)", ylabel="‖Pk‖/‖k‖")
sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
fig.tight_layout()
fig.savefig(out / "projector_leak.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Verdicts
# The decision rules are in `alphaedit_core/sweeps.py` (C3, C4, C5; a difference is *better* or *worse* when its
# paired 95% interval excludes 0, as in `alphaedit_core/verdicts.py`); this cell feeds them the paired differences.

# %% tags=["hide-input"]
def paired(a: str, b: str, measures: list[str]) -> dict:
    """a − b, paired by record (by key block for drift), per measure; {} when either setting is not done."""
    if a not in P.index or b not in P.index:
        return {}
    sub = tidy[tidy.setting.isin([a, b]) & tidy.measure.isin(measures)]
    if sub.empty or set(sub.setting) != {a, b}:
        return {}
    t = paired_differences(sub, a, b, by=("measure",), method_col="setting", seed=seed)
    return {m: r for m, r in zip(t.measure, t.to_dict("records")) if m in measures}


EDIT = ["efficacy", "rewrite_acc", "specificity", "locality"]
knob_rows = []


def ends(knob: str) -> tuple[str, str] | None:
    """(setting at the smallest, setting at the largest knob value) of a curve with two points or more."""
    c = sweeps.curve(done_settings, knob, base)
    return (c[0][0].id, c[-1][0].id) if len(c) >= 2 else None


threshold_ends, l2_ends = ends("nullspace_threshold"), ends("L2")
threshold_rows = paired(*threshold_ends, EDIT) if threshold_ends else None
l2_rows = paired(l2_ends[1], l2_ends[0], ["retention", "drift"]) if l2_ends else None
for name, pair_ids, rows_ in (("nullspace_threshold: smallest − largest", threshold_ends, threshold_rows),
                              ("L2: largest − smallest", l2_ends[::-1] if l2_ends else None, l2_rows)):
    for m, r in (rows_ or {}).items():
        knob_rows.append(dict(comparison=name, setting_a=pair_ids[0], setting_b=pair_ids[1], **r))
clamp = {}
for m in methods:
    for s in done_settings:
        if s.method == m and s.knob == "clamp_norm_factor" and f"{m}-default" in P.index:
            pair_ = sorted([(float(s.value), s.id), (float(base["clamp_norm_factor"]), f"{m}-default")])
            shift = [float(P.loc[i, "target_shift"]) for _, i in pair_]
            if all(np.isfinite(shift)):
                clamp[m] = (shift[0], shift[1])
notes = {}
if clamps and not clamp:
    notes["clamp"] = ("The clamp settings have not been run yet." if not any(
        s.knob == "clamp_norm_factor" for s in done_settings) else
        "The target shift ‖z − h0‖ of the clamp settings is not recorded, so the clamp could not be checked.")
claims = {"C4": sweeps.c4_knobs(threshold_rows or None, l2_rows or None, clamp or None, edits=n_edits, notes=notes)}

migration_id = f"alphaedit-migration-{migration_name}"
c3_note = (" One model only (this one). Migrated: "
           + (", ".join(f"{k} {v}" for k, v in migration[1].items()) if migration else "nothing")
           + "; kept as the model's own (its layers, loss layer, statistics and run settings): "
           + (", ".join(f"{k} {own} (reference {ref})" for k, (own, ref) in kept_own.items()) or "nothing differs")
           + ".")
c3_rows = paired("alphaedit-default", migration_id, EDIT)
if c3_rows:
    claims["C3"] = sweeps.c3_migration(c3_rows, reference=migration_name, edits=n_edits, note=c3_note)
else:
    claims["C3"] = dict(verdict="not testable here", evidence=(
        f"The migrated setting ({migration_name or 'none configured'}) has not been run" + (
            " (see settings.csv: pending, or a degenerate P)." if migration_preset else ".")))
for m, r in c3_rows.items():
    knob_rows.append(dict(comparison="C3: default − migrated", setting_a="alphaedit-default", setting_b=migration_id,
                          **r))

default_rule = rule_name(rule_of(base))
default_leak = float(projector[projector.rule == default_rule].leak_heldout.mean()) \
    if default_rule in set(projector.rule) else math.nan
protect = {}
if calibrated is not None and chosen["setting"] != "alphaedit-default":
    protect = paired(chosen["setting"], "alphaedit-default", ["specificity", "locality", "drift", "efficacy"])
    for m, r in protect.items():
        knob_rows.append(dict(comparison="C5: calibrated − default", setting_a=chosen["setting"],
                              setting_b="alphaedit-default", **r))
if math.isfinite(default_leak):
    claims["C5"] = sweeps.c5_projector(default_leak, calibrated, leak_target=leak_target, rule=default_rule,
                                       protect=protect or None)
else:
    claims["C5"] = dict(verdict="not testable here", evidence="AlphaEdit's default rule was not part of the sweep.")
p4_rows = paired("memit_projected-default", "memit-default", EDIT + ["drift"])
p4_seq = paired("memit_seq-default", "memit-default", EDIT + ["drift"])
claims["P4"] = sweeps.p4_plugin(p4_rows, p4_seq or None, edits=n_edits)
for label_, pair_ids, rows_ in (("P4: MEMIT projected − MEMIT", ("memit_projected-default", "memit-default"), p4_rows),
                                ("P4: sequential MEMIT − MEMIT", ("memit_seq-default", "memit-default"), p4_seq)):
    for m, r in rows_.items():
        knob_rows.append(dict(comparison=label_, setting_a=pair_ids[0], setting_b=pair_ids[1], **r))
corpus_rows = {}
for s in grid:
    if s.knob == "mom2_corpus":
        c = str(s.value)
        corpus_rows[c] = paired(s.id, "alphaedit-default", EDIT + ["drift"])
        for m, r in corpus_rows[c].items():
            knob_rows.append(dict(comparison=f"P from {sweeps.corpus_label(c)} − P from "
                                             f"{sweeps.corpus_label(hp.mom2_corpus)}",
                                  setting_a=s.id, setting_b="alphaedit-default", **r))
covariance_corpus = dict(
    corpora=corpus_names, fact_statements=len(statements),
    leak={c: {k: round(float(v), 4) for k, v in row.items()} for c, row in corpus_leak.iterrows()},
    versus_preset={sweeps.corpus_label(c): {m: {k: round(float(r[k]), 4) for k in ("diff", "ci_low", "ci_high")}
                                            for m, r in rows_.items()} for c, rows_ in corpus_rows.items()})
if pending:  # a run cut short by its time budget: the verdicts rest on part of the grid
    for cid in ("C3", "C4", "C5", "P4"):
        claims[cid]["evidence"] += (f" Provisional: {len(pending)} of {len(grid)} settings not run yet "
                                    f"({', '.join(pending)}).")
pd.DataFrame(knob_rows).to_csv(out / "paired_knobs.csv", index=False)
summary = dict(model=model_dir, notebook="operating_points", n_edits=n_edits, batch_size=batch_size, quick=quick,
               settings_planned=[s.id for s in grid], settings_done=list(finished.setting), settings_pending=pending,
               seconds_per_setting={r.setting: round(float(r.seconds_edit + r.seconds_eval), 1)
                                    for r in finished.itertuples()},
               calibrated=None if calibrated is None else dict(nullspace_mode="energy",
                                                               nullspace_energy=calibrated["nullspace_energy"]),
               covariance_corpus=covariance_corpus, claims=claims)
(out / "summary.json").write_text(json.dumps(summary, indent=1))
for cid, c in claims.items():
    print(f"{cid}: {c['verdict']} — {c['evidence']}")
