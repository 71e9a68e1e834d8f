"""Decision rules that turn the `edit_count` stream's numbers into verdicts on CLAIMS.md's C7, C11 and P1–P3.

Pure functions over plain numbers: the notebook measures, this module decides, and the tests pin the rules.
Scores are fractions in [0, 1], keyed by method, then by the number of edits at a milestone (0 excluded). Two
metric families are judged: the official code's efficacy (new object more probable than the old) and EasyEdit's
rewrite_acc (teacher-forced token accuracy, the "accuracy" the claim speaks of).

- C7 (number of edits): the reference method stable at the first milestone (≥ `STABLE` in every family), a marked
  drop beyond `LONG` edits (more than `DROP` below the first milestone, for some method in some family) and a
  collapse by the last milestone (below `COLLAPSE` × the first milestone, for some method in some family) →
  reproduced; stable with only one of the two → partly reproduced; otherwise not reproduced.
- C11 (start small): two readings are tested. The small run as a sanity check (the reference method stable at the
  first milestone) and the small run as a forecast (its scores within `DROP` of the last milestone's in every
  family). Both → reproduced; a sanity check that passes but does not forecast the long run → partly reproduced;
  an unstable first milestone (the check flags a problem, nothing to forecast) → partly reproduced.
- Both are "not testable here" until the stream has reached max(`LONG`, planned edits).

P1–P3 (the paper's own claims) are judged on paired differences AlphaEdit − MEMIT at the last milestone (rows with
`diff`, `ci_low`, `ci_high`: a paired 95% interval over the same records, text windows or token blocks). A
difference is "better" when its whole interval is on the good side of 0, "worse" when it is on the bad side, and
"no difference" otherwise. All three wait for `PAPER_EDITS` edits (the paper's 2,000).

- P1 (preservation): AlphaEdit better in efficacy and generalisation, better in specificity, and fluency not worse
  → reproduced; better in the edit measures or in specificity but not both (or fluency worse) → partly
  reproduced; otherwise not reproduced.
- P2 (general capability, as held-out perplexity): AlphaEdit's perplexity within `NEAR` (5%) of the unedited
  model's on every source (upper interval bound) and lower than MEMIT's on every source → reproduced; one of the
  two → partly reproduced; neither → not reproduced.
- P3 (hidden representations): AlphaEdit's hidden states closer to the unedited model's than MEMIT's at every
  measured layer → reproduced; at some → partly reproduced; at none → not reproduced.
"""
from __future__ import annotations

import math
from typing import Mapping

STABLE = 0.9
DROP = 0.10
COLLAPSE = 0.5
LONG = 1000
PAPER_EDITS = 2000
NEAR = math.log(1.05)  # mean NLL per token: a perplexity within 5% of the unedited model's

Scores = dict[str, dict[int, float]]


def _milestones(scores: dict[int, float]) -> list[int]:
    return sorted(k for k in scores if k > 0)


def _dropped(score: float, first: float) -> bool:
    return score < first - DROP


def _collapsed(score: float, first: float) -> bool:
    return score < COLLAPSE * first


def _drop_and_collapse(scores: dict[int, float]) -> tuple[bool, bool]:
    """(a drop of more than DROP beyond LONG edits, a collapse below COLLAPSE × first at the last milestone)."""
    done = _milestones(scores)
    late = [m for m in done if m >= LONG] or [done[-1]]
    first = scores[done[0]]
    return _dropped(min(scores[m] for m in late), first), _collapsed(scores[done[-1]], first)


