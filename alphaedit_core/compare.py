"""Across models: what each model's runs are, where their results live, and the decision rules for the claims that
compare models (C8 scale, C9 Instruct vs Base, C10 families; C1 across models).

The measurements themselves are the study's notebooks run once per model (`projection_check` for P, `edit_count`
for the stream of edits), each into `results/<label>/<notebook>/`; `notebooks/model_compare` and
`notebooks/instruct_vs_base` only read those folders. This module holds what both chapters share: the plan of each
model's runs (records, milestones, the P rule), the reading and checking of a results folder, the choice of the
common milestones, and the verdicts as pure functions over plain numbers (pinned by tests/test_model_compare.py).

Two P rules per model, so that a model effect can be told from a mis-set P:

- `official`: the preset's absolute eigenvalue threshold (`nullspace_threshold`, 0.02 in every preset), label
  `<model>`;
- `calibrated`: the energy rule (`nullspace_mode="energy"`, `nullspace_energy`), label `<model>-calibrated`, AlphaEdit
  only (MEMIT has no P: its stream is the official run's). The energy share is read from
  `results/<model>/operating_points/calibrated.json`, else from the default model's (the operating-points chapter
  calibrates on SmolLM2 a rule meant to carry across models), else `DEFAULT_ENERGY` (the hparams default), and
  every place that uses it says which.

Like with like: every model edits the records of the default model's stream (`load_offline_counterfact(n, seed=0)`
gives the first records of the 2,000-edit stream only for n ≥ `PREFIX_MIN`; see `plan`) and is evaluated at the
same milestones on the same seeded samples; the chapters compare models at the milestones every compared run
reached, and check that the evaluated records are the same.

Run from the command line (the runs resume where they stopped; see `main`):

    python -m alphaedit_core.compare plan                                   # status, commands, cost estimates
    python -m alphaedit_core.compare run --model gemma3-270m --rule official --jobs 2
    python -m alphaedit_core.compare run --model gemma3-270m --rule calibrated
    python -m alphaedit_core.compare chapters                               # model_compare and instruct_vs_base
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

RULES = ("official", "calibrated")
DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_ENERGY = 0.01  # EditHParams.nullspace_energy's default: the kept directions hold at most 1% of tr C
COMPARISON_LABEL = "across-models"  # results/<this>/<chapter>/ holds the comparison chapters' outputs
STREAM = 2000  # the default model's stream: every model edits a prefix of these records
MILESTONES = (100, 200, 500, 1000, 1500, 2000)  # edit_count's defaults
PREFIX_MIN = 342  # random.Random(seed).sample(records, n) of the 2,612 offline records switches algorithm below

# The offline models of shared/MODELS.md. `edits`: the guide size of the issue (AlphaEdit and MEMIT on two cores);
# `n_edits`: the stream drawn (≥ PREFIX_MIN so that its records are the default stream's first ones);
# `s_per_edit`: targets + keys + solve per edit and method on two quiet cores (measured for SmolLM2, batch 50, in
# benchmarks/results/chunk_speed-smollm2-135m-instruct-b50.md, and Qwen-0.5B, batch 100, in
# benchmarks/results/edit_speed-qwen2.5-coder-0.5b-instruct-b100-before-after.md; Gemma scaled from SmolLM2 and
# Qwen-1.5B from Qwen-0.5B by the forward throughput of MODELS.md: estimates); `tok_s`: forward tokens/s on two
# cores (MODELS.md);
# `fluency_cap`: records scored for fluency and consistency (ten 100-token generations each, at the unedited model
# and the last milestone): fewer on the slower models, always the first records of the same sample, so that the
# fluency of two models is still compared on common records.
MODELS: dict[str, dict[str, Any]] = {
    "smollm2-135m-instruct": dict(family="LLaMA", size_b=0.135, instruct=True, edits=2000, n_edits=2000,
                                  fluency_cap=50, s_per_edit=3.54, tok_s=399, estimate="measured"),
    "gemma3-270m": dict(family="Gemma", size_b=0.27, instruct=False, edits=1000, n_edits=1000,
                        fluency_cap=20, s_per_edit=3.54 * 399 / 174, tok_s=174,
                        estimate="SmolLM2 scaled by forward throughput"),
    "qwen2.5-coder-0.5b-instruct": dict(family="Qwen", size_b=0.49, instruct=True, edits=500, n_edits=500,
                                        fluency_cap=20, s_per_edit=10.38, tok_s=113, estimate="measured"),
    "qwen2.5-coder-1.5b-instruct": dict(family="Qwen", size_b=1.54, instruct=True, edits=200, n_edits=400,
                                        fluency_cap=10, s_per_edit=10.38 * 113 / 36, tok_s=36,
                                        estimate="Qwen-0.5B scaled by forward throughput"),
}

# measures of the comparison (family, prompt_kind, metric) -> short name; higher is better for all of them
MEASURES = {
    ("official", "rewrite", "efficacy"): "efficacy",
    ("easyedit", "rewrite", "rewrite_acc"): "rewrite_acc",
    ("official", "paraphrase", "generalization"): "generalization",
    ("easyedit", "paraphrase", "rephrase_acc"): "rephrase_acc",
    ("official", "neighborhood", "specificity"): "specificity",
    ("easyedit", "neighborhood", "locality"): "locality",
    ("generation", "rewrite", "exact_match"): "exact_match",
    ("official", "generation", "fluency"): "fluency",
    ("official", "generation", "consistency"): "consistency",
}
EDIT_MEASURES = ("efficacy", "rewrite_acc")  # "edits land": the two families of verdicts.py
KEEP_MEASURES = ("specificity", "locality")  # "unrelated facts kept"

# thresholds of the decision rules (the same as verdicts.py where they mean the same)
STABLE = 0.9  # a score kept "high"
DROP = 0.10  # a fall of more than 10 points from the first milestone; also a "material" difference between runs
LONG = 1000  # the edit counts where the claims' contrasts appear (C7: "beyond 1,000 edits")
KEPT_SPREAD = 0.25  # one absolute threshold keeps shares of directions this far apart on two families

# columns the chapters need from each table (edit_count writes more)
RAW_COLUMNS = ("case_id", "family", "prompt_kind", "metric", "value", "method", "edits")
DIAG_COLUMNS = ("method", "batch", "edits", "layer", "relative_change", "condition", "drift", "seconds", "target_loss",
                "target_steps")
PROJECTION_COLUMNS = ("layer", "d_ff", "n_kept", "kept_share", "energy_kept", "ratio_heldout_mean",
                      "ratio_random_mean")
VERDICT_RANK = {"not reproduced": 0, "partly reproduced": 1, "reproduced": 2}
# Runs another chapter already makes with this one's plan (same records, seed, batches, milestones and P rule):
# (model, rule) -> (chapter, stream), read from results/<model>/<chapter>/<stream>/edit_count/ when the run's own
# folder results/<label>/edit_count/ does not exist, and checked against <chapter>/streams.csv (its P rule). The
# collapse chapter's calibrated stream is the default model's calibrated run: running it twice would cost ~3.5 h.
SHARED_STREAMS: dict[tuple[str, str], tuple[str, str]] = {
    ("smollm2-135m-instruct", "calibrated"): ("collapse", "calibrated"),
}


# --- the runs of each model -------------------------------------------------------------------------------------

def model_dir(model: str) -> str:
    """The results folder name edit_count gives a model (slashes of hub ids as double dashes)."""
    return model.replace("/", "--")


def run_label(model: str, rule: str) -> str:
    """results/<label>/: `<model>` for the official threshold, `<model>-calibrated` for the calibrated rule."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    return model_dir(model) if rule == "official" else f"{model_dir(model)}-calibrated"


