"""How large the value vectors a stream would solve are, as its edits accumulate: the premise of Norm-Anchor Scaling.

Norm-Anchor Scaling (NAS) rescales each solved value vector v* = v0 + (z − h0) to a reference norm of the unedited
model, on the premise that in a long stream v* and the edited weights amplify each other (v* grows, so the updates
grow, so v* grows). Whether that premise holds on a stream is measured here without editing anything: a fixed set of
*probe* requests, never edited in the stream and naming none of its subjects, has its targets optimised (the stream's
own hyperparameters and templates) on the unedited model and on the stream's milestone snapshots. If ‖v*‖ of the same
probes grows with the edits, the loop NAS breaks is there; if it stays flat, NAS has nothing to rescale.

v* = v0 + (z − h0) is the MLP output that gives the target z with the rest of the residual unchanged (v0: the last
edited layer's MLP output at the subject's last token, `targets.mlp_outputs`). On a model that normalises the MLP
output before the residual (Gemma2/3, `postnorm.py`) that sum mixes two spaces: refused, as the editor refuses NAS.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
from tqdm.auto import tqdm

from .data.counterfact import edited_subjects
from .requests import EditRequest
from .targets import compute_targets, mlp_outputs

COLUMNS = ["edits", "case_id", "v0_norm", "shift_norm", "value_norm", "target_steps", "target_loss"]


def probe_records(candidates: Sequence[Mapping[str, Any]], edited: Sequence[Mapping[str, Any]], n: int
                  ) -> list[Mapping[str, Any]]:
    """The first `n` of `candidates` that are not among `edited` (by case id) and whose subject no edited record
    names: requests the stream never edits, whose prompts no edit targeted. A ValueError when fewer are left."""
    done_ids = {r["case_id"] for r in edited}
    subjects = {s.lower() for s in edited_subjects(list(edited))}
    fresh = [r for r in candidates if r["case_id"] not in done_ids
             and not {s.lower() for s in edited_subjects([r])} & subjects]
    if len(fresh) < n:
        raise ValueError(f"only {len(fresh)} candidate records are neither edited nor about an edited subject; "
                         f"{n} asked")
    return list(fresh[:n])


def value_norms(editor, probes: Sequence[EditRequest], snapshots: Mapping[int, str | Path | None],
                progress: bool = True) -> pd.DataFrame:
    """‖v0‖, ‖z − h0‖ and ‖v*‖ = ‖v0 + z − h0‖ of every probe request at the last edited layer, on the model in the
    state of each snapshot ({edits: path}; edits 0 and path None: the unedited model), with the Adam steps and last
    loss of its target. One row per (edits, probe). `editor` is an `Editor` of the stream's model, method and
    hyperparameters (its snapshots must belong to it); it is left restored to the unedited model."""
    if editor.post_norms:
        raise ValueError(f"layers {sorted(editor.post_norms)} normalise the MLP output before the residual: "
                         f"v0 + (z − h0) is not a value vector there (see postnorm.py)")
    probes = list(probes)
    hp, L = editor.hp, editor.hp.layers[-1]
    rows: list[dict[str, Any]] = []
    try:
        for edits, path in tqdm(sorted(snapshots.items()), desc="value norms", disable=not progress):
            if path is None:
                if edits != 0:
                    raise ValueError(f"milestone {edits}: only the unedited model (edits 0) needs no snapshot")
                editor.restore()
            else:
                editor.load_snapshot(path)
            tr = compute_targets(editor.model, editor.tok, editor.adapter, probes, editor.templates, hp)
            v0 = mlp_outputs(editor.model, editor.tok, editor.adapter, probes, editor.templates[0], L)
            shift = (tr.z - tr.h0).to(v0.device)
            for i, request in enumerate(probes):
                rows.append(dict(edits=edits, case_id=request.case_id, v0_norm=float(v0[i].norm()),
                                 shift_norm=float(shift[i].norm()), value_norm=float((v0[i] + shift[i]).norm()),
                                 target_steps=int(tr.steps[i]), target_loss=float(tr.loss[i])))
    finally:
        editor.restore()
    return pd.DataFrame(rows, columns=COLUMNS)


def value_norm_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per milestone: the probes' mean ‖v0‖, ‖z − h0‖ and ‖v*‖, and the mean ratio of each probe's ‖v*‖ to its own
    ‖v*‖ on the unedited model (1: no growth), with the number of probes."""
    base = rows[rows.edits == 0].set_index("case_id").value_norm
    ratio = rows.value_norm / rows.case_id.map(base)
    return (rows.assign(value_ratio=ratio).groupby("edits")
            .agg(probes=("case_id", "nunique"), v0_norm=("v0_norm", "mean"), shift_norm=("shift_norm", "mean"),
                 value_norm=("value_norm", "mean"), value_ratio=("value_ratio", "mean"),
                 target_steps=("target_steps", "mean"))
            .reset_index())