def edit_count_claims(
    efficacy: Scores,
    rewrite_acc: Scores,
    n_planned: int,
    checkpointed: dict[str, int] | None = None,
    reference: str = "alphaedit",
) -> dict[str, dict[str, str]]:
    """{"C7": {"verdict", "evidence"}, "C11": {...}} from the official efficacy and EasyEdit rewrite_acc at each
    evaluated milestone. `checkpointed` (edits in each method's checkpoint) is quoted while the stream runs."""
    families = {"efficacy": efficacy, "rewrite_acc": rewrite_acc}
    reached_by = {m: _milestones(e) for m, e in efficacy.items()}
    reached = sorted(set().union(*reached_by.values()))
    if not reached:
        raise ValueError("no milestone evaluated yet: run the stream longer")
    if reference not in efficacy:  # e.g. a per-method run of the stream: the verdicts need the reference method
        reason = f"this run has no {reference} stream (methods: {', '.join(efficacy)}); the verdicts need it."
        return {c: dict(verdict="not testable here", evidence=reason) for c in ("C7", "C11")}
    if not reached_by[reference]:
        raise ValueError(f"no milestone of {reference!r} evaluated yet")
    last = reached[-1]
    lines, dropped, collapsed = [], [], []
    for method, done in reached_by.items():
        if not done:
            lines.append(f"{method}: no edit batch evaluated yet")
            continue
        e, r = efficacy[method], rewrite_acc.get(method, {})
        lines.append(f"{method}: efficacy {e[done[0]]:.1%} at {done[0]} edits, {e[done[-1]]:.1%} at {done[-1]}"
                     + (f" (EasyEdit rewrite_acc {r[done[0]]:.1%} / {r[done[-1]]:.1%})"
                        if done[0] in r and done[-1] in r else ""))
        for family, scores in families.items():
            s = {k: v for k, v in scores.get(method, {}).items() if k in done}
            if not _milestones(s):
                continue
            d, c = _drop_and_collapse(s)
            dropped += [f"{method} {family}"] * d
            collapsed += [f"{method} {family}"] * c
    ref_scores = {f: s[reference] for f, s in families.items() if _milestones(s.get(reference, {}))}
    ref_done = {f: _milestones(s) for f, s in ref_scores.items()}
    stable = all(s[ref_done[f][0]] >= STABLE for f, s in ref_scores.items())
    moved = [f for f, s in ref_scores.items() if abs(s[ref_done[f][0]] - s[ref_done[f][-1]]) > DROP]
    testable = last >= max(LONG, n_planned)
    note = ""
    if testable:
        c7 = ("reproduced" if stable and dropped and collapsed
              else "partly reproduced" if stable and (dropped or collapsed)
              else "not reproduced")
        c11 = "reproduced" if stable and not moved else "partly reproduced"
    else:
        c7 = c11 = "not testable here"
        ahead = ", ".join(f"{m} {k}" for m, k in (checkpointed or {}).items())
        note = (f" Milestones are evaluated up to {last} of {n_planned} edits"
                + (f"; the checkpoints are at {ahead} edits (the stream resumes from them)." if ahead else "."))
    c7_evidence = "; ".join(lines) + "."
    if testable:
        c7_evidence += (f" Drop of more than {DROP * 100:.0f} points beyond {LONG} edits: "
                        f"{', '.join(dropped) or 'none'}; collapse (below {COLLAPSE:.0%} of the first-milestone "
                        f"score) at {last} edits: {', '.join(collapsed) or 'none'}.")
    first, final = reached_by[reference][0], reached_by[reference][-1]
    c11_evidence = f"{reference} at {first} edits: " + ", ".join(
        f"{f} {s[first]:.1%}" for f, s in ref_scores.items() if first in s)
    if final > first:
        c11_evidence += f"; at {final} edits: " + ", ".join(
            f"{f} {s[final]:.1%}" for f, s in ref_scores.items() if final in s)
        c11_evidence += (f": the {first}-edit run is "
                         + ("a passed sanity check" if stable else "unstable already (the check flags a problem)")
                         + (f", but it does not forecast the long run (moved more than {DROP * 100:.0f} points)."
                            if moved else f", and it forecasts the long run (within {DROP * 100:.0f} points)."))
    else:
        c11_evidence += "."
    return {"C7": dict(verdict=c7, evidence=c7_evidence + note),
            "C11": dict(verdict=c11, evidence=c11_evidence + note)}


