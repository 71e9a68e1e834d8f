"""Decision rules that turn the `edit_count` stream's numbers into verdicts on CLAIMS.md's C7 and C11.

Pure functions over plain numbers: the notebook measures, this module decides, and the tests pin the rules.
Efficacies are fractions in [0, 1], keyed by method, then by the number of edits at a milestone (0 excluded).

- C7 (number of edits): stable at the first milestone (efficacy ≥ `STABLE`), a marked drop beyond `LONG` edits
  (more than `DROP` below the first milestone, for some method) and a collapse by the last milestone (below
  `COLLAPSE` × the first milestone, for some method) → reproduced; stable with only one of the two → partly
  reproduced; otherwise not reproduced.
- C11 (start small): AlphaEdit stable at the first milestone and more than `DROP` away from it at the last →
  reproduced (the small run is a needed sanity check and does not predict the long run); otherwise partly
  reproduced.
- Both are "not testable here" until the stream has reached max(`LONG`, planned edits).
"""
from __future__ import annotations

STABLE = 0.9
DROP = 0.10
COLLAPSE = 0.5
LONG = 1000


def edit_count_claims(
    efficacy: dict[str, dict[int, float]],
    rewrite_acc: dict[str, dict[int, float]],
    n_planned: int,
    checkpointed: dict[str, int] | None = None,
    reference: str = "alphaedit",
) -> dict[str, dict[str, str]]:
    """{"C7": {"verdict", "evidence"}, "C11": {...}} from the official efficacy and EasyEdit rewrite_acc at each
    evaluated milestone. `checkpointed` (edits in each method's checkpoint) is quoted while the stream runs."""
    reached_by = {m: sorted(k for k in e if k > 0) for m, e in efficacy.items()}
    reached = sorted(set().union(*reached_by.values()))
    if not reached:
        raise ValueError("no milestone evaluated yet: run the stream longer")
    if reference not in efficacy or not reached_by[reference]:
        raise ValueError(f"no milestone of {reference!r} evaluated yet")
    first, last = reached[0], reached[-1]
    lines, dropped, collapsed = [], {}, {}
    for method, done in reached_by.items():
        if not done:
            lines.append(f"{method}: no edit batch evaluated yet")
            continue
        e, r = efficacy[method], rewrite_acc.get(method, {})
        late = [m for m in done if m >= LONG] or [done[-1]]
        dropped[method] = min(e[m] for m in late) < e[done[0]] - DROP
        collapsed[method] = e[done[-1]] < COLLAPSE * e[done[0]]
        lines.append(f"{method}: efficacy {e[done[0]]:.1%} at {done[0]} edits, {e[done[-1]]:.1%} at {done[-1]}"
                     + (f" (EasyEdit rewrite_acc {r[done[0]]:.1%} / {r[done[-1]]:.1%})"
                        if done[0] in r and done[-1] in r else ""))
    ref = efficacy[reference]
    a_first, a_last = ref[reached_by[reference][0]], ref[reached_by[reference][-1]]
    stable = a_first >= STABLE
    testable = last >= max(LONG, n_planned)
    note = ""
    if testable:
        c7 = ("reproduced" if stable and any(dropped.values()) and any(collapsed.values())
              else "partly reproduced" if stable and (any(dropped.values()) or any(collapsed.values()))
              else "not reproduced")
        c11 = "reproduced" if stable and abs(a_first - a_last) > DROP else "partly reproduced"
    else:
        c7 = c11 = "not testable here"
        ahead = ", ".join(f"{m} {k}" for m, k in (checkpointed or {}).items())
        note = (f" Milestones are evaluated up to {last} of {n_planned} edits"
                + (f"; the checkpoints are at {ahead} edits (the stream resumes from them)." if ahead else "."))
    c7_evidence = "; ".join(lines) + "."
    if testable:
        c7_evidence = ("; ".join(lines) + f". Drop of more than {DROP * 100:.0f} points beyond {LONG} edits: {dropped}; "
                       f"collapse (below {COLLAPSE:.0%} of the {first}-edit efficacy) at {last}: {collapsed}.")
    c11_evidence = f"{reference} efficacy at {reached_by[reference][0]} edits is {a_first:.1%}"
    if reached_by[reference][-1] > reached_by[reference][0]:
        c11_evidence += f" and at {reached_by[reference][-1]} edits {a_last:.1%}" + (
            ": the small run is a needed sanity check but does not predict the long run."
            if abs(a_first - a_last) > DROP else f": within {DROP * 100:.0f} points.")
    else:
        c11_evidence += "."
    return {"C7": dict(verdict=c7, evidence=c7_evidence + note),
            "C11": dict(verdict=c11, evidence=c11_evidence + note)}
