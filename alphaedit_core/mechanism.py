"""Table helpers of the collapse notebook: which streams may be compared, and the mechanism and cost of each stream
read from what the `edit_count` runs wrote. Pure functions over pandas tables and files; no model, no editing.

A *stream* is one `edit_count` run of one method: the plain AlphaEdit and MEMIT streams and the stabilised AlphaEdit
variants (`notebooks/collapse.py`). Streams are comparable record by record when they edit the same records of the
same model in the same batches with the same seed; only their hyperparameters differ. `edit_count`'s run key
(`<model fingerprint>-n<edits>-b<batch>-s<seed>-<hparams digest>-<data digest>`) says exactly that.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from .checkpoint import read_meta
from .runs import run_key_parts

SAME_STREAM = ("model", "n_edits", "batch_size", "seed", "data")  # what two comparable streams share


def stream_mismatch(key: str, reference_key: str) -> str | None:
    """Why the stream of run key `key` cannot be compared record by record with the stream of `reference_key`
    (another model, number of edits, batch size, seed or data); None when only the hyperparameters differ."""
    a, b = run_key_parts(key), run_key_parts(reference_key)
    diff = [f"{k} {a[k]} vs {b[k]}" for k in SAME_STREAM if a[k] != b[k]]
    return "; ".join(diff) or None


def run_key_of(table: pd.DataFrame, what: str) -> str | None:
    """The single run key of a table written by `edit_count` (None for tables written before run keys existed);
    an error when it holds rows of several runs."""
    if "run_key" not in table.columns:
        return None
    keys = sorted(set(table["run_key"].astype(str)))
    if len(keys) != 1:
        raise ValueError(f"{what} holds rows of {len(keys)} runs ({keys}); expected one")
    return keys[0]


def evaluated_cases(raw: pd.DataFrame) -> dict[int, frozenset]:
    """{edits: the case ids evaluated at that milestone} of a metrics table (edits > 0)."""
    raw = raw[raw["edits"] > 0]
    return {int(e): frozenset(g["case_id"]) for e, g in raw.groupby("edits")}


def sample_mismatch(raw: pd.DataFrame, reference: pd.DataFrame) -> str | None:
    """Why two streams' metric tables are not evaluated on the same records at their common milestones (None when
    they are; the check for tables without run keys)."""
    a, b = evaluated_cases(raw), evaluated_cases(reference)
    bad = [f"{e} edits: {len(a[e] - b[e])} of {len(a[e])} case ids not in the reference's sample" for e in sorted(
        set(a) & set(b)) if a[e] != b[e]]
    return "; ".join(bad) or None


def shared_groups(raw: pd.DataFrame, a: str, b: str, by: Sequence[str], col: str = "stream") -> pd.DataFrame:
    """The rows of streams `a` and `b` in the groups of `by` that both have (e.g. fluency is scored at the last
    milestone only: a stream still running has not reached it), for `metrics.paired.paired_differences`."""
    by = list(by)
    both = raw[raw[col].isin([a, b])]
    count = both.groupby(by)[col].nunique()
    keep = count[count == 2].index
    return both.set_index(by).loc[lambda t: t.index.isin(keep)].reset_index()


REPORT_COLUMNS = ("batch", "edits", "target_shift", "anchor_skipped", "seconds_targets", "seconds_keys",
                  "seconds_solve", "target_steps")


def checkpoint_reports(root: str | Path) -> pd.DataFrame:
    """Per batch, what the editor recorded in the checkpoint at `root` (a stream's `run_dir / method`): batch, edits,
    target_shift (mean ‖z − h0‖ of the batch's targets, NaN for checkpoints written before it was recorded),
    anchor_skipped, seconds_targets, seconds_keys, seconds_solve, target_steps. Empty when there is none.

    Read only (`checkpoint.read_meta`: the version readers read, read again when a stream replaces it meanwhile),
    so a stream may be writing it."""
    meta = read_meta(root)
    if meta is None:
        return pd.DataFrame(columns=REPORT_COLUMNS)
    rows = [dict(batch=r["batch"], edits=r["edits_done"], target_shift=r.get("target_shift_mean", math.nan),
                 anchor_skipped=r.get("anchor_skipped", 0), seconds_targets=r["seconds_targets"],
                 seconds_keys=r["seconds_keys"], seconds_solve=r["seconds_solve"], target_steps=r["target_steps_mean"])
            for r in meta.get("reports", [])]
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def stream_reports(checkpoint: str | Path | None, saved: str | Path) -> tuple[pd.DataFrame, bool]:
    """One stream's per-batch reports (`checkpoint_reports`) and whether they come from its checkpoint: from the
    checkpoint when this machine has one holding at least as many batches as the copy `saved` beside the stream's
    tables (the caller then rewrites that copy), else from `saved` (a stream edited on another machine, whose
    checkpoint is not here). Empty when neither exists."""
    fresh = checkpoint_reports(checkpoint) if checkpoint else None
    kept = pd.read_csv(saved) if Path(saved).exists() else None
    if fresh is not None and len(fresh) and (kept is None or len(fresh) >= len(kept)):
        return fresh, True
    if kept is not None:
        return kept, False
    return pd.DataFrame(columns=REPORT_COLUMNS), False


def per_batch(diag: pd.DataFrame, reports: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per stream and batch from a diagnostics table (rows per batch and layer; the columns that do not
    depend on the layer are taken once), with the checkpoint's `reports` (same stream and batch) filling what the
    diagnostics do not carry (target_shift, anchor_skipped, the split of the seconds)."""
    cols = ["stream", "batch", "edits", "seconds", "target_steps", "target_loss", "residual_left", "target_shift",
            "anchor_skipped", "seconds_targets"]
    out = diag.drop_duplicates(["stream", "batch"])[[c for c in cols if c in diag.columns]].reset_index(drop=True)
    if reports is not None and len(reports):
        extra = reports.drop(columns=[c for c in ("edits", "target_steps") if c in reports.columns])
        extra = extra.drop(columns=[c for c in extra.columns if c in out.columns and c not in ("stream", "batch")])
        out = out.merge(extra, on=["stream", "batch"], how="left")
    for c in ("target_shift", "anchor_skipped", "seconds_targets"):
        if c not in out.columns:
            out[c] = math.nan
    return out.sort_values(["stream", "batch"]).reset_index(drop=True)


def at_milestones(diag: pd.DataFrame, batches: pd.DataFrame, milestones: Sequence[int]) -> pd.DataFrame:
    """The mechanism at each milestone, one row per stream, milestone and layer: ‖W − W⁰‖/‖W⁰‖ (relative_change),
    ‖W − W⁰‖ (total_norm), condition number and drift on held-out keys after the milestone's batch; and, per stream
    and milestone, the batch's ‖z − h0‖ (target_shift) and the means over the batches so far of ‖z − h0‖, Adam steps
    per request and seconds per batch."""
    layer_cols = ["stream", "edits", "layer", "relative_change", "total_norm", "condition", "drift"]
    at = diag[diag["edits"].isin(milestones)][[c for c in layer_cols if c in diag.columns]]
    rows = []
    for (stream, m), _ in at.groupby(["stream", "edits"]):
        b = batches[(batches["stream"] == stream) & (batches["edits"] <= m)]
        last = b[b["edits"] == m]
        rows.append(dict(stream=stream, edits=m,
                         target_shift=float(last["target_shift"].iloc[0]) if len(last) else math.nan,
                         target_shift_mean=float(b["target_shift"].mean()), target_steps_mean=float(
                             b["target_steps"].mean()), seconds_per_batch=float(b["seconds"].mean())))
    return at.merge(pd.DataFrame(rows), on=["stream", "edits"], how="left").sort_values(
        ["stream", "edits", "layer"]).reset_index(drop=True)


def cost_table(batches: pd.DataFrame, reference: str = "alphaedit") -> pd.DataFrame:
    """Per stream: batches and edits done, mean seconds per batch and per edit, mean Adam steps per request, mean
    seconds of the target optimisation per batch (where the checkpoint recorded them), total hours; and against
    `reference`: the relative change of the steps and of the seconds per batch (negative: saved). Seconds are
    comparable only between streams run on the same machine under the same load; steps always are."""
    rows = []
    for stream, b in batches.groupby("stream", sort=False):
        edits = int(b["edits"].max())
        rows.append(dict(stream=stream, batches=len(b), edits=edits, seconds_per_batch=float(b["seconds"].mean()),
                         seconds_per_edit=float(b["seconds"].sum() / edits) if edits else math.nan,
                         adam_steps=float(b["target_steps"].mean()),
                         seconds_targets_per_batch=float(b["seconds_targets"].mean()),
                         hours=float(b["seconds"].sum() / 3600)))
    out = pd.DataFrame(rows)
    if reference in set(out["stream"]):
        ref = out[out["stream"] == reference].iloc[0]
        out["steps_vs_reference"] = out["adam_steps"] / ref["adam_steps"] - 1
        out["seconds_vs_reference"] = out["seconds_per_batch"] / ref["seconds_per_batch"] - 1
    return out