def onsets(scores: dict[int, float]) -> dict[str, int | None]:
    """Where a score series {edits: score} first falls more than `DROP` below its first milestone ("drop") and
    below `COLLAPSE` × the first milestone ("collapse"); None where it never does. Edits = 0 is ignored."""
    done = _milestones(scores)
    if not done:
        raise ValueError("no milestone evaluated yet")
    first = scores[done[0]]
    drop = next((m for m in done if _dropped(scores[m], first)), None)
    collapse = next((m for m in done if _collapsed(scores[m], first)), None)
    return {"first": done[0], "drop": drop, "collapse": collapse, "last": done[-1]}


# ------------------------------------------------------------------------------------------------ P1–P3
Paired = Mapping[str, float]  # a row of metrics.paired.paired_differences: diff, ci_low, ci_high (+ means)


def direction(row: Paired, higher_is_better: bool = True) -> str:
    """"better" / "worse" / "no difference" for a paired difference A − B with its interval."""
    lo, hi = (row["ci_low"], row["ci_high"]) if higher_is_better else (-row["ci_high"], -row["ci_low"])
    return "better" if lo > 0 else "worse" if hi < 0 else "no difference"


def _fmt(name: str, row: Paired, scale: float = 100.0, unit: str = " points") -> str:
    return (f"{name} {row['diff'] * scale:+.1f}{unit} [{row['ci_low'] * scale:+.1f}, {row['ci_high'] * scale:+.1f}]")


def _not_yet(edits: int, claims: tuple[str, ...]) -> dict[str, dict[str, str]] | None:
    if edits >= PAPER_EDITS:
        return None
    why = f"The paper's setting is {PAPER_EDITS} edits; the stream's last evaluated milestone is {edits}."
    return {c: dict(verdict="not testable here", evidence=why) for c in claims}


def p1_preservation(paired: Mapping[str, Paired], edits: int) -> dict[str, str]:
    """P1 from paired AlphaEdit − MEMIT rows keyed "efficacy", "generalization", "specificity", "fluency" (and
    optionally "locality", "consistency", quoted but not decisive)."""
    early = _not_yet(edits, ("P1",))
    if early:
        return early["P1"]
    d = {k: direction(v) for k, v in paired.items()}
    edit_better = d["efficacy"] == "better" and d["generalization"] == "better"
    keeps_better = d["specificity"] == "better"
    fluent = d["fluency"] != "worse"
    verdict = ("reproduced" if edit_better and keeps_better and fluent
               else "partly reproduced" if edit_better or keeps_better else "not reproduced")
    parts = [_fmt(k, paired[k]) + f" ({d[k]})" for k in ("efficacy", "generalization", "specificity", "locality")
             if k in paired]
    parts += [_fmt(k, paired[k], scale=1.0, unit="") + f" ({d[k]})" for k in ("fluency", "consistency")
              if k in paired]
    return dict(verdict=verdict, evidence=f"AlphaEdit − MEMIT after {edits} edits, paired 95% intervals: "
                + "; ".join(parts) + ".")


def p2_capability(vs_unedited: Mapping[str, Paired], vs_memit: Mapping[str, Paired], edits: int
                  ) -> dict[str, str]:
    """P2 from, per held-out text source, AlphaEdit − unedited and AlphaEdit − MEMIT paired differences of the
    mean NLL per token (lower is better; exp(diff) is the perplexity ratio)."""
    early = _not_yet(edits, ("P2",))
    if early:
        return early["P2"]
    if set(vs_unedited) != set(vs_memit) or not vs_unedited:
        raise ValueError(f"need the same text sources in both comparisons: {sorted(vs_unedited)} vs {sorted(vs_memit)}")
    near = all(r["ci_high"] <= NEAR for r in vs_unedited.values())
    better = all(direction(r, higher_is_better=False) == "better" for r in vs_memit.values())
    verdict = "reproduced" if near and better else "partly reproduced" if near or better else "not reproduced"
    parts = [f"{c}: perplexity ×{math.exp(vs_unedited[c]['diff']):.3f} of the unedited model's "
             f"[{math.exp(vs_unedited[c]['ci_low']):.3f}, {math.exp(vs_unedited[c]['ci_high']):.3f}], "
             f"×{math.exp(vs_memit[c]['diff']):.3f} of MEMIT's [{math.exp(vs_memit[c]['ci_low']):.3f}, "
             f"{math.exp(vs_memit[c]['ci_high']):.3f}]" for c in sorted(vs_unedited)]
    return dict(verdict=verdict, evidence=f"AlphaEdit after {edits} edits, paired 95% intervals over text windows: "
                + "; ".join(parts) + f". Near means within ×{math.exp(NEAR):.2f}.")


