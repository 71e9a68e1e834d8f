"""Operating points: the grid of settings swept by `notebooks/operating_points`, the comparison of two methods at
equal edit strength, the calibrated projector rule and the verdicts drawn from the sweep. Pure functions over
numbers, arrays and hparams dicts: the notebook measures, this module decides, and the tests pin the rules.

**Grid** (`operating_grid`): one `Setting` per point (method + hparams overrides), each varying one knob from the
model's preset: AlphaEdit's absolute `nullspace_threshold`, its energy rule (`nullspace_energy`), `L2`; MEMIT's
`mom2_update_weight` (λ); `clamp_norm_factor` for both; extra seeds (hparams `seed`: the sampled context templates)
at the default point of both; AlphaEdit's statistics (hence P) from another corpus (`mom2_corpus`); and, for C3, the
target-optimisation settings of another preset (`migrated_overrides`).
Settings that equal the preset are dropped (the default point covers them). Order: the default points first, then
the two ends of every knob's range, then the interior points, then clamp, corpus and migration, then seeds: a run cut short
by its time budget has every curve's span before its detail. All settings cost about the same (two batches of
target optimisation dominate), so the order is by information, not by cost.

**Equal efficacy** (`equal_efficacy`): each method's curve is a path through its settings in knob order; the mean
efficacy along it is interpolated linearly between the two settings that bracket the target (the bracketing segment
nearest the method's default point when several do), and the outcome (specificity, locality, drift, ...) is
interpolated with the same weight. The interval is a paired bootstrap that resamples the records (and, for outcomes
measured on other units such as held-out key blocks, those units) and re-does the matching in every resample, so it
includes the noise of finding the matched point. `nearest_pair` is the alternative without interpolation: the two
settings whose efficacies are closest, compared directly record by record.

**Calibrated projector** (`calibrate_energy`): among the energy-rule points, those whose edits land (mean efficacy
>= `efficacy_floor`) are candidates (all points, flagged, when none lands); among the candidates, the largest energy
share whose held-out leak (mean ‖Pk‖/‖k‖ over the edited layers) stays <= `leak_target` is chosen (the most room
for edits that still protects); if none protects, the candidate with the smallest leak. Both measures are
scale-free, so the rule carries across models where an absolute threshold does not.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .verdicts import DROP, direction

Paired = Mapping[str, float]  # a row of metrics.paired.paired_differences: diff, ci_low, ci_high, mean_a, mean_b

RELATIVE = 0.25  # a material change of a measure without a natural scale (drift): 25% of the larger mean
KNOB_ORDER = ("nullspace_energy", "mom2_update_weight", "nullspace_threshold", "L2", "clamp_norm_factor",
              "mom2_corpus", "migration", "seed")
METHOD_KNOBS = {"nullspace_threshold": "alphaedit", "nullspace_energy": "alphaedit", "L2": "alphaedit",
                "mom2_update_weight": "memit"}
# fields that describe the model and its statistics, not the algorithm: never migrated from another preset
PLUGIN_METHODS = ("memit_projected", "memit_seq")  # P4: MEMIT with Δ P, and the official sequential MEMIT
MODEL_FIELDS = ("layers", "v_loss_layer", "mom2_corpus", "mom2_n_tokens", "mom2_seq_len", "mom2_dtype",
                "batch_size", "seed", "targets_chunk", "source")


# ------------------------------------------------------------------------------------------------------- grid
@dataclass
class Setting:
    """One operating point: `method` with the preset's hparams and `overrides`."""

    id: str
    method: str
    knob: str  # "default", a hparams field, "migration" or "seed"
    value: Any
    overrides: dict[str, Any] = field(default_factory=dict)
    tier: int = 0  # run order: 0 defaults, 1 knob ends, 2 interior, 3 clamp and migration, 4 seeds

    def hparams(self, base: Mapping[str, Any]) -> dict[str, Any]:
        return {**base, **self.overrides}