def parse_calibrated(data: Mapping[str, Any]) -> dict[str, Any]:
    """`nullspace_mode` / `nullspace_energy` from a calibrated.json, found at the top level or under `overrides`,
    `hparams` or `rule`. ValueError when absent, not the energy rule, or not a share in (0, 1)."""
    for where in (data, data.get("overrides"), data.get("hparams"), data.get("rule")):
        if isinstance(where, Mapping) and "nullspace_energy" in where:
            mode = where.get("nullspace_mode", "energy")
            energy = where["nullspace_energy"]
            if mode != "energy":
                raise ValueError(f"calibrated rule has nullspace_mode={mode!r}; only the energy rule carries across "
                                 "models (the threshold is absolute: it depends on the scale of each model's keys)")
            if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy < 1:
                raise ValueError(f"calibrated nullspace_energy must be a share in (0, 1), got {energy!r}")
            return dict(nullspace_mode="energy", nullspace_energy=float(energy))
    raise ValueError("calibrated.json has no nullspace_energy (top level, 'overrides', 'hparams' or 'rule')")


def calibrated_rule(results_root: str | Path, model: str, default_model: str = DEFAULT_MODEL) -> dict[str, Any]:
    """The calibrated P rule for `model`: dict(overrides, source, path). Read from
    results/<model>/operating_points/calibrated.json, else the default model's, else `DEFAULT_ENERGY` (source
    says which, for the chapters to print)."""
    root = Path(results_root)
    for name in dict.fromkeys([model_dir(model), model_dir(default_model)]):
        path = root / name / "operating_points" / "calibrated.json"
        if path.is_file():
            overrides = parse_calibrated(json.loads(path.read_text()))
            whose = "this model's" if name == model_dir(model) else f"the default model's ({name})"
            return dict(overrides=overrides, path=str(path),
                        source=f"energy share {overrides['nullspace_energy']:g} from {whose} calibration ({path})")
    return dict(overrides=dict(nullspace_mode="energy", nullspace_energy=DEFAULT_ENERGY), path=None,
                source=(f"energy share {DEFAULT_ENERGY:g} (documented default: no operating_points/calibrated.json "
                        f"under {root} for {model_dir(model)} or {model_dir(default_model)} yet)"))


def plan(model: str, rule: str, results_root: str | Path, *, n_edits: int | None = None,
         stop_after_edits: int | None = None, hparams: str = "") -> dict[str, Any]:
    """What one (model, rule) run is: label, edit_count and projection_check parameters (without results_dir),
    the P rule's source, and the edits it is meant to reach. Models outside `MODELS` (hub ids, folders) get the
    default stream of 2,000 edits unless `n_edits` is given, and need `hparams` (a preset name or JSON file) when
    no preset bears their name."""
    spec = MODELS.get(model, {})
    target = n_edits or spec.get("edits", STREAM)
    n = n_edits or spec.get("n_edits", STREAM)
    if n < target:
        raise ValueError(f"n_edits={n} is below the edits to reach ({target})")
    if n < PREFIX_MIN and n != STREAM:
        raise ValueError(f"n_edits={n}: below {PREFIX_MIN} the seeded sample is not the first {n} records of the "
                         f"{STREAM}-edit stream (random.sample switches algorithm); draw {PREFIX_MIN} or more and "
                         "stop earlier (stop_after_edits)")
    milestones = [m for m in MILESTONES if m <= target]
    if stop_after_edits is not None and stop_after_edits not in milestones:
        raise ValueError(f"stop_after_edits={stop_after_edits}: stop at one of the milestones {milestones} (edits "
                         "past the last milestone reached would be made and never scored)")
    stop = stop_after_edits or (target if target < n else None)
    label = run_label(model, rule)
    edit_count = dict(model=model, label=label, n_edits=n, milestones=milestones)
    if spec.get("fluency_cap", 50) != 50:  # 50: edit_count's default
        edit_count["fluency_cap"] = spec["fluency_cap"]
    overrides, source = {}, "the preset's absolute threshold (nullspace_threshold)"
    if rule == "calibrated":
        cal = calibrated_rule(results_root, model)
        overrides, source = dict(cal["overrides"]), cal["source"]
        edit_count.update(methods=["alphaedit"], overrides=overrides)  # MEMIT has no P: the official run's stream
    if stop is not None:
        edit_count["stop_after_edits"] = stop
    if hparams:
        edit_count["hparams"] = hparams
    projection = dict(model=model, label=label, **({"overrides": overrides} if overrides else {}),
                      **({"hparams": hparams} if hparams else {}))
    return dict(model=model, rule=rule, label=label, edit_count=edit_count, projection_check=projection,
                rule_source=source, edits=target)


def estimate_hours(model: str, edits: int, methods: int = 2, first: bool = True) -> dict[str, float]:
    """Rough cost on two quiet cores: editing (targets, keys, solve), the covariance statistics (300k tokens,
    once per model, cached), evaluation (300 records per milestone and method plus the unedited model once, at ~1.2 s
    per record on SmolLM2) and fluency (ten 100-token generations per record of `fluency_cap`, ~3 s each on SmolLM2,
    at the unedited model and at the last milestone of each method), all scaled by forward throughput; with
    `first` (the model's first run) also the unedited model's scores (later runs read them from the cache), the
    statistics and projection_check (two AlphaEdit runs of 20 edits and
    ~60k tokens of held-out, sampled and random-model text). Estimates, not measurements."""
    spec = MODELS.get(model)
    if spec is None:
        return dict(edit=math.nan, statistics=math.nan, evaluation=math.nan, total=math.nan)
    slow = MODELS[DEFAULT_MODEL]["tok_s"] / spec["tok_s"]
    edit = spec["s_per_edit"] * edits * methods / 3600
    statistics = 300_000 / (708 / slow) / 3600 if first else 0.0  # 708 tokens/s: SmolLM2's, measured
    statistics += projection_hours(model) if first else 0.0
    n_milestones = len([m for m in MILESTONES if m <= edits])
    unedited = 1 if first else 0  # the unedited model's scores are shared by every run of the model (cached)
    evaluation = min(300, edits) * 1.2 * slow * (n_milestones * methods + unedited) / 3600
    evaluation += spec.get("fluency_cap", 50) * 10 * 3.0 * slow * (unedited + methods) / 3600
    return dict(edit=edit, statistics=statistics, evaluation=evaluation, total=edit + statistics + evaluation)


def projection_hours(model: str) -> float:
    """projection_check's estimated cost on two quiet cores (two AlphaEdit runs of 20 edits, ~60k tokens)."""
    spec = MODELS.get(model)
    return math.nan if spec is None else (40 * spec["s_per_edit"] + 60_000 / spec["tok_s"]) / 3600


def run_hours(model: str, rule: str, run_plan: dict[str, Any], shared: dict[str, Any] | None) -> float:
    """The estimated hours of the command that produces (model, rule), from its `plan` and its `shared_stream`:
    `estimate_hours` of the plan, or only projection_check's when another chapter edits its stream (`shared`)."""
    if shared:
        return projection_hours(model)
    methods = len(run_plan["edit_count"].get("methods", ["alphaedit", "memit"]))
    return estimate_hours(model, run_plan["edits"], methods, first=rule == "official")["total"]