def p3_representations(vs_memit: Mapping[str, Paired], edits: int) -> dict[str, str]:
    """P3 from AlphaEdit − MEMIT paired differences of the relative distance of hidden states from the unedited
    model's, keyed by a label per layer (and text source); lower is better."""
    early = _not_yet(edits, ("P3",))
    if early:
        return early["P3"]
    if not vs_memit:
        raise ValueError("no hidden-state drift measured")
    d = {k: direction(v, higher_is_better=False) for k, v in vs_memit.items()}
    closer = [k for k, v in d.items() if v == "better"]
    verdict = ("reproduced" if len(closer) == len(d) else "partly reproduced" if closer else "not reproduced")
    parts = [f"{k}: {v['mean_a']:.3f} vs {v['mean_b']:.3f}, difference {v['diff']:+.3f} "
             f"[{v['ci_low']:+.3f}, {v['ci_high']:+.3f}] ({'closer' if d[k] == 'better' else 'farther' if d[k] == 'worse' else 'no difference'})"
             for k, v in vs_memit.items()]
    return dict(verdict=verdict, evidence=f"Relative distance ‖h − h⁰‖/‖h⁰‖ of hidden states on held-out text "
                f"after {edits} edits, AlphaEdit vs MEMIT, paired over token blocks: " + "; ".join(parts) + ".")


# ------------------------------------------------------------------------ N1 and C7's why (notebooks/collapse)
# N1 (CLAIMS.md, "later work on the collapse"): the edited matrices' norm grows with the number of edits, that growth
# and not the number of edits as such brings the collapse, and bounding it postpones the collapse. Tested on one
# stream of AlphaEdit edits run plainly and with stabilisers (ENCORE's most-probable early stopping and norm
# constraint, Norm-Anchor Scaling), all on the same records; the norm is ‖W − W⁰‖_F / ‖W⁰‖_F of the last edited layer
# at each milestone, the scores are the two families of C7 (official efficacy, EasyEdit rewrite_acc).
#
# - grows: the plain stream's norm at its last milestone is at least `GROWS` × its norm at the first.
# - tracks (norm growth, not the edit count): at the same number of edits (each milestone from `LONG` on with at
#   least 3 AlphaEdit streams), the streams with the larger norm have lost more since their own first milestone: the
#   mean over milestones and families of Spearman's ρ(norm, score − first-milestone score) across the streams is
#   ≤ −`TRACK`. Holding the edit count fixed is what separates "norm growth" from "number of edits"; the loss since
#   the first milestone (not the score itself) is the collapse, so a stream that edits less well from the start is
#   not counted as collapsed. MEMIT is quoted beside it, never pooled: its update spreads over other directions,
#   so a norm of MEMIT and one of AlphaEdit are not the same dose.
# - postpones: a stabilised stream that bounds the norm (≤ `BOUNDED` × the plain stream's at the last common
#   milestone) and edits as well at the start (first-milestone score within `DROP` of the plain stream's in both
#   families, so that it did not buy its stability by editing less) reaches the plain stream's onset later, or not
#   within the stream, in some family and earlier in none. The onset is the plain stream's first collapse milestone in
#   a family where it collapses, else its first drop (`onsets`). A 2,000-edit stream shows a postponement of at most
#   the edits left after the plain onset; "by thousands of edits" is reported as a lower bound.
# N1: grows, tracks and postpones → reproduced; tracks or postpones → partly reproduced; neither → not reproduced.
# "Not testable here" until the plain stream and at least one stabilised stream have reached max(`LONG`, planned
# edits), and when the plain stream shows neither a drop nor a collapse (nothing to explain).
# C7's why answers the two questions of the same rule: does the collapse track norm growth, does bounding the norm
# postpone it (yes: both, partly: one, no: neither).
GROWS = 2.0
TRACK = 0.5
BOUNDED = 0.75
FAMILIES = ("efficacy", "rewrite_acc")
N1_QUOTED = ("Quoted from the papers, not measured here: ENCORE (Gupta et al. 2025) scales locate-then-edit methods "
             "to 10,000 sequential edits (Llama3-8B among its models) without losing downstream performance and cuts "
             "editing time by 42–61%; Norm-Anchor Scaling (Liu et al. 2026) extends the usable editing horizon by "
             "more than 4× and improves long-run editing performance by 72.2% on average.")