def hparams_digest(method: str, hparams: Mapping[str, Any]) -> str:
    """Short sha256 of a method and its full hparams dict: the key of a setting's checkpoint folder."""
    text = json.dumps({"method": method, "hparams": dict(hparams)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def corpus_label(corpus: str) -> str:
    """A short name for a statistics corpus in setting ids and rule names: a registered name as it is, a text file
    by its stem (letters, digits, '.', '_', '-' only: the id names a checkpoint folder)."""
    name = Path(corpus).stem if ("/" in corpus or "\\" in corpus or Path(corpus).suffix) else corpus
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "corpus"


def migrated_overrides(model_hp: Mapping[str, Any], reference_hp: Mapping[str, Any]) -> dict[str, Any]:
    """The algorithm fields of `reference_hp` (another model's preset) that differ from `model_hp`: the
    reference applied unchanged except for what belongs to the model (`MODEL_FIELDS`: its layers and loss layer,
    its own second-moment statistics, run settings) and the stabilisers absent from the reference."""
    return {k: v for k, v in reference_hp.items()
            if k in model_hp and k not in MODEL_FIELDS and model_hp[k] != v}


def operating_grid(base: Mapping[str, Any], *, thresholds: Sequence[float] = (), energies: Sequence[float] = (),
                   l2s: Sequence[float] = (), lambdas: Sequence[float] = (), clamps: Sequence[float] = (),
                   seeds: Sequence[int] = (), migration: tuple[str, Mapping[str, Any]] | None = None,
                   corpora: Sequence[str] = (),
                   methods: Sequence[str] = ("alphaedit", "memit"),
                   default_only: Sequence[str] = PLUGIN_METHODS) -> list[Setting]:
    """The settings of the sweep in run order (see the module docstring). `base` is the preset's hparams dict;
    `migration` is (name, overrides) for AlphaEdit with another preset's settings; `corpora` are other texts for
    AlphaEdit's second-moment statistics (its P) at the preset's rule (tier 3). The methods in `default_only`
    (the plug-in comparison's) get their default point only, run with the clamp and migration settings. A setting
    whose hparams equal the preset's (or another setting's) for the same method is left out."""
    base = dict(base)
    mode = base.get("nullspace_mode", "threshold")
    points: list[Setting] = [Setting(f"{m}-default", m, "default", None, {}, 3 if m in default_only else 0)
                             for m in methods]

    def knob(name: str, values: Sequence[Any], method: str, extra: Mapping[str, Any] | None = None,
             is_default=None) -> None:
        if method not in methods:
            return
        vals = [v for v in dict.fromkeys(values) if not (is_default or (lambda v: base.get(name) == v))(v)]
        ordered = sorted(vals)
        ends = {ordered[0], ordered[-1]} if ordered else set()
        for v in vals:
            tier = 3 if name == "clamp_norm_factor" else 4 if name == "seed" else 1 if v in ends else 2
            points.append(Setting(f"{method}-{name}-{_fmt(v)}", method, name, v, {**(extra or {}), name: v}, tier))

    knob("nullspace_energy", energies, "alphaedit", {"nullspace_mode": "energy"},
         is_default=lambda v: mode == "energy" and base.get("nullspace_energy") == v)
    knob("mom2_update_weight", lambdas, "memit")
    knob("nullspace_threshold", thresholds, "alphaedit", {"nullspace_mode": "threshold"},
         is_default=lambda v: mode == "threshold" and base.get("nullspace_threshold") == v)
    knob("L2", l2s, "alphaedit")
    swept = [m for m in methods if m not in default_only]
    for m in swept:
        knob("clamp_norm_factor", clamps, m)
    if "alphaedit" in methods:
        for c in dict.fromkeys(corpora):
            if c != base.get("mom2_corpus"):
                points.append(Setting(f"alphaedit-mom2_corpus-{corpus_label(c)}", "alphaedit", "mom2_corpus", c,
                                      {"mom2_corpus": c}, 3))
    if migration is not None and "alphaedit" in methods:
        name, overrides = migration
        if overrides:
            points.append(Setting(f"alphaedit-migration-{name}", "alphaedit", "migration", name, dict(overrides), 3))
    for m in swept:
        knob("seed", seeds, m)
    seen, out = set(), []
    for p in points:  # equal hparams for one method: keep the first (the default, or the knob listed first)
        key = hparams_digest(p.method, p.hparams(base))
        if key not in seen:
            seen.add(key)
            out.append(p)
    rank = {k: i for i, k in enumerate(("default",) + KNOB_ORDER)}
    return sorted(out, key=lambda p: (p.tier, rank[p.knob], methods.index(p.method)))


def curve(settings: Sequence[Setting], knob: str, base: Mapping[str, Any]) -> list[tuple[Setting, float]]:
    """The settings along one knob's curve with their knob values, in ascending knob order; the method's default
    point is on the curve when the preset's rule is of that knob's kind (an absolute threshold, or the energy
    rule)."""
    method = METHOD_KNOBS[knob]
    mode = base.get("nullspace_mode", "threshold")
    on = [(s, float(s.value)) for s in settings if s.method == method and s.knob == knob]
    default_on = (knob in ("L2", "mom2_update_weight") or (knob == "nullspace_threshold" and mode == "threshold")
                  or (knob == "nullspace_energy" and mode == "energy"))
    on += [(s, float(base[knob])) for s in settings if s.method == method and s.knob == "default" and default_on]
    return sorted(on, key=lambda sv: sv[1])


# ------------------------------------------------------------------------------------------- equal efficacy
def bracket(values: Sequence[float], target: float, start: int = 0) -> tuple[int, float] | None:
    """Where `target` lies along the path `values`: (i, w) with (1 − w)·values[i] + w·values[i+1] = target for the
    segment whose ends bracket it (ends included) nearest to index `start` (ties: the lower i); (i, 0.0) for a
    point equal to it on a one-point path; None when the path never reaches it."""
    v = [float(x) for x in values]
    if len(v) == 1:
        return (0, 0.0) if v[0] == target else None
    found = []
    for i in range(len(v) - 1):
        lo, hi = min(v[i], v[i + 1]), max(v[i], v[i + 1])
        if lo <= target <= hi:
            w = 0.0 if v[i + 1] == v[i] else (target - v[i]) / (v[i + 1] - v[i])
            found.append((min(abs(i - start), abs(i + 1 - start)), i, w))
    if not found:
        return None
    _, i, w = min(found)
    return i, w


def interpolate(values: Sequence[float], i: int, w: float) -> float:
    """(1 − w)·values[i] + w·values[i+1] (values[i] when w = 0)."""
    return float(values[i]) if w == 0 else (1 - w) * float(values[i]) + w * float(values[i + 1])


def equal_efficacy(eff_a: np.ndarray, out_a: np.ndarray, eff_b: np.ndarray, out_b: np.ndarray, target: float, *,
                   start_a: int = 0, start_b: int = 0, same_units: bool = True, n_boot: int = 2000,
                   confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """A − B in an outcome at equal efficacy `target`, interpolated along both curves.

    `eff_a` [points, n]: per-record efficacy of method A's settings in curve order (records in the same order for
    both methods); `out_a` [points, m]: the outcome per unit (the same records when `same_units`, else other units
    such as held-out key blocks, aligned between A and B). `start_*` is the index of each method's default point.
    Returns: target, seg_a, w_a, seg_b, w_b (the matched segment and weight of each curve), value_a, value_b,
    diff, ci_low, ci_high (paired bootstrap percentile interval, matching redone in each resample), n_records,
    n_units, unmatched (share of resamples in which a curve did not reach the target); NaN diff when a curve does
    not reach it."""
    eff_a, out_a, eff_b, out_b = (np.asarray(x, dtype=float) for x in (eff_a, out_a, eff_b, out_b))
    n, m = eff_a.shape[1], out_a.shape[1]
    if eff_b.shape[1] != n or out_b.shape[1] != m or len(eff_a) != len(out_a) or len(eff_b) != len(out_b):
        raise ValueError(f"shapes do not pair: eff_a {eff_a.shape}, out_a {out_a.shape}, eff_b {eff_b.shape}, "
                         f"out_b {out_b.shape}")
    if same_units and m != n:
        raise ValueError(f"same_units: the outcome has {m} units but there are {n} records")

    def matched(ea, oa, eb, ob):
        ba, bb = bracket(ea, target, start_a), bracket(eb, target, start_b)
        if ba is None or bb is None:
            return None
        return ba, bb, interpolate(oa, *ba), interpolate(ob, *bb)

    nan = math.nan
    row = dict(target=float(target), seg_a=nan, w_a=nan, seg_b=nan, w_b=nan, value_a=nan, value_b=nan, diff=nan,
               ci_low=nan, ci_high=nan, n_records=n, n_units=m, unmatched=nan)
    point = matched(eff_a.mean(1), out_a.mean(1), eff_b.mean(1), out_b.mean(1))
    if point is None:
        return row
    (sa, wa), (sb, wb), va, vb = point
    rng = np.random.default_rng(seed)
    diffs, missed = [], 0
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        jdx = idx if same_units else rng.integers(0, m, m)
        got = matched(eff_a[:, idx].mean(1), out_a[:, jdx].mean(1), eff_b[:, idx].mean(1), out_b[:, jdx].mean(1))
        if got is None:
            missed += 1
        else:
            diffs.append(got[2] - got[3])
    alpha = (1 - confidence) / 2
    lo, hi = (float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1 - alpha))) if diffs else (nan, nan)
    return {**row, "seg_a": sa, "w_a": wa, "seg_b": sb, "w_b": wb, "value_a": va, "value_b": vb, "diff": va - vb,
            "ci_low": lo, "ci_high": hi, "unmatched": missed / n_boot}


def match_targets(eff_a: Sequence[float], eff_b: Sequence[float], anchors: Sequence[float]) -> list[float]:
    """The efficacies at which to compare two curves: the `anchors` (e.g. both default points' efficacies) that
    lie within both curves' ranges; the middle of the overlap when none does; none when the ranges do not overlap."""
    lo = max(min(eff_a), min(eff_b))
    hi = min(max(eff_a), max(eff_b))
    if lo > hi:
        return []
    inside = sorted({float(a) for a in anchors if lo <= a <= hi})
    return inside or [(lo + hi) / 2]


def nearest_pair(a: Mapping[Any, float], b: Mapping[Any, float]) -> tuple[Any, Any, float]:
    """(key of a, key of b, |efficacy gap|) of the closest pair of settings (ties: the first in iteration order)."""
    if not a or not b:
        raise ValueError("both curves need at least one setting")
    best = None
    for ka, va in a.items():
        for kb, vb in b.items():
            gap = abs(float(va) - float(vb))
            if best is None or gap < best[2]:
                best = (ka, kb, gap)
    return best


# ------------------------------------------------------------------------------------------- projector rule
def energy_cut(eigenvalues: Sequence[float], energy: float) -> dict[str, float]:
    """What the energy rule keeps of a spectrum (the rule of `projection.projector_from_cov`): the smallest
    directions whose eigenvalues sum to at most `energy`·tr C. Returns n_kept, the largest kept eigenvalue and the
    smallest dropped one (an absolute threshold between them keeps the same directions)."""
    ev = np.sort(np.clip(np.asarray(eigenvalues, dtype=float), 0, None))
    share = np.cumsum(ev) / ev.sum()
    n = int((share <= energy).sum())
    return dict(n_kept=n, largest_kept=float(ev[n - 1]) if n else math.nan,
                smallest_dropped=float(ev[n]) if n < len(ev) else math.nan)


def threshold_for(eigenvalues: Sequence[float], n_kept: int) -> float:
    """An absolute threshold that keeps the same `n_kept` smallest directions under the official rule
    (eigenvalue < threshold): midway between the largest kept and the smallest dropped eigenvalue (just above the
    largest when all are kept; NaN when none is)."""
    ev = np.sort(np.asarray(eigenvalues, dtype=float))
    if n_kept <= 0:
        return math.nan
    if n_kept >= len(ev):
        return float(np.nextafter(ev[-1], math.inf))
    return float((ev[n_kept - 1] + ev[n_kept]) / 2)


def calibrate_energy(points: Sequence[Mapping[str, float]], *, leak_target: float, efficacy_floor: float
                     ) -> dict[str, Any]:
    """The energy share chosen from the sweep's energy-rule points (each with `energy`, `leak`: mean held-out
    ‖Pk‖/‖k‖ over the edited layers, and `efficacy`: mean efficacy); see the module docstring for the rule.
    Returns nullspace_mode, nullspace_energy, edits_land, protects, leak, efficacy, reason."""
    pts = [dict(p) for p in points if all(math.isfinite(float(p[k])) for k in ("energy", "leak", "efficacy"))]
    if not pts:
        raise ValueError("no energy-rule point with efficacy and leak measured: nothing to calibrate from")
    landing = [p for p in pts if p["efficacy"] >= efficacy_floor]
    candidates = landing or pts
    protecting = [p for p in candidates if p["leak"] <= leak_target]
    if protecting:
        pick = max(protecting, key=lambda p: p["energy"])
        why = (f"the largest energy share whose held-out leak ‖Pk‖/‖k‖ stays <= {leak_target:g}"
               + (f" among those whose efficacy is >= {efficacy_floor:g}" if landing
                  else f"; no energy share reached efficacy {efficacy_floor:g}"))
    else:
        pick = min(candidates, key=lambda p: (p["leak"], -p["energy"]))
        why = (f"no energy share {'with efficacy >= ' + format(efficacy_floor, 'g') + ' ' if landing else ''}"
               f"keeps the held-out leak <= {leak_target:g}: the one with the smallest leak"
               + ("" if landing else f"; no energy share reached efficacy {efficacy_floor:g}"))
    return dict(nullspace_mode="energy", nullspace_energy=float(pick["energy"]), edits_land=bool(landing),
                protects=bool(protecting), leak=float(pick["leak"]), efficacy=float(pick["efficacy"]), reason=why)


# ------------------------------------------------------------------------------------------------ verdicts
def material(row: Paired, measure: str) -> bool:
    """A paired difference whose interval excludes 0 and whose size is material: `DROP` (10 points) for rates,
    `RELATIVE` (25%) of the larger mean for drift."""
    if direction(row) == "no difference" or not math.isfinite(float(row["diff"])):
        return False
    if measure.startswith("drift"):
        return abs(row["diff"]) >= RELATIVE * max(abs(row["mean_a"]), abs(row["mean_b"]))
    return abs(row["diff"]) >= DROP


def _show(measure: str, row: Paired) -> str:
    scale, unit = (1.0, "") if measure.startswith("drift") else (100.0, " points")
    return (f"{measure} {row['diff'] * scale:+.3g}{unit} [{row['ci_low'] * scale:+.3g}, "
            f"{row['ci_high'] * scale:+.3g}]")


def c3_migration(rows: Mapping[str, Paired], *, reference: str, edits: int, note: str = "") -> dict[str, str]:
    """C3 from paired differences (this model's MEMIT-derived preset − `reference` applied to it) keyed by
    measure (efficacy, rewrite_acc: edit strength; specificity, locality: preservation). Reproduced: some edit
    measure better and no measure worse; partly reproduced: some edit measure better and some preservation measure
    worse (a trade-off); not reproduced: no edit measure better."""
    if not rows:
        return dict(verdict="not testable here", evidence=f"No migrated setting ({reference}) was run." + note)
    d = {k: direction(v) for k, v in rows.items()}
    edit_better = any(d.get(k) == "better" for k in ("efficacy", "rewrite_acc"))
    worse = [k for k, v in d.items() if v == "worse"]
    verdict = ("reproduced" if edit_better and not worse else "partly reproduced" if edit_better
               else "not reproduced")
    parts = "; ".join(f"{_show(k, v)} ({d[k]})" for k, v in rows.items())
    return dict(verdict=verdict, evidence=f"The model's own MEMIT-derived preset − {reference} applied to it, "
                f"after {edits} edits on the same records, paired 95% intervals: {parts}." + note)


def c4_knobs(threshold: Mapping[str, Paired] | None, l2: Mapping[str, Paired] | None,
             clamp: Mapping[str, tuple[float, float]] | None, *, edits: int, notes: Mapping[str, str] | None = None
             ) -> dict[str, str]:
    """C4 from three checks. `threshold`: paired differences between the two ends of the absolute-threshold
    curve in editing results (efficacy, rewrite_acc, specificity, locality); "strongly changes" when one is
    `material`. `l2`: the same between the ends of the L2 curve in stability measures (retention of the first
    batch's edits after the next, held-out drift); "changes stability" when one is material. `clamp`: per method,
    the mean size of the target shift ‖z − h0‖ at (the smaller, the larger) clamp_norm_factor; "bounds the edit
    vector" when it is smaller by >= 10% at the smaller clamp for every method. None: the knob was not swept to two
    points. All three shown → reproduced; some → partly reproduced; none → not reproduced; none testable → not
    testable here."""
    notes = dict(notes or {})
    found, parts = {}, []
    if threshold:
        hit = [k for k, v in threshold.items() if material(v, k)]
        found["threshold"] = bool(hit)
        parts.append("nullspace_threshold, smallest − largest: " + "; ".join(_show(k, v) for k, v in threshold.items())
                     + f" → {'strongly changes ' + ', '.join(hit) if hit else 'no material change'}")
    if l2:
        hit = [k for k, v in l2.items() if material(v, k)]
        found["L2"] = bool(hit)
        parts.append("L2, largest − smallest: " + "; ".join(_show(k, v) for k, v in l2.items())
                     + f" → {'changes ' + ', '.join(hit) if hit else 'no material change in stability'}")
    if clamp:
        ok = {m: small <= 0.9 * large for m, (small, large) in clamp.items()}
        found["clamp"] = all(ok.values())
        unbounded = ", ".join(m for m, v in ok.items() if not v)
        parts.append("clamp_norm_factor, mean ‖z − h0‖ at the smaller / larger value: " + "; ".join(
            f"{m} {small:.3g} / {large:.3g}" for m, (small, large) in clamp.items())
            + f" → {'bounded' if found['clamp'] else 'not smaller by 10% for ' + unbounded}")
    missing = [k for k in ("threshold", "L2", "clamp") if k not in found]
    if not found:
        return dict(verdict="not testable here",
                    evidence="No knob was swept to two points. " + " ".join(notes.values()))
    shown = sum(found.values())
    verdict = ("reproduced" if shown == 3 else "partly reproduced" if shown else "not reproduced")
    extra = f" Not swept: {', '.join(missing)}." if missing else ""
    return dict(verdict=verdict, evidence=f"After {edits} edits, paired 95% intervals between the ends of each "
                f"knob's range (material: {DROP * 100:.0f} points, {RELATIVE:.0%} for drift): " + "; ".join(parts)
                + "." + extra + "".join(" " + v for v in notes.values()))


def c5_projector(default_leak: float, calibrated: Mapping[str, Any] | None, *, leak_target: float, rule: str,
                 protect: Mapping[str, Paired] | None = None) -> dict[str, str]:
    """C5 (check P first) restated: is P verified at the preset's rule (the official threshold in every preset),
    and what fixes it. Reproduced: the check is needed (held-out leak at that rule above `leak_target`) and a
    calibrated rule passes it while edits still land; partly reproduced: needed, but no rule of the sweep passes
    it with the edits landing; not reproduced: the preset's P already passes (the check finds nothing on this
    model). `protect`: paired differences calibrated − preset in preservation measures, quoted."""
    needed = default_leak > leak_target
    text = (f"At the preset's rule ({rule}) held-out preserved keys keep ‖Pk‖/‖k‖ = {default_leak:.2f} on average "
            f"over the edited layers (target <= {leak_target:g}): "
            + ("P does not annihilate them, the check is needed." if needed else "the check passes."))
    if not needed:
        return dict(verdict="not reproduced", evidence=text)
    if calibrated is None:
        return dict(verdict="partly reproduced", evidence=text + " No energy-rule point was run, so no fix is known.")
    fixed = bool(calibrated["protects"] and calibrated["edits_land"])
    text += (f" The calibrated rule (energy share {calibrated['nullspace_energy']:g}) has leak "
             f"{calibrated['leak']:.2f} and efficacy {calibrated['efficacy']:.1%}: {calibrated['reason']}.")
    if protect:
        text += " Calibrated − preset's rule, paired: " + "; ".join(
            f"{_show(k, v)} ({direction(v, not k.startswith('drift'))})" for k, v in protect.items()) + "."
    return dict(verdict="reproduced" if fixed else "partly reproduced", evidence=text)


PRESERVE = ("specificity", "locality")  # preservation measures of the plug-in verdict (higher is better)
STRENGTH = ("efficacy", "rewrite_acc")  # edit strength


def p4_plugin(projected: Mapping[str, Paired], seq: Mapping[str, Paired] | None = None, *, edits: int
              ) -> dict[str, str]:
    """P4 (the projection as a one-line plug-in improves another method) from paired differences
    MEMIT with Δ ← Δ P − plain MEMIT on the same records, keyed by measure (efficacy, rewrite_acc: edit strength;
    specificity, locality: preservation; drift: lower is better). Reproduced: some preservation measure better and
    no edit-strength measure worse; partly reproduced: preservation better at a cost in edit strength (a trade-off,
    not an improvement); not reproduced: no preservation measure better. `seq`: sequential MEMIT (cache_c, no P)
    − plain MEMIT, quoted: it separates "remembers the earlier edits' keys" from "projects onto the null space"."""
    if not projected:
        return dict(verdict="not testable here", evidence="MEMIT with the projected update was not run.")
    d = {k: direction(v, not k.startswith("drift")) for k, v in projected.items()}
    keeps_better = [k for k in PRESERVE if d.get(k) == "better"]
    weaker = [k for k in STRENGTH if d.get(k) == "worse"]
    verdict = ("reproduced" if keeps_better and not weaker else "partly reproduced" if keeps_better
               else "not reproduced")
    text = (f"After {edits} edits on the same records, MEMIT with its update projected (Δ ← Δ P) − plain MEMIT, "
            "paired 95% intervals: " + "; ".join(f"{_show(k, v)} ({d[k]})" for k, v in projected.items()) + ".")
    if weaker and keeps_better:
        text += f" The projection buys {', '.join(keeps_better)} with {', '.join(weaker)}: a trade-off."
    if seq:
        ds = {k: direction(v, not k.startswith("drift")) for k, v in seq.items()}
        text += (" Sequential MEMIT (the earlier edits' keys kept, no P) − plain MEMIT: "
                 + "; ".join(f"{_show(k, v)} ({ds[k]})" for k, v in seq.items()) + ".")
    return dict(verdict=verdict, evidence=text)