def command(model: str, rule: str, jobs: int = 2, hparams: str = "") -> str:
    """The shell command (from the repository root) that produces or resumes one (model, rule) run."""
    j = f" --jobs {jobs}" if rule == "official" and jobs > 1 else ""
    h = f" --hparams {hparams}" if hparams else ""
    return f".venv/bin/python -m alphaedit_core.compare run --model {model}{h} --rule {rule}{j}"


# --- reading a results folder -----------------------------------------------------------------------------------

@dataclass
class Run:
    """One (model, rule) run as found under results/<label>/."""
    model: str
    rule: str
    label: str
    folder: Path
    status: str  # "not run yet" | "failed" (no score yet, last sitting failed) | "partial" | "complete"
    raw: Any = None  # pandas DataFrame of metrics_raw rows, or None
    diagnostics: Any = None
    summary: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    sittings: list = field(default_factory=list)
    reached: dict = field(default_factory=dict)  # method -> sorted milestones (edits > 0) with scores
    notes: list = field(default_factory=list)


def _read_tables(folder: Path, stem: str, required: Iterable[str]):
    """<stem>-<method>.csv files (the per-method tables a run appends to: freshest) or <stem>.csv, checked."""
    import pandas as pd

    parts = sorted(folder.glob(f"{stem}-*.csv"))
    paths = parts or ([folder / f"{stem}.csv"] if (folder / f"{stem}.csv").is_file() else [])
    if not paths:
        return None
    frame = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{folder}: {stem} table(s) {[p.name for p in paths]} lack column(s) {missing}; "
                         "were they written by notebooks/edit_count?")
    return frame


def shared_stream(results_root: str | Path, model: str, rule: str) -> dict[str, Any] | None:
    """Where another chapter's stream stands in for (model, rule) (see `SHARED_STREAMS`): dict(label, folder,
    chapter, stream, row) with the stream's row of <chapter>/streams.csv (None until that chapter rendered it), or
    None when (model, rule) has no shared stream or its own folder results/<label>/edit_count/ exists."""
    where = SHARED_STREAMS.get((model, rule))
    if where is None or (Path(results_root) / run_label(model, rule) / "edit_count").is_dir():
        return None
    chapter, stream = where
    label = f"{model_dir(model)}/{chapter}/{stream}"
    streams = Path(results_root) / model_dir(model) / chapter / "streams.csv"
    row = None
    if streams.is_file():
        import pandas as pd

        rows = pd.read_csv(streams)
        rows = rows[rows.stream == stream]
        row = rows.iloc[0].to_dict() if len(rows) else None
    return dict(label=label, folder=Path(results_root) / label / "edit_count", chapter=chapter, stream=stream,
                row=row)


def _shared_overrides(row: Mapping[str, Any] | None) -> dict[str, Any]:
    """The hyperparameters a chapter's streams.csv row records (JSON), {} when absent or unreadable."""
    try:
        return dict(json.loads(row["hyperparameters"])) if row else {}
    except (KeyError, TypeError, ValueError):
        return {}


def read_run(results_root: str | Path, model: str, rule: str, label: str | None = None) -> Run:
    """Whatever results/<label>/edit_count/ holds for (model, rule) (or the stream another chapter makes for it:
    `SHARED_STREAMS`); status "not run yet" when nothing."""
    shared = None if label else shared_stream(results_root, model, rule)
    label = label or (shared["label"] if shared else run_label(model, rule))
    folder = Path(results_root) / label / "edit_count"
    run = Run(model, rule, label, folder, "not run yet")
    if shared:
        run.notes.append(f"the {shared['chapter']} chapter's {shared['stream']!r} stream (same records, milestones "
                         "and P rule; not run twice)")
    if not folder.is_dir():
        return run
    raw = _read_tables(folder, "metrics_raw", RAW_COLUMNS)
    if raw is None or raw.empty:
        if (folder / "provenance.json").is_file() and not _completed(folder):
            run.status = "failed"
            run.notes.append(f"the last sitting failed before any score: see {folder / 'edit_count.ipynb'}")
        return run
    key = ["method", "edits", "case_id", "family", "prompt_kind", "metric"]
    run.raw = raw.drop_duplicates(key, keep="last")
    run.diagnostics = _read_tables(folder, "diagnostics", DIAG_COLUMNS)
    for name in ("summary.json", "provenance.json"):
        if (folder / name).is_file():
            setattr(run, name.split(".")[0], json.loads((folder / name).read_text()))
    if (folder / "sittings.jsonl").is_file():
        run.sittings = [json.loads(line) for line in (folder / "sittings.jsonl").read_text().splitlines() if line]
    run.reached = {m: sorted(int(e) for e in g.edits.unique() if e > 0) for m, g in run.raw.groupby("method")}
    planned = run.summary.get("n_edits_planned") or run.provenance.get("parameters", {}).get("n_edits")
    if shared and shared["row"] and planned is None:
        planned = int(shared["row"]["edits_planned"])
    # the model's guide size, not where a sitting was told to stop (`run_model(stop_after=...)`): a run stopped
    # short of it is partial
    target = (MODELS.get(model, {}).get("edits") or run.provenance.get("parameters", {}).get("stop_after_edits")
              or planned)
    last = max((max(v) for v in run.reached.values() if v), default=0)
    run.status = "complete" if target and last >= target else "partial"
    if rule == "calibrated":
        overrides = run.provenance.get("parameters", {}).get("overrides") or (
            _shared_overrides(shared["row"]) if shared else {})
        expected = calibrated_rule(results_root, model)["overrides"]["nullspace_energy"]
        if overrides.get("nullspace_mode") == "energy" and overrides.get("nullspace_energy") != expected:
            run.notes.append(f"energy share {overrides.get('nullspace_energy')} differs from the calibrated rule's "
                             f"{expected}")
        if overrides.get("nullspace_mode") != "energy":
            run.notes.append("P rule not verified: provenance.json records no nullspace_mode='energy'")
        if "memit" in run.reached:  # MEMIT has no P: its stream is the official run's
            run.raw = run.raw[run.raw.method != "memit"]
            run.reached.pop("memit")
            run.notes.append("MEMIT rows of the calibrated run ignored (MEMIT has no P; the official run's are used)")
    return run


def per_batch(diagnostics):
    """One row per (method, batch) of edit_count's diagnostics: the per-batch columns (target loss and steps,
    seconds) repeat on every edited layer's row."""
    return diagnostics.drop_duplicates(["method", "batch"], keep="last")


def targets_upto(diagnostics, method: str, edits: int) -> dict[str, float]:
    """How strongly `method` was asked to edit up to milestone `edits`: the targets' final loss and Adam steps per
    request, means over its batches so far (`per_batch`)."""
    b = per_batch(diagnostics)
    b = b[(b.method == method) & (b.edits <= edits)]
    return dict(target_loss=float(b.target_loss.mean()), target_steps=float(b.target_steps.mean()))