def _average_ranks(x: list[float]) -> list[float]:
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def rank_correlation(x: list[float], y: list[float]) -> float:
    """Spearman's ρ (Pearson correlation of the average ranks); NaN for fewer than 3 pairs or a constant side."""
    if len(x) != len(y):
        raise ValueError(f"need pairs: {len(x)} x values, {len(y)} y values")
    if len(x) < 3:
        return math.nan
    rx, ry = _average_ranks(list(x)), _average_ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def norm_mechanism(scores: Mapping[str, Scores], norms: Scores, n_planned: int, variants: list[str],
                   reference: str = "alphaedit") -> dict:
    """The pieces of N1 and of C7's why (see above) from `scores` {family: {stream: {edits: score}}} (families
    `FAMILIES`) and `norms` {stream: {edits: ‖W − W⁰‖/‖W⁰‖ at the last edited layer}} at the milestones.
    `variants` are the stabilised AlphaEdit streams; other streams in `norms` (MEMIT) are context only.
    Returns a dict with `testable` (bool) and `why_not` (str), and when testable: `grows`, `growth`, `tracks`
    (None when no milestone has 3 streams), `rho` (mean ρ), `rhos` [(family, edits, ρ)], `onset` {family:
    (kind, edits)} of the reference and `per_variant` {variant: {bounded, norm_ratio, edits_as_well, onsets
    {family: edits or None}, later, earlier, postponed, last}}."""
    need = max(LONG, n_planned)

    def reached(stream: str) -> int:
        done = [max(_milestones(scores[f].get(stream, {})), default=0) for f in FAMILIES]
        return min(done + [max(_milestones(norms.get(stream, {})), default=0)])

    out: dict = dict(testable=False, why_not="", need=need, reached={s: reached(s) for s in [reference, *variants]})
    if out["reached"][reference] < need:
        out["why_not"] = (f"The plain {reference} stream is evaluated up to {out['reached'][reference]:,} edits; "
                          f"the rule needs {need:,}.")
        return out
    ready = [v for v in variants if out["reached"][v] >= need]
    if not ready:
        out["why_not"] = (f"No stabilised stream has reached the {need:,} edits the rule needs"
                          + (" (" + ", ".join(f"{v} {out['reached'][v]:,}" for v in variants) + ")." if variants
                             else ": none has been evaluated yet."))
        return out
    ref_onsets = {f: onsets(scores[f][reference]) for f in FAMILIES}
    onset = {f: ("collapse", o["collapse"]) if o["collapse"] else ("drop", o["drop"]) for f, o in ref_onsets.items()
             if o["drop"] or o["collapse"]}
    if not onset:
        out["why_not"] = (f"The plain {reference} stream neither drops nor collapses within "
                          f"{out['reached'][reference]:,} edits: there is no collapse to explain.")
        return out
    ref_norm = norms[reference]
    done = _milestones(ref_norm)
    growth = ref_norm[done[-1]] / ref_norm[done[0]] if ref_norm[done[0]] > 0 else math.inf
    rhos = []
    for f in FAMILIES:
        for m in sorted(set(done) | {m for v in ready for m in _milestones(norms[v])}):
            if m < LONG:
                continue
            pts = [(norms[s][m], scores[f][s][m] - scores[f][s][_milestones(scores[f][s])[0]])
                   for s in [reference, *ready] if m in norms[s] and m in scores[f][s]]
            rho = rank_correlation([p[0] for p in pts], [p[1] for p in pts])
            if not math.isnan(rho):
                rhos.append((f, m, rho))
    rho = sum(r[2] for r in rhos) / len(rhos) if rhos else math.nan
    per_variant = {}
    for v in ready:
        common = sorted(set(_milestones(norms[v])) & set(done))
        norm_ratio = norms[v][common[-1]] / ref_norm[common[-1]] if common and ref_norm[common[-1]] > 0 else math.nan
        firsts = {f: (_milestones(scores[f][v])[0], _milestones(scores[f][reference])[0]) for f in FAMILIES}
        edits_as_well = all(scores[f][v][a] >= scores[f][reference][b] - DROP for f, (a, b) in firsts.items())
        later, earlier, v_onsets = [], [], {}
        for f, (kind, at) in onset.items():
            o = onsets(scores[f][v])
            v_onsets[f] = o[kind]
            if o[kind] is None:
                if o["last"] >= at:
                    later.append(f)
            elif o[kind] > at:
                later.append(f)
            elif o[kind] < at:
                earlier.append(f)
        bounded = norm_ratio <= BOUNDED
        per_variant[v] = dict(bounded=bounded, norm_ratio=norm_ratio, edits_as_well=edits_as_well, onsets=v_onsets,
                              later=later, earlier=earlier, last=out["reached"][v],
                              postponed=bool(bounded and edits_as_well and later and not earlier))
    out.update(testable=True, grows=growth >= GROWS, growth=growth, tracks=None if not rhos else rho <= -TRACK,
               rho=rho, rhos=rhos, onset=onset, per_variant=per_variant)
    return out


