"""Aggregation of the evaluator's per-record rows into means with 95% confidence intervals.

The unit of resampling is the record (prompts of one record are not independent):
* `wilson`: when every per-record value is 0 or 1 (e.g. CounterFact efficacy: one rewrite prompt per record),
  the Wilson score interval for k successes out of n records;
* `t`: otherwise (means of several prompts, token accuracies, magnitudes, fluency), the Student-t interval
  mean ± t_{0.975, n−1} · s / √n over the per-record values (NaN bounds when n < 2);
* `bootstrap` (on request): percentile interval of the mean over `n_boot` resamples of records (seeded).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

ROW_KEYS = ("case_id", "value", "n_prompts")


def wilson_interval(k: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval: (p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)."""
    if n <= 0:
        return (math.nan, math.nan)
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """mean ± t_{(1+c)/2, n−1} · s/√n (s: sample standard deviation); NaN bounds when n < 2."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        return (math.nan, math.nan)
    m = float(x.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return (m - half, m + half)


def bootstrap_interval(values: Sequence[float], confidence: float = 0.95, n_boot: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap of the mean over records."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    a = (1 - confidence) / 2
    return (float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


def summarize(df: pd.DataFrame, *, by: Sequence[str] | None = None, method: str = "auto",
              confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean over records, n (records) and a confidence interval per group.

    `by` defaults to every column except case_id, value and n_prompts — i.e. family, prompt_kind, metric and
    any extra columns (timing, method, ...). `method="auto"` uses Wilson when all values of the group are 0/1
    and the t interval otherwise; "t", "wilson" (values must be 0/1) or "bootstrap" force one.
    """
    if df.empty:
        raise ValueError("nothing to summarize")
    if method not in ("auto", "t", "wilson", "bootstrap"):
        raise ValueError("method must be auto, t, wilson or bootstrap")
    keys = list(by) if by is not None else [c for c in df.columns if c not in ROW_KEYS]
    rows = []
    for key, g in df.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        v = g["value"].dropna().to_numpy(dtype=float)
        n = len(v)
        binary = n > 0 and bool(np.isin(v, (0.0, 1.0)).all())
        m = method if method != "auto" else ("wilson" if binary else "t")
        if m == "wilson":
            if not binary:
                raise ValueError(f"wilson interval asked for non-binary values in group {key}")
            lo, hi = wilson_interval(float(v.sum()), n, confidence)
        elif m == "bootstrap":
            lo, hi = bootstrap_interval(v, confidence, n_boot, seed)
        else:
            lo, hi = t_interval(v, confidence)
        rows.append({**dict(zip(keys, key)), "mean": float(v.mean()) if n else math.nan, "n": n,
                     "ci_low": lo, "ci_high": hi, "ci_method": m})
    return pd.DataFrame(rows)