def run_cost(run: Run) -> dict[str, Any]:
    """What a run cost: editing seconds per method (the sum over batches of targets + keys + solve, from
    diagnostics.csv: every sitting), the wall time of the recorded sittings (sittings.jsonl, written by `main`), and
    the last sitting's provenance (provenance.json is rewritten at every sitting)."""
    out: dict[str, Any] = dict(model=run.model, rule=run.rule)
    if run.diagnostics is not None and len(run.diagnostics):
        for method, g in per_batch(run.diagnostics).groupby("method"):
            out[f"{method}_edit_hours"] = float(g.seconds.sum()) / 3600
            edits = int(g.edits.max())
            out[f"{method}_s_per_edit"] = float(g.seconds.sum()) / edits if edits else math.nan
    if run.sittings:
        out["sittings"] = len(run.sittings)
        out["sittings_wall_hours"] = sum(s.get("wall_seconds", 0) for s in run.sittings) / 3600
    prov = run.provenance
    if prov:
        wall = prov.get("parallel_runs_wall_seconds", 0) + prov.get("wall_seconds", 0)
        out["last_sitting_wall_hours"] = wall / 3600
        cpus, torch = prov.get("machine", {}).get("cpu_count", "?"), prov.get("versions", {}).get("torch", "?")
        out["machine"] = f"{cpus} CPUs, torch {torch}"
        out["git_commit"] = (prov.get("git_commit") or "")[:10] + (" (dirty)" if prov.get("git_dirty") else "")
    return out


