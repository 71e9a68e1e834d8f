"""Paired comparison of two methods on the same evaluated records: A − B per metric and milestone, with a paired
95% interval.

Two methods edited with the same stream and evaluated on the same records give per-record values that are
correlated (an easy record is easy for both), so their separate intervals overlap far more than the interval of
their difference: the comparison is the per-record difference d_i = a_i − b_i, paired by `case_id` within each
group (edit count, family, prompt kind, metric), and its mean with

* `method="bootstrap"` (default): the percentile interval of the mean of d over `n_boot` resamples of the paired
  records (seeded, the same resamples for every group of the same size), and `share_below_0`, the share of
  resampled means below 0 (a bootstrap probability that A is worse, not a p-value);
* `method="t"`: the paired t interval mean(d) ± t_{(1+c)/2, n−1} · s_d / √n and the two-sided p-value of
  H0: mean(d) = 0 (t = mean(d) / (s_d / √n), n − 1 degrees of freedom).

Records evaluated for only one of the two methods in a group are left out of that group's difference and counted
(`n_only_a`, `n_only_b`); a group without a single common record is an error, not a row.

:func:`paired_differences` gives the table, :func:`plot_paired_differences` the figure (difference against edit
count, one panel per metric, with the intervals and the zero line).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

METHODS = ("bootstrap", "t")
RESULT_COLUMNS = ["n", "n_only_a", "n_only_b", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "ci_method",
                  "p_value", "share_below_0"]


def paired_t(d: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(ci_low, ci_high, p_value) of the paired t test on differences `d`: mean ± t·s/√n, two-sided p of mean = 0.

    NaN for n < 2; when every difference is the same (s = 0) the interval is that value and p is 1 if it is 0,
    else 0."""
    x = np.asarray(d, dtype=float)
    n = len(x)
    if n < 2:
        return (math.nan, math.nan, math.nan)
    if (x == x[0]).all():  # s = 0 (x.std() may leave rounding noise)
        m = float(x[0])
        return (m, m, 1.0 if m == 0.0 else 0.0)
    m = float(x.mean())
    s = float(x.std(ddof=1))
    se = s / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(m / se), n - 1))
    return (m - half, m + half, p)


def paired_bootstrap(d: Sequence[float], confidence: float = 0.95, n_boot: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """(ci_low, ci_high, share_below_0): percentile interval of the mean of `d` over `n_boot` resamples of its
    records (with replacement, `numpy.random.default_rng(seed)`), and the share of resampled means below 0."""
    x = np.asarray(d, dtype=float)
    n = len(x)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)  # resamples per block, to bound memory
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    a = (1 - confidence) / 2
    return (float(np.quantile(means, a)), float(np.quantile(means, 1 - a)), float((means < 0).mean()))


def _py(x: Any) -> Any:
    """A numpy scalar as the Python one (for messages and table cells)."""
    return x.item() if isinstance(x, np.generic) else x


def pair(raw: pd.DataFrame, a: str, b: str, *, method_col: str = "method") -> tuple[pd.Series, pd.Series]:
    """The values of methods `a` and `b` in `raw` (one group: one row per case_id and method), indexed by case_id."""
    out = []
    for name in (a, b):
        rows = raw[raw[method_col] == name].dropna(subset=["value"])
        dup = rows["case_id"][rows["case_id"].duplicated()]
        if len(dup):
            raise ValueError(f"method {name!r} has several rows for case_id {_py(dup.iloc[0])!r} in one group: "
                             "add the column that tells them apart to `by`")
        out.append(rows.set_index("case_id")["value"].astype(float))
    return out[0], out[1]


