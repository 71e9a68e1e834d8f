"""Decision rules that turn the `edit_count` stream's numbers into verdicts on CLAIMS.md's C7 and C11.

Pure functions over plain numbers: the notebook measures, this module decides, and the tests pin the rules.
Scores are fractions in [0, 1], keyed by method, then by the number of edits at a milestone (0 excluded). Two
metric families are judged: the official code's efficacy (new object more probable than the old) and EasyEdit's
rewrite_acc (teacher-forced token accuracy, the "accuracy" the claim speaks of).

- C7 (number of edits): the reference method stable at the first milestone (≥ `STABLE` in every family), a marked
  drop beyond `LONG` edits (more than `DROP` below the first milestone, for some method in some family) and a
  collapse by the last milestone (below `COLLAPSE` × the first milestone, for some method in some family) →
  reproduced; stable with only one of the two → partly reproduced; otherwise not reproduced.
- C11 (start small): the reference method stable at the first milestone and more than `DROP` away from it at the
  last in some family → reproduced (the small run is a needed sanity check and does not predict the long run);
  otherwise partly reproduced.
- Both are "not testable here" until the stream has reached max(`LONG`, planned edits).
"""
from __future__ import annotations

STABLE = 0.9
DROP = 0.10
COLLAPSE = 0.5
LONG = 1000

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
        c11 = "reproduced" if stable and moved else "partly reproduced"
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
        c11_evidence += (": the small run is a needed sanity check but does not predict the long run."
                         if moved else f": within {DROP * 100:.0f} points.")
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