def read_projection(results_root: str | Path, model: str, rule: str) -> dict[str, Any]:
    """P diagnostics of (model, rule) from results/<label>/projection_check/: dict(status, table, summary, note),
    and for a complete check also wall_hours (its wall time from provenance.json, NaN when not recorded; a model's
    first check also computes its statistics). A table counts for the calibrated rule only if its summary records
    the energy rule."""
    import pandas as pd

    folder = Path(results_root) / run_label(model, rule) / "projection_check"
    if not (folder / "projection.csv").is_file():
        if (folder / "provenance.json").is_file() and not _completed(folder):
            return dict(status="failed", table=None, summary={},
                        note=f"see {folder / 'projection_check.ipynb'} (e.g. a P that keeps every direction)")
        return dict(status="not run yet", table=None, summary={}, note="")
    table = pd.read_csv(folder / "projection.csv")
    missing = [c for c in PROJECTION_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{folder / 'projection.csv'} lacks column(s) {missing}")
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
    if rule == "calibrated" and summary.get("nullspace_mode") != "energy":
        return dict(status="not valid", table=None, summary=summary,
                    note="its summary.json records no nullspace_mode='energy' (projection_check built P at the "
                         "absolute threshold)")
    try:
        wall = float(json.loads((folder / "provenance.json").read_text())["wall_seconds"]) / 3600
    except (OSError, ValueError, KeyError, TypeError):
        wall = math.nan
    return dict(status="complete", table=table, summary=summary, note="", wall_hours=wall)


def preset_checks(results_root: str | Path, model: str) -> list[dict[str, Any]]:
    """C3 as the operating-points chapter measured it on `model` (every results/*/operating_points/ whose provenance
    names the model, whatever its label): the preset derived by the documented rule − the paper's LLaMA3-8B values
    applied unchanged, on the same records. One dict per folder with a testable C3: label, edits, verdict, evidence,
    `diffs` {measure: (diff, ci_low, ci_high)} from its paired_knobs.csv and `current_preset`: whether the run's
    preset is the model's preset today (the hparams part of its run key in settings.csv against the digest of
    `EditHParams.load(model)`; None when it cannot be told). Context for the chapters (how much of a model's result
    is its preset's), not an input of their decision rules."""
    import pandas as pd

    from .checkpoint import digest
    from .hparams import EditHParams
    from .runs import run_key_parts

    try:
        today = digest(EditHParams.load(model).to_dict())
    except (FileNotFoundError, ValueError, KeyError):
        today = None

    out = []
    for folder in sorted(Path(results_root).glob("*/operating_points")):
        if not (folder / "summary.json").is_file() or not (folder / "provenance.json").is_file():
            continue
        params = json.loads((folder / "provenance.json").read_text()).get("parameters", {})
        if params.get("model") != model:
            continue
        label = folder.parent.name
        summary = json.loads((folder / "summary.json").read_text())
        c3 = summary.get("claims", {}).get("C3", {})
        if not c3 or c3.get("verdict") == "not testable here":
            continue
        diffs = {}
        if (folder / "paired_knobs.csv").is_file():
            knobs = pd.read_csv(folder / "paired_knobs.csv")
            for row in knobs[knobs.comparison.astype(str).str.startswith("C3")].itertuples():
                diffs[row.measure] = (float(row.diff), float(row.ci_low), float(row.ci_high))
        current = None
        if today and (folder / "settings.csv").is_file():
            keys = pd.read_csv(folder / "settings.csv").set_index("setting").get("run_key", {})
            if "alphaedit-default" in keys:
                current = run_key_parts(keys["alphaedit-default"])["hparams"] == today
        out.append(dict(label=label, edits=summary.get("n_edits"), verdict=c3["verdict"],
                        evidence=c3.get("evidence", ""), diffs=diffs, current_preset=current))
    return out


# --- aligning runs ----------------------------------------------------------------------------------------------

def common_milestones(reached: Mapping[Any, Iterable[int]]) -> list[int]:
    """The milestones (edits > 0) every run of `reached` (run key -> its milestones) got to; runs without any
    milestone are left out (they are reported as not run), so they do not empty the comparison."""
    sets = [set(int(m) for m in v if m > 0) for v in reached.values()]
    sets = [s for s in sets if s]
    return sorted(set.intersection(*sets)) if sets else []


def same_records(case_ids: Mapping[Any, Iterable[Any]]) -> dict[str, Any]:
    """Whether every run evaluated the same records (run key -> case ids at one milestone and measure):
    dict(same, n_common, n_union, differing runs)."""
    sets = {k: set(v) for k, v in case_ids.items()}
    if not sets:
        return dict(same=True, n_common=0, n_union=0, differing=[])
    common = set.intersection(*sets.values())
    union = set.union(*sets.values())
    return dict(same=common == union, n_common=len(common), n_union=len(union),
                differing=[k for k, s in sets.items() if s != common])


def tidy_measures(raw):
    """metrics_raw rows of the comparison's measures, with a `measure` column (short name)."""
    keys = list(zip(raw.family, raw.prompt_kind, raw.metric))
    keep = [k in MEASURES for k in keys]
    out = raw[keep].copy()
    out["measure"] = [MEASURES[k] for k, flag in zip(keys, keep) if flag]
    return out


def long_frame(runs: Iterable[Run]):
    """The comparison's measures of every run with results, one frame: metrics_raw columns plus model, rule and
    measure. Runs without results contribute nothing (the chapters list them as not run yet)."""
    import pandas as pd

    parts = [tidy_measures(r.raw).assign(model=r.model, rule=r.rule) for r in runs if r.raw is not None]
    if not parts:
        return pd.DataFrame(columns=[*RAW_COLUMNS, "measure", "model", "rule"])
    return pd.concat(parts, ignore_index=True)


def summarize_runs(long):
    """Mean, n and 95% interval per model, rule, method, milestone and measure (the evaluator's `summarize`:
    Wilson for 0/1 values, t otherwise; the same intervals as edit_count's tables)."""
    import pandas as pd

    from .metrics import summarize

    if long.empty:
        return pd.DataFrame(columns=["model", "rule", "method", "edits", "measure", "mean", "n", "ci_low", "ci_high"])
    return summarize(long, by=["model", "rule", "method", "edits", "measure"])


def paired_rows(long, *, col: str, a: str, b: str, edits: int, where: Mapping[str, Any] | None = None,
                measures: Iterable[str] = tuple(MEASURES.values()), n_boot: int = 2000,
                seed: int = 0) -> dict[str, dict[str, float]]:
    """measure -> paired difference a − b (values of column `col`) at milestone `edits`, over the records both
    were scored on (metrics.paired, bootstrap 95% interval), among the rows matching `where` (column -> value).
    Measures where a or b has no rows, or no common record, are left out."""
    from .metrics.paired import paired_differences

    sub = long[long.edits == edits]
    for k, v in (where or {}).items():
        sub = sub[sub[k] == v]
    out = {}
    for m in measures:
        g = sub[sub.measure == m]
        if not ((g[col] == a).any() and (g[col] == b).any()):
            continue
        try:
            t = paired_differences(g, a, b, by=("measure",), method_col=col, n_boot=n_boot, seed=seed)
        except ValueError:  # no common record
            continue
        out[m] = {k: (v.item() if hasattr(v, "item") else v) for k, v in t.iloc[0].to_dict().items() if k != "measure"}
    return out


def first_last(scores, *, model: str, rule: str, method: str, first: int, last: int) -> dict[str, tuple[float, float]]:
    """measure -> (mean at `first`, mean at `last`) of one run, from a `summarize_runs` table."""
    s = scores[(scores.model == model) & (scores.rule == rule) & (scores.method == method)]
    out = {}
    for m, g in s.groupby("measure"):
        at = dict(zip(g.edits, g["mean"]))
        if first in at and last in at:
            out[m] = (float(at[first]), float(at[last]))
    return out


SHAPE_KEYS = ("architecture", "layers", "d_model", "d_ff", "vocab")


def model_shape(model: str) -> dict[str, Any] | None:
    """Architecture and shape of a model without loading weights: the offline registry (models.json), a local
    folder's config.json, or a cached hub config (no download); None when unknown."""
    from .models import REGISTRY_PATH

    entry = json.loads(Path(REGISTRY_PATH).read_text()).get(model)
    if entry:
        return dict(architecture=entry.get("architecture"), layers=entry.get("layers"), d_model=entry.get("d_model"),
                    d_ff=entry.get("d_ff"), vocab=entry.get("vocab"))
    cfg = None
    if (Path(model) / "config.json").is_file():
        cfg = json.loads((Path(model) / "config.json").read_text())
    else:
        try:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(model, local_files_only=True).to_dict()
        except Exception:  # not cached, no network: unknown
            return None
    cfg = cfg.get("text_config") or cfg
    return dict(architecture=(cfg.get("architectures") or [None])[0], layers=cfg.get("num_hidden_layers"),
                d_model=cfg.get("hidden_size"), d_ff=cfg.get("intermediate_size"), vocab=cfg.get("vocab_size"))


def same_model_pair(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two models can be a Base model and its instruction-tuned twin: same architecture and the same
    shape (layers, widths; vocabulary where both record it). Necessary, not sufficient: two unrelated models of one
    shape pass, so the chapter names the pair and lets the reader overrule it (`same_model`)."""
    if not a or not b:
        return False
    for k in SHAPE_KEYS:
        if a.get(k) is None and b.get(k) is None and k == "vocab":
            continue
        if a.get(k) is None or b.get(k) is None or a.get(k) != b.get(k):
            return False
    return True


# --- decision rules ---------------------------------------------------------------------------------------------

def direction(row: Mapping[str, float] | None) -> str:
    """"better" (the whole interval above 0), "worse" (below 0), "no difference" (it holds 0) or "missing"."""
    if row is None or any(not _finite(row.get(k)) for k in ("ci_low", "ci_high")):
        return "missing"
    return "better" if row["ci_low"] > 0 else "worse" if row["ci_high"] < 0 else "no difference"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _fmt(row: Mapping[str, float]) -> str:
    return f"{row['diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"


def c8_scale(diffs: Mapping[str, Mapping[str, float]], small: Mapping[str, tuple[float, float]],
             large: Mapping[str, tuple[float, float]], *, first: int, last: int, names: tuple[str, str]) -> dict:
    """C8 inside one family: the larger model vs the smaller, AlphaEdit, on the same records.

    `diffs`: measure -> paired difference large − small at the last common milestone `last` (diff, ci_low,
    ci_high), for EDIT_MEASURES; `small`, `large`: measure -> (score at the first common milestone `first`, score
    at `last`). The claim's contrast, read inside a family: the larger model keeps high accuracy (≥ STABLE and no
    drop of more than DROP in every edit measure) while the smaller drops (in some edit measure), and the larger
    is better on the same records.

    - the larger worse in some edit measure → not reproduced;
    - better in every edit measure, kept high while the smaller dropped → reproduced;
    - better in some edit measure, or kept high while the smaller dropped → partly reproduced;
    - neither, at `last` ≥ LONG → not reproduced; neither, before LONG → not testable here (the claim's contrast
      is about 2,000 edits; a short stream where both models still hold says nothing about it)."""
    name_small, name_large = names
    dirs = {m: direction(diffs.get(m)) for m in EDIT_MEASURES}
    if all(d == "missing" for d in dirs.values()):
        return dict(verdict="not testable here",
                    evidence=f"no paired scores of {name_large} and {name_small} on common records yet")
    better = [m for m, d in dirs.items() if d == "better"]
    worse = [m for m, d in dirs.items() if d == "worse"]
    small_dropped = [m for m in EDIT_MEASURES if m in small and small[m][1] < small[m][0] - DROP]
    large_kept = all(m in large and large[m][1] >= STABLE and large[m][1] >= large[m][0] - DROP
                     for m in EDIT_MEASURES)
    pattern = large_kept and bool(small_dropped)
    if worse:
        verdict = "not reproduced"
    elif len(better) == len(EDIT_MEASURES) and pattern:
        verdict = "reproduced"
    elif better or pattern:
        verdict = "partly reproduced"
    else:
        verdict = "not reproduced" if last >= LONG else "not testable here"
    scores = "; ".join(
        f"{m}: {name_large} {large[m][0]:.1%}→{large[m][1]:.1%}, {name_small} {small[m][0]:.1%}→{small[m][1]:.1%}, "
        f"difference {_fmt(diffs[m])} ({dirs[m]})" for m in EDIT_MEASURES if m in large and m in small and m in diffs)
    evidence = (f"AlphaEdit from {first} to {last} edits on the same records — {scores}. "
                f"{name_large} kept high: {large_kept}; {name_small} dropped by more than {DROP:.0%} in: "
                f"{', '.join(small_dropped) or 'none'}.")
    if verdict == "not testable here":
        evidence += (f" At {last} edits neither model has dropped and neither is better: the claim's contrast "
                     f"appears by 2,000 edits, beyond this stream.")
    return dict(verdict=verdict, evidence=evidence)


def c10_families(pair_diffs: Mapping[tuple[str, str], Mapping[str, Mapping[str, float]]],
                 kept_share: Mapping[str, float], rule_effect: Mapping[str, Mapping[str, Mapping[str, float]]], *,
                 last: int | Mapping[tuple[str, str], int], reference: str = "LLaMA") -> dict:
    """C10: do families differ, and does a setting carry from LLaMA to the others?

    `pair_diffs`: (family a, family b) -> measure -> paired difference a − b (AlphaEdit, same records, at `last`:
    one milestone for every pair, or each pair's own, its last common milestone, so that a family whose run is
    shorter does not pull the other pairs back to its milestone); `kept_share`: family -> mean share of directions
    P keeps at the official absolute threshold (projection_check); `rule_effect`: family -> measure -> paired
    difference calibrated − official P (AlphaEdit).

    - differ: some pair differs materially in some measure (interval excludes 0 and |diff| ≥ DROP);
    - own tuning needed: the same absolute threshold keeps shares of directions at least KEPT_SPREAD apart on two
      families (the setting means something else on each), or the calibrated rule changes a non-`reference`
      family's AlphaEdit materially in some measure.
    A pair that differs as a move along the edit/preservation trade-off (`trade_off`) is named as such in the
    evidence; it still counts as differing.
    Both → reproduced; one → partly reproduced; neither → not reproduced; fewer than two families with paired
    scores → not testable here."""
    families = {f for pair in pair_diffs for f in pair}
    if len(families) < 2:
        return dict(verdict="not testable here",
                    evidence=f"fewer than two families with results ({', '.join(sorted(families)) or 'none'})")
    material = [(a, b, m, row) for (a, b), rows in pair_diffs.items() for m, row in rows.items()
                if direction(row) in ("better", "worse") and abs(row["diff"]) >= DROP]
    shares = {f: s for f, s in kept_share.items() if _finite(s)}
    spread = (max(shares.values()) - min(shares.values())) if len(shares) >= 2 else math.nan
    tuned = [(f, m, row) for f, rows in rule_effect.items() if f != reference for m, row in rows.items()
             if direction(row) in ("better", "worse") and abs(row["diff"]) >= DROP]
    differ = bool(material)
    tuning = (_finite(spread) and spread >= KEPT_SPREAD) or bool(tuned)
    verdict = "reproduced" if differ and tuning else "partly reproduced" if differ or tuning else "not reproduced"
    at = {pair: (last[pair] if isinstance(last, Mapping) else last) for pair in pair_diffs}
    one = len(set(at.values())) == 1
    parts = [(f"AlphaEdit at {next(iter(at.values()))} edits on the same records: " if one else
              "AlphaEdit on the same records, each pair at its last common milestone: ")
             + ("; ".join(f"{a} − {b}{'' if one else f' ({at[(a, b)]} edits)'} {m} {_fmt(r)}"
                          for a, b, m, r in material) if material
                else f"no difference of {DROP:.0%} or more between families in any measure")]
    for (a, b), rows in pair_diffs.items():
        move = trade_off(rows)
        if move:
            parts.append(f"{a} − {b} is a trade-off, not a ranking: {a} {trade_off_words(move)}")
    if shares:
        parts.append("the official absolute threshold keeps " + ", ".join(f"{s:.0%} ({f})" for f, s in
                                                                         sorted(shares.items()))
                     + " of the directions" + (f" (spread {spread:.0%})" if _finite(spread) else ""))
    if any(f != reference for f in rule_effect):
        parts.append("the calibrated rule changes " + ("; ".join(f"{f} {m} by {_fmt(r)}" for f, m, r in tuned)
                                                       if tuned else f"no non-{reference} result materially"))
    else:
        parts.append(f"the calibrated rule has not run yet on a non-{reference} model")
    return dict(verdict=verdict, evidence="; ".join(parts) + ".")


def c9_instruct(diffs: Mapping[str, Mapping[str, Mapping[str, float]]], *, same_model: bool, last: int,
                base: str) -> dict:
    """C9: Instruct vs Base. `diffs`: instruct model -> measure -> paired difference instruct − base (AlphaEdit,
    same records, last common milestone `last`), for EDIT_MEASURES.

    Only a same-model pair (the instruct model tuned from this base) tests the claim: then better in every edit
    measure → reproduced, in some → partly reproduced, otherwise (no difference or worse) → not reproduced. Two
    different models differ in far more than instruction tuning (size, data, tokenizer, family): their comparison
    is reported as evidence confounded by model identity and the verdict is not testable here."""
    have = {k: v for k, v in diffs.items() if any(direction(v.get(m)) != "missing" for m in EDIT_MEASURES)}
    if not have:
        return dict(verdict="not testable here", evidence=f"no paired scores of {base} and an instruct model yet")
    text = "; ".join(f"{k} − {base}: " + ", ".join(f"{m} {_fmt(v[m])} ({direction(v[m])})"
                                                   for m in EDIT_MEASURES if m in v) for k, v in have.items())
    if not same_model:
        return dict(verdict="not testable here",
                    evidence=(f"Confounded by model identity: no same-model Base/Instruct pair; AlphaEdit at {last} "
                              f"edits on the same records, {text}. These differences mix instruction tuning with "
                              "size, training data, tokenizer and family."))
    dirs = [direction(v.get(m)) for v in have.values() for m in EDIT_MEASURES]
    verdict = ("not reproduced" if "worse" in dirs else "reproduced" if all(d == "better" for d in dirs)
               else "partly reproduced" if "better" in dirs else "not reproduced")
    return dict(verdict=verdict, evidence=f"Same-model pair, AlphaEdit at {last} edits on the same records: {text}.")


def c1_across(per_model: Mapping[str, Mapping[str, Any]]) -> dict:
    """C1 across models. `per_model`: model -> dict(verdict=projection_check's C1 verdict, kept_share=mean share of
    directions kept at the official threshold, energy_kept, leak=mean ‖Pk‖/‖k‖ of held-out keys). Every model's
    C1 reproduced → reproduced; some → partly reproduced; none → not reproduced; fewer than two models → not
    testable here (across models needs two). The evidence shows how P differs across models (one absolute threshold
    keeps different shares)."""
    have = {m: v for m, v in per_model.items() if v.get("verdict")}
    if len(have) < 2:
        return dict(verdict="not testable here", evidence=(
            "No model's projection_check has run yet." if not have else
            f"Only one model's projection_check has run ({next(iter(have))}: keeps "
            f"{next(iter(have.values()))['kept_share']:.0%} of the directions): that P differs across models needs "
            "a second model's."))
    ok = [m for m, v in have.items() if v["verdict"] == "reproduced"]
    verdict = "reproduced" if len(ok) == len(have) else "partly reproduced" if ok else "not reproduced"
    shares = "; ".join(f"{m}: keeps {v['kept_share']:.0%} of the directions, {v['energy_kept']:.1%} of the energy, "
                       f"held-out ‖Pk‖/‖k‖ {v['leak']:.2f} (C1 {v['verdict']})" for m, v in have.items())
    return dict(verdict=verdict, evidence=(f"P is built per model from its own statistics and differs across models "
                                           f"at the same official threshold — {shares}."))


def combine_rules(by_rule: Mapping[str, Mapping[str, str]]) -> dict:
    """One verdict from the verdicts under each P rule: the rules that could test the claim agree → that verdict;
    they disagree → partly reproduced if one of them reproduces the claim at least partly (the effect holds under
    one P only), else not reproduced; none could → not testable here. Evidence names each rule."""
    tested = {r: v for r, v in by_rule.items() if v["verdict"] in VERDICT_RANK}
    evidence = " ".join(f"[{r} P] {v['evidence']}" for r, v in by_rule.items())
    if not tested:
        return dict(verdict="not testable here", evidence=evidence)
    verdicts = {v["verdict"] for v in tested.values()}
    if len(verdicts) == 1:
        verdict = verdicts.pop()
    else:
        verdict = "partly reproduced" if verdicts & {"reproduced", "partly reproduced"} else "not reproduced"
        evidence += " The P rules disagree: the effect depends on how P is set."
    untested = [r for r in by_rule if r not in tested]
    if untested:
        evidence += f" Not tested under the {', '.join(untested)} P rule."
    return dict(verdict=verdict, evidence=evidence)


# --- readings that qualify a verdict ----------------------------------------------------------------------------

def trade_off(diffs: Mapping[str, Mapping[str, float]]) -> dict[str, list[str]] | None:
    """Whether a paired difference a − b between two models is a move along the edit/preservation trade-off rather
    than a ranking. `diffs`: measure -> paired difference (diff, ci_low, ci_high).

    Returns dict(lands_more=[edit measures where a is better], keeps_more=[keep measures where a is better],
    lands_fewer=..., keeps_fewer=...) when a is better in some EDIT_MEASURE and worse in some KEEP_MEASURE, or the
    reverse, each with its interval clear of 0 and no measure of either kind pointing the other way; None
    otherwise (one model better or no worse everywhere, or mixed signals inside one kind)."""
    def split(measures: tuple[str, ...]) -> tuple[list[str], list[str]]:
        dirs = {m: direction(diffs.get(m)) for m in measures}
        return [m for m, d in dirs.items() if d == "better"], [m for m, d in dirs.items() if d == "worse"]

    edit_up, edit_down = split(EDIT_MEASURES)
    keep_up, keep_down = split(KEEP_MEASURES)
    if (edit_up and edit_down) or (keep_up and keep_down):
        return None
    if (edit_up and keep_down) or (edit_down and keep_up):
        return dict(lands_more=edit_up, keeps_more=keep_up, lands_fewer=edit_down, keeps_fewer=keep_down)
    return None


def trade_off_words(move: Mapping[str, list[str]]) -> str:
    """Which way `trade_off`'s move goes, for model a: "lands more edits and keeps fewer facts" or the reverse."""
    return "lands more edits and keeps fewer facts" if move["lands_more"] else "keeps more facts and lands fewer edits"


def method_gaps(vs_memit, weights, *, edits: int, measure: str = "efficacy"):
    """Per model (official P): AlphaEdit − MEMIT in `measure` at milestone `edits` next to the size of each
    method's update there.

    `vs_memit`: the chapter's paired table (model, rule, edits, measure, diff, ci_low, ci_high); `weights`: mean
    relative weight change per run (model, rule, method, edits, relative_change). Returns one row per model with
    both: model, edits, diff, ci_low, ci_high, change_alphaedit, change_memit and change_ratio (MEMIT's update as
    a share of AlphaEdit's, ‖ΔW‖/‖W‖ means over the edited layers)."""
    import pandas as pd

    columns = ["model", "edits", "diff", "ci_low", "ci_high", "change_alphaedit", "change_memit", "change_ratio"]
    gap = vs_memit[(vs_memit.rule == "official") & (vs_memit.edits == edits) & (vs_memit.measure == measure)]
    w = weights[(weights.rule == "official") & (weights.edits == edits)]
    rows = []
    for g in gap.itertuples():
        change = {m: w[(w.model == g.model) & (w.method == m)].relative_change for m in ("alphaedit", "memit")}
        if any(c.empty for c in change.values()):
            continue
        a, b = float(change["alphaedit"].iloc[0]), float(change["memit"].iloc[0])
        rows.append(dict(model=g.model, edits=edits, diff=float(g.diff), ci_low=float(g.ci_low),
                         ci_high=float(g.ci_high), change_alphaedit=a, change_memit=b,
                         change_ratio=b / a if a > 0 else math.nan))
    return pd.DataFrame(rows, columns=columns)


def method_gap_reading(gaps, reference: str, *, measure: str = "efficacy") -> str:
    """One paragraph on `method_gaps`' table: each model whose AlphaEdit − MEMIT gap exceeds the `reference`
    model's by DROP or more (MEMIT falls that much further behind there), whether MEMIT's update is also a smaller
    share of AlphaEdit's there than on the reference, and what would tell a model effect from MEMIT's
    regularisation (λ, the weight of the preserved keys' second moment, set for LLaMA). Empty string when the
    reference model or every other model is missing."""
    ref = gaps[gaps.model == reference]
    if ref.empty:
        return ""
    r = ref.iloc[0]
    lines = []
    for g in gaps[gaps.model != reference].itertuples():
        further = g.diff - r["diff"]
        if not further >= DROP:
            continue
        smaller = _finite(g.change_ratio) and _finite(r.change_ratio) and g.change_ratio < r.change_ratio
        lines.append(
            f"On {g.model} MEMIT falls {100 * further:.0f} points further behind AlphaEdit in {measure} than on "
            f"{reference} at {g.edits:,} edits ({100 * g.diff:+.1f} [{100 * g.ci_low:+.1f}, {100 * g.ci_high:+.1f}] "
            f"against {100 * r['diff']:+.1f}), and its update is "
            + (f"a smaller share of AlphaEdit's there ({g.change_ratio:.2f}× against {r.change_ratio:.2f}×)"
               if smaller else
               f"not a smaller share of AlphaEdit's there ({g.change_ratio:.2f}× against {r.change_ratio:.2f}×), so "
               "an update of the same relative size lands fewer edits on that model")
            + ". MEMIT's λ (the weight of the preserved keys' second moment in its solve) was set for LLaMA: "
              "with the same targets, a λ at which MEMIT's update matches AlphaEdit's in size would tell a model "
              "effect from a mis-set λ (`benchmarks/memit_lambda_check.py`).")
    return " ".join(lines)


def lambda_matched(check) -> dict[str, dict[str, Any]] | None:
    """From one model's λ check (`benchmarks/memit_lambda_check.py`'s CSV: method, lam, efficacy, specificity,
    rewrite_acc, change, preset_lam): the AlphaEdit row, MEMIT's row at the preset λ and MEMIT's row whose update
    size `change` is closest to AlphaEdit's (the matched-strength comparison), each as a dict; None without an
    AlphaEdit row or a MEMIT row."""
    a = check[check.method == "alphaedit"]
    m = check[check.method == "memit"]
    if a.empty or m.empty:
        return None
    alpha = a.iloc[0].to_dict()
    matched = m.iloc[int((m.change - alpha["change"]).abs().to_numpy().argmin())].to_dict()
    preset = m[m.lam == m.preset_lam]
    return dict(alphaedit=alpha, matched=matched, preset=preset.iloc[0].to_dict() if len(preset) else None)


def lambda_reading(model: str, found: Mapping[str, Any], requests: int) -> str:
    """One sentence on `lambda_matched`'s rows for `model` (first `requests` records, one batch)."""
    a, m, p = found["alphaedit"], found["matched"], found["preset"]
    text = (f"On {model}'s first {requests} requests (one batch, the same targets), MEMIT at λ {m['lam']:g}, whose "
            f"update is the size of AlphaEdit's ({m['change']:.3f} against {a['change']:.3f}), reaches efficacy "
            f"{m['efficacy']:.2f} and specificity {m['specificity']:.2f} against AlphaEdit's {a['efficacy']:.2f} and "
            f"{a['specificity']:.2f}")
    if p is not None and p["lam"] != m["lam"]:
        text += (f"; at the preset's λ {p['lam']:g} its update is {p['change']:.3f} and its efficacy "
                 f"{p['efficacy']:.2f}")
    return text + "."


# --- running the measurements -----------------------------------------------------------------------------------

def _notebook_parameters(name: str, notebooks: Path) -> set[str]:
    import papermill

    from .study import sync_pair

    return set(papermill.inspect_notebook(str(sync_pair(name, notebooks))))


def run_model(model: str, rule: str, results_root: Path, *, jobs: int = 1, time_budget: float | None = None,
              only: Iterable[str] = ("projection_check", "edit_count"), hparams: str = "",
              stop_after: int | None = None) -> None:
    """Produce or resume one (model, rule) run: projection_check (official rule; the calibrated rule once
    projection_check builds P with nullspace_mode) then edit_count, into results/<label>/; each sitting is
    appended to results/<label>/edit_count/sittings.jsonl (wall time, edits done before and after).
    `stop_after`: stop (and render) at this milestone, short of the model's guide size; the same run continues
    later without it (same records, milestones and checkpoints)."""
    import datetime
    import os
    import time

    from .study import ROOT, run_methods_in_parallel, run_notebook

    notebooks = ROOT / "notebooks"
    rel = os.path.relpath(Path(results_root).resolve(), notebooks)
    p = plan(model, rule, results_root, hparams=hparams, stop_after_edits=stop_after)
    print(f"== {model}, {rule} P: {p['rule_source']}"
          + (f"; this sitting stops at {stop_after} of {p['edits']} edits" if stop_after else ""), flush=True)
    lr_check = ROOT / "benchmarks" / "results" / f"target_lr-{model_dir(model)}.md"
    if model in MODELS and not hparams and not lr_check.exists():
        print(f"WARNING: no {lr_check.relative_to(ROOT)}: the preset rule's v_lr amendment (hparams.choose_v_lr) "
              f"has not been checked on {model}; run benchmarks/target_lr_check.py --model {model} --edits 10 "
              "first", flush=True)
    if "projection_check" in only:
        folder = Path(results_root) / p["label"] / "projection_check"
        if rule == "calibrated" and "nullspace_mode" not in (ROOT / "notebooks" / "projection_check.py").read_text():
            print("projection_check builds P at the absolute threshold only: skipped for the calibrated rule",
                  flush=True)
        elif _completed(folder):
            print(f"projection_check already completed in {folder}: not rerun", flush=True)
        else:
            try:  # a failure (e.g. a P that keeps every direction) is a result to read, not a reason to stop
                run_notebook("projection_check", dict(p["projection_check"], results_dir=rel), folder, notebooks)
            except Exception as e:  # noqa: BLE001 - papermill raises its own error types
                print(f"projection_check failed ({type(e).__name__}); see {folder / 'projection_check.ipynb'}",
                      flush=True)
    shared = shared_stream(results_root, model, rule)
    if "edit_count" in only and shared:
        print(f"edit_count: the {shared['chapter']} chapter's {shared['stream']!r} stream is this run "
              f"({shared['folder']}); it is edited by notebooks/{shared['chapter']} (scripts/queue.sh), not here",
              flush=True)
    elif "edit_count" in only:
        params = dict(p["edit_count"], results_dir=rel)
        known = _notebook_parameters("edit_count", notebooks)
        if "stop_after_edits" in params and "stop_after_edits" not in known:
            print(f"WARNING: edit_count has no stop_after_edits parameter yet: this stream runs on to "
                  f"{params['n_edits']} edits (milestones {params['milestones']} are scored on the way). Stop it "
                  "(it resumes) once the last milestone is written, or pass --time-budget.", flush=True)
            params.pop("stop_after_edits")
        out = Path(results_root) / p["label"] / "edit_count"
        before = _edits_done(out)
        started = time.time()
        extra = None
        if time_budget is not None:
            params["time_budget_min"] = time_budget
        try:
            if jobs > 1 and len(params.get("methods", ["alphaedit", "memit"])) > 1:
                run_methods_in_parallel(params, notebooks, jobs)
                extra = dict(parallel_jobs=jobs, parallel_runs_wall_seconds=round(time.time() - started, 1))
                if time_budget is not None:
                    params["time_budget_min"] = 0  # the rendering run only renders
            run_notebook("edit_count", params, out, notebooks, provenance_extra=extra)
        finally:
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "sittings.jsonl", "a") as f:
                when = datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds")
                f.write(json.dumps(dict(started_at=when, wall_seconds=round(time.time() - started, 1),
                                        edits_before=before, edits_after=_edits_done(out), jobs=jobs, rule=rule,
                                        cpu_count=os.cpu_count())) + "\n")