def paired_differences(raw: pd.DataFrame, a: str = "alphaedit", b: str = "memit", *,
                       by: Sequence[str] = ("edits", "family", "prompt_kind", "metric"),
                       method: str = "bootstrap", method_col: str = "method", confidence: float = 0.95,
                       n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A − B on the same records, per group of `by`: one row per group with the columns of `by`, then
    n (paired records), n_only_a / n_only_b (records of one method only, left out), mean_a, mean_b (over the
    paired records), diff (= mean_a − mean_b, the mean paired difference), ci_low, ci_high (paired interval of
    diff), ci_method, p_value (`method="t"`; NaN otherwise) and share_below_0 (`method="bootstrap"`; NaN otherwise).

    `raw` is the evaluator's tidy table (case_id, family, prompt_kind, metric, value, n_prompts) with a method
    column (`method_col`) and the columns of `by`, for both methods; rows with a NaN value count as missing.
    Raises `ValueError` when a column is missing, a method has no rows, or a group has no common record.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if a == b:
        raise ValueError("a and b must be different methods")
    by = list(by)
    missing = [c for c in ["case_id", "value", method_col, *by] if c not in raw.columns]
    if missing:
        raise ValueError(f"raw has no column(s) {missing}")
    for name in (a, b):
        if not (raw[method_col] == name).any():
            raise ValueError(f"no rows for method {name!r} in column {method_col!r}")
    raw = raw[raw[method_col].isin([a, b])]
    rows: list[dict[str, Any]] = []
    for key, group in raw.groupby(by, dropna=False, sort=True):
        key = tuple(map(_py, key if isinstance(key, tuple) else (key,)))
        va, vb = pair(group, a, b, method_col=method_col)
        common = va.index.intersection(vb.index, sort=False)
        if len(common) == 0:
            raise ValueError(f"no record evaluated for both {a!r} and {b!r} in group "
                             f"{dict(zip(by, key))} ({len(va)} of {a!r}, {len(vb)} of {b!r})")
        common = common.sort_values()
        xa, xb = va.loc[common].to_numpy(), vb.loc[common].to_numpy()
        d = xa - xb
        p_value = share = math.nan
        if method == "t":
            lo, hi, p_value = paired_t(d, confidence)
        else:
            lo, hi, share = paired_bootstrap(d, confidence, n_boot, seed)
        rows.append({**dict(zip(by, key)), "n": len(common), "n_only_a": len(va) - len(common),
                     "n_only_b": len(vb) - len(common), "mean_a": float(xa.mean()), "mean_b": float(xb.mean()),
                     "diff": float(d.mean()), "ci_low": lo, "ci_high": hi, "ci_method": method,
                     "p_value": p_value, "share_below_0": share})
    return pd.DataFrame(rows, columns=[*by, *RESULT_COLUMNS])


def plot_paired_differences(table: pd.DataFrame, *, x: str = "edits", panel: Sequence[str] = ("family", "metric"),
                            hue: str | None = "prompt_kind", a: str = "AlphaEdit", b: str = "MEMIT",
                            ncols: int = 3, height: float = 2.6):
    """The figure of a :func:`paired_differences` table: diff and its interval against `x`, one panel per value of
    `panel`, one line per `hue`, with the zero line (no difference). Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    panel = list(panel)
    keys = list(table.groupby(panel, sort=True).groups)
    if not keys:
        raise ValueError("nothing to plot")
    ncols = max(1, min(ncols, len(keys)))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 3.4, nrows * height), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        key = key if isinstance(key, tuple) else (key,)
        sel = table.loc[(table[panel] == pd.Series(key, index=panel)).all(axis=1)]
        groups = sel.groupby(hue, sort=True) if hue else [(None, sel)]
        for label, g in groups:
            g = g.sort_values(x)
            err = np.vstack([g["diff"] - g["ci_low"], g["ci_high"] - g["diff"]])
            ax.errorbar(g[x], g["diff"], yerr=err, marker="o", ms=3, capsize=2, label=label)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_title(" / ".join(map(str, key)), fontsize=9)
        ax.set_xlabel(x)
        ax.set_ylabel(f"{a} − {b}")
        if hue and sel[hue].nunique() > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