def _mechanism_evidence(mech: dict, norms: Scores, scores: Mapping[str, Scores], reference: str) -> str:
    ref = norms[reference]
    done = _milestones(ref)
    parts = [f"plain {reference}: ‖W−W⁰‖/‖W⁰‖ at the last edited layer {ref[done[0]]:.2f} at {done[0]} edits, "
             f"{ref[done[-1]]:.2f} at {done[-1]} (×{mech['growth']:.1f}); onset "
             + ", ".join(f"{f} {kind} at {at}" for f, (kind, at) in mech["onset"].items())]
    if mech["rhos"]:
        parts.append(f"at equal edits (≥ {LONG:,}), Spearman ρ(norm, change since the first milestone) across the "
                     "AlphaEdit streams "
                     + ", ".join(f"{f}@{m} {r:+.2f}" for f, m, r in mech["rhos"]) + f", mean {mech['rho']:+.2f} "
                     f"({'tracks' if mech['tracks'] else 'does not track'}: ≤ {-TRACK:+.2f} needed)")
    else:
        parts.append("fewer than 3 AlphaEdit streams at any milestone: no rank correlation at equal edits")
    for v, p in mech["per_variant"].items():
        onset_txt = ", ".join(f"{f} {'none by ' + str(p['last']) if at is None else at}"
                              for f, at in p["onsets"].items())
        verdict = ("postpones the onset" if p["postponed"] else
                   "does not bound the norm" if not p["bounded"] else
                   "edits worse from the start" if not p["edits_as_well"] else
                   "onset earlier" if p["earlier"] else "onset not later")
        parts.append(f"{v}: norm ×{p['norm_ratio']:.2f} of plain, onset {onset_txt} ({verdict})")
    others = [s for s in norms if s != reference and s not in mech["reached"]]
    for s in others:
        m = max(set(_milestones(norms[s])) & set(done), default=None)
        if m is not None:
            acc = ", ".join(f"{f} {scores[f][s][m]:.1%}" for f in FAMILIES if m in scores[f].get(s, {}))
            parts.append(f"context (not in the rule): {s} at {m} edits, norm {norms[s][m]:.2f}"
                         + (f", {acc}" if acc else ""))
    return "; ".join(parts) + "."