def _completed(folder: Path) -> bool:
    """Whether the notebook executed into `folder` finished (its provenance.json says so)."""
    try:
        return json.loads((folder / "provenance.json").read_text()).get("status") == "completed"
    except (OSError, ValueError):
        return False


def _edits_done(out: Path) -> dict[str, int]:
    """Edits each method's summary says are checkpointed (empty before the first render)."""
    try:
        return dict(json.loads((out / "summary.json").read_text()).get("edits_checkpointed", {}))
    except (OSError, ValueError):
        return {}


def run_chapters(results_root: Path) -> None:
    """Execute model_compare and instruct_vs_base into results/across-models/<chapter>/."""
    import os

    from .study import ROOT, run_notebook

    notebooks = ROOT / "notebooks"
    rel = os.path.relpath(Path(results_root).resolve(), notebooks)
    for name in ("model_compare", "instruct_vs_base"):
        run_notebook(name, dict(results_dir=rel), Path(results_root) / COMPARISON_LABEL / name, notebooks)


def status_table(results_root: str | Path, models: Iterable[str] = tuple(MODELS)) -> list[dict[str, Any]]:
    """Per model and rule: status, edits reached, the command that produces or resumes it, the estimated cost."""
    rows = []
    for model in models:
        for rule in RULES:
            run = read_run(results_root, model, rule)
            p = plan(model, rule, results_root)
            shared = shared_stream(results_root, model, rule)
            rows.append(dict(model=model, rule=rule, status=run.status,
                             reached=max((max(v) for v in run.reached.values() if v), default=0), target=p["edits"],
                             estimate_hours=round(run_hours(model, rule, p, shared), 1),
                             command=command(model, rule),
                             shared=f"{shared['chapter']} chapter's {shared['stream']} stream" if shared else ""))
    return rows


def main(argv: list[str] | None = None) -> None:
    import argparse

    from .study import ROOT

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["plan", "run", "chapters"])
    ap.add_argument("--model", help=f"run: an offline model ({', '.join(MODELS)}), a hub id or a local folder")
    ap.add_argument("--rule", choices=RULES, default="official", help="run: the P rule")
    ap.add_argument("--hparams", default="", help="run: preset name or JSON file (default: the model's preset)")
    ap.add_argument("--only", default="projection_check,edit_count", help="run: notebooks, comma-separated")
    ap.add_argument("--jobs", type=int, default=1, help="run: edit_count's methods in parallel processes")
    ap.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                    help="run: start no new edit batch after MIN minutes (the same command resumes)")
    ap.add_argument("--stop-after", type=int, default=None, metavar="EDITS",
                    help="run: stop at this milestone, short of the model's guide size (the same run continues "
                         "later without it)")
    ap.add_argument("--results", default=str(ROOT / "results"), help="results root")
    args = ap.parse_args(argv)
    root = Path(args.results)
    if args.action == "plan":
        for row in status_table(root):
            print(f"{row['model']:30} {row['rule']:10} {row['status']:12} {row['reached']:>5}/{row['target']:<5} "
                  f"~{row['estimate_hours']:>5} h  {row['command']}"
                  + (f"  (editing: the {row['shared']}; the command adds projection_check)" if row["shared"] else ""))
    elif args.action == "run":
        if not args.model:
            ap.error("run needs --model")
        run_model(args.model, args.rule, root, jobs=args.jobs, time_budget=args.time_budget,
                  only=[n for n in args.only.split(",") if n], hparams=args.hparams, stop_after=args.stop_after)
    else:
        run_chapters(root)


if __name__ == "__main__":
    main()