def n1_norm_growth(scores: Mapping[str, Scores], norms: Scores, n_planned: int, variants: list[str],
                   reference: str = "alphaedit") -> dict[str, str]:
    """N1 {"verdict", "evidence", "quoted"} by the rule above (`norm_mechanism` for the inputs)."""
    mech = norm_mechanism(scores, norms, n_planned, variants, reference)
    if not mech["testable"]:
        return dict(verdict="not testable here", evidence=mech["why_not"], quoted=N1_QUOTED)
    postponed = [v for v, p in mech["per_variant"].items() if p["postponed"]]
    verdict = ("reproduced" if mech["grows"] and mech["tracks"] and postponed
               else "partly reproduced" if mech["tracks"] or postponed else "not reproduced")
    evidence = _mechanism_evidence(mech, norms, scores, reference)
    if postponed:
        evidence += (" Stabilisers that postpone the onset: " + ", ".join(postponed) + f". The streams end at "
                     f"{max(mech['reached'].values()):,} edits: an onset beyond the end is a postponement of unknown "
                     "size (a lower bound), so 'by thousands of edits' is not testable here.")
    return dict(verdict=verdict, evidence=evidence, quoted=N1_QUOTED)


def c7_why(scores: Mapping[str, Scores], norms: Scores, n_planned: int, variants: list[str],
           reference: str = "alphaedit") -> dict[str, str]:
    """C7's why {"question", "answer", "evidence"}: does the collapse track norm growth, and does bounding the
    norm postpone it? answer "yes" (both), "partly" (one), "no" (neither) or "not testable here"."""
    question = "Does the collapse track the growth of ‖W − W⁰‖, and does bounding the norm postpone it?"
    mech = norm_mechanism(scores, norms, n_planned, variants, reference)
    if not mech["testable"]:
        return dict(question=question, answer="not testable here", evidence=mech["why_not"])
    tracks = bool(mech["tracks"])
    postpones = any(p["postponed"] for p in mech["per_variant"].values())
    answer = "yes" if tracks and postpones else "partly" if tracks or postpones else "no"
    return dict(question=question, answer=answer, evidence=_mechanism_evidence(mech, norms, scores, reference))


def calibrated_preservation(vs_memit: Mapping[str, Paired], vs_plain: Mapping[str, Paired], edits: int,
                            n_planned: int) -> dict[str, str]:
    """The calibrated projector's question {"question", "answer", "evidence"} from the calibrated stream's paired
    differences at its last milestone: against MEMIT (keys "efficacy", "specificity", "locality") and against plain
    AlphaEdit (key "efficacy": the cost of calibrating).

    A preservation advantage is specificity better than MEMIT's with locality not worse; specificity or locality
    better alone is half of one. answer "yes" (the advantage, efficacy not worse than MEMIT's), "yes, at a cost in
    efficacy" (the advantage, efficacy worse than MEMIT's), "partly" (half an advantage), "no" (neither), or "not
    testable here" before the planned number of edits."""
    question = ("Does a calibrated P give AlphaEdit the preservation advantage over MEMIT that the paper reports, and "
                "at what cost in efficacy?")
    if edits < n_planned:
        return dict(question=question, answer="not testable here",
                    evidence=f"The calibrated stream's last evaluated milestone is {edits} of {n_planned} edits.")
    missing = {"efficacy", "specificity", "locality"} - set(vs_memit) | {"efficacy"} - set(vs_plain)
    if missing:
        raise ValueError(f"calibrated_preservation: missing paired rows {sorted(missing)}")
    d = {k: direction(vs_memit[k]) for k in ("efficacy", "specificity", "locality")}
    spec, loc = d["specificity"] == "better", d["locality"] == "better"
    advantage = spec and d["locality"] != "worse"
    answer = ("no" if not (spec or loc) else "partly" if not advantage
              else "yes" if d["efficacy"] != "worse" else "yes, at a cost in efficacy")
    parts = [_fmt(k, vs_memit[k]) + f" ({d[k]})" for k in ("efficacy", "specificity", "locality")]
    cost = vs_plain["efficacy"]
    return dict(question=question, answer=answer,
                evidence=f"Calibrated AlphaEdit − MEMIT after {edits} edits, paired 95% intervals: " + "; ".join(parts)
                + f". Calibrated − plain AlphaEdit: {_fmt('efficacy', cost)} ({direction(cost)}).")


STABILITY_ABLATIONS = {"no-cache": ("cache_c", "the accumulated constraint cache_c"),  # ablation -> part removed
                       "p-identity": ("P", "the projection P")}
STABILITY_ANSWERS = ("cache_c and P", "cache_c, not P", "P, not cache_c", "neither alone",
                     *(f"{a} {v}; {b} not tested yet" for a, b in (("cache_c", "P"), ("P", "cache_c"))
                       for v in ("is needed", "is not needed")), "not testable here")


def stability_source(vs_plain: Mapping[str, Mapping[str, Paired]], reached: Mapping[str, int],
                     planned: Mapping[str, int]) -> dict[str, object]:
    """Where AlphaEdit's durability comes from {"question", "answer", "evidence"}, from the ablation streams'
    paired differences against plain AlphaEdit at their last milestone: `vs_plain[ablation]` keyed by measure
    ("efficacy", "rewrite_acc": edit strength; others are shown), `reached` / `planned` edits per ablation.

    An ablation counts once it reached its planned edits: the part it removes ("no-cache": cache_c, "p-identity":
    P) is *needed* when some edit measure is worse without it, *not needed* when none is. answer names the parts
    found needed ("cache_c and P", "cache_c, not P", "P, not cache_c", "neither alone"), or, with one ablation
    counted, what it shows and that the other is not tested yet; "not testable here" with none.
    `answers` lists every answer the rule can give (`STABILITY_ANSWERS`), for readers that check the vocabulary."""
    question = ("Where does AlphaEdit's durability come from: the projection P, or the accumulated constraint "
                "cache_c of earlier edits?")
    counted, parts = {}, []
    first = ("efficacy", "rewrite_acc", "specificity", "locality")
    shown = lambda k: (first.index(k) if k in first else len(first), k)  # noqa: E731 - edit measures first
    for name, (_, what) in STABILITY_ABLATIONS.items():
        rows = vs_plain.get(name) or {}
        at, goal = reached.get(name, 0), planned.get(name, 0)
        if not rows or not goal or at < goal:
            parts.append(f"{name} ({what} removed): " + (f"evaluated to {at} of its {goal} edits" if goal else "not run"))
            continue
        missing = {"efficacy", "rewrite_acc"} - set(rows)
        if missing:
            raise ValueError(f"stability_source: {name} lacks paired rows {sorted(missing)}")
        counted[name] = any(direction(rows[k]) == "worse" for k in ("efficacy", "rewrite_acc"))
        parts.append(f"{name} ({what} removed) − plain AlphaEdit after {at} edits, paired 95% intervals: "
                     + "; ".join(_fmt(k, rows[k]) + f" ({direction(rows[k])})" for k in sorted(rows, key=shown))
                     + f" → {'needed' if counted[name] else 'not needed'}")
    part = {name: short for name, (short, _) in STABILITY_ABLATIONS.items()}
    needed = [part[n] for n, v in counted.items() if v]
    spared = [part[n] for n, v in counted.items() if not v]
    untested = [part[n] for n in part if n not in counted]
    if not counted:
        answer = "not testable here"
    elif untested:
        answer = f"{(needed or spared)[0]} {'is needed' if needed else 'is not needed'}; {untested[0]} not tested yet"
    else:
        answer = (" and ".join(needed) if not spared else f"{needed[0]}, not {spared[0]}" if needed
                  else "neither alone")
    assert answer in STABILITY_ANSWERS, answer
    return dict(question=question, answer=answer, evidence="; ".join(parts) + ".", answers=list(STABILITY_ANSWERS))
