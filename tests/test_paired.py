"""Paired differences A − B on the same records: hand-computed paired t, seeded bootstrap, pairing by case_id."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from alphaedit_core.metrics import paired_bootstrap, paired_differences, paired_t, plot_paired_differences

A = [1.0, 0.5, 0.8, 0.2]
B = [0.5, 0.5, 0.2, 0.4]  # d = [0.5, 0, 0.6, -0.2]


def raw(values_a, values_b, ids_a=None, ids_b=None, **extra):
    """The evaluator's tidy table for two methods (one group unless `extra` says otherwise)."""
    ids_a = list(range(len(values_a))) if ids_a is None else ids_a
    ids_b = list(range(len(values_b))) if ids_b is None else ids_b
    rows = [{"case_id": c, "value": v, "method": "alphaedit"} for c, v in zip(ids_a, values_a)]
    rows += [{"case_id": c, "value": v, "method": "memit"} for c, v in zip(ids_b, values_b)]
    df = pd.DataFrame(rows).assign(family="official", prompt_kind="neighborhood", metric="specificity", n_prompts=10,
                                   edits=100)
    return df.assign(**extra)


def test_paired_t_by_hand():
    d = [0.5, 0.0, 0.6, -0.2]
    mean = 0.9 / 4
    s = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)  # = sqrt(0.4475 / 3)
    se = s / 2
    t975 = 3.182446305284263  # t_{0.975, 3}
    t = mean / se
    theta = math.atan(t / math.sqrt(3))  # Student t with 3 degrees of freedom: closed-form CDF
    p = 1 - 2 / math.pi * (theta + math.sin(theta) * math.cos(theta))
    lo, hi, p_value = paired_t(d)
    assert (lo, hi) == pytest.approx((mean - t975 * se, mean + t975 * se))
    assert (lo, hi) == pytest.approx((-0.38957, 0.83957), abs=1e-4)
    assert p_value == pytest.approx(p) and 0.3 < p_value < 0.35
    table = paired_differences(raw(A, B), method="t")
    assert len(table) == 1
    row = table.iloc[0]
    assert (row.n, row.n_only_a, row.n_only_b) == (4, 0, 0)
    assert row.mean_a == pytest.approx(0.625) and row.mean_b == pytest.approx(0.4)
    assert row["diff"] == pytest.approx(mean) and (row.ci_low, row.ci_high) == pytest.approx((lo, hi))
    assert row.p_value == pytest.approx(p) and math.isnan(row.share_below_0) and row.ci_method == "t"
    assert list(table.columns[:4]) == ["edits", "family", "prompt_kind", "metric"]


def test_paired_t_edge_cases():
    assert all(math.isnan(x) for x in paired_t([0.3]))
    assert paired_t([0.2, 0.2, 0.2]) == (0.2, 0.2, 0.0)
    assert paired_t([0.0, 0.0]) == (0.0, 0.0, 1.0)


def test_pairing_beats_separate_intervals():
    """Correlated records: the difference is clear though each method's own values spread widely."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 60)
    table = paired_differences(raw(base + 0.05, base), method="t")
    assert table.iloc[0].ci_low == pytest.approx(0.05) and table.iloc[0].p_value < 1e-6
    assert table.iloc[0].ci_low > 0.0


def test_bootstrap_is_seeded_contains_the_mean_and_shrinks_with_n():
    d = np.array(A) - np.array(B)
    lo, hi, share = paired_bootstrap(d, n_boot=4000, seed=3)
    assert (lo, hi, share) == paired_bootstrap(d, n_boot=4000, seed=3)
    x = np.random.default_rng(0).normal(size=30)
    assert paired_bootstrap(x, seed=3) != paired_bootstrap(x, seed=4)  # the seed matters
    assert lo < d.mean() < hi and -0.2 <= lo and hi <= 0.6  # resampled means lie within the data
    assert 0.0 < share < 0.5
    widths = [np.subtract(*paired_bootstrap(np.tile(d, k), n_boot=4000, seed=0)[1::-1]) for k in (1, 4, 16)]
    assert widths[0] > widths[1] > widths[2]
    assert widths[1] / widths[2] == pytest.approx(2.0, rel=0.15)  # 1/sqrt(n)
    assert paired_bootstrap([0.1, 0.3, 0.2])[2] == 0.0  # every difference positive
    table = paired_differences(raw(A, B), n_boot=4000, seed=3)
    row = table.iloc[0]
    assert (row.ci_low, row.ci_high, row.share_below_0) == pytest.approx((lo, hi, share))
    assert row.ci_method == "bootstrap" and math.isnan(row.p_value)


def test_unpaired_records_are_dropped_and_counted():
    table = paired_differences(raw([1.0, 0.5, 0.8, 0.2, 0.9], [0.7, 0.5, 0.2, 0.4, 0.1],
                                   ids_a=[0, 1, 2, 3, 4], ids_b=[1, 2, 3, 4, 5]), method="t")
    row = table.iloc[0]
    assert (row.n, row.n_only_a, row.n_only_b) == (4, 1, 1)  # case 0 (AlphaEdit only) and 5 (MEMIT only)
    assert row.mean_a == pytest.approx(np.mean([0.5, 0.8, 0.2, 0.9]))
    assert row.mean_b == pytest.approx(np.mean([0.7, 0.5, 0.2, 0.4]))
    assert row["diff"] == pytest.approx(np.mean([-0.2, 0.3, 0.0, 0.5]))
    nan = paired_differences(raw([1.0, np.nan, 0.5], [0.0, 0.0, 0.5]), method="t").iloc[0]
    assert (nan.n, nan.n_only_a, nan.n_only_b) == (2, 0, 1)  # a NaN value is a missing record


def test_one_row_per_group_and_errors():
    both = pd.concat([raw(A, B), raw(B, A, edits=200), raw(A, A, metric="efficacy", prompt_kind="rewrite")])
    table = paired_differences(both, method="t")
    assert len(table) == 3
    assert list(table.edits) == [100, 100, 200] and list(table.metric) == ["specificity", "efficacy", "specificity"]
    assert list(table["diff"]) == pytest.approx([0.225, 0.0, -0.225])
    with pytest.raises(ValueError, match=r"no record evaluated for both.*'edits': 100"):
        paired_differences(raw(A, B, ids_a=[0, 1, 2, 3], ids_b=[4, 5, 6, 7]))
    with pytest.raises(ValueError, match="several rows for case_id 0"):
        paired_differences(pd.concat([raw(A, B), raw(A, B, timing="after_batch")]))  # timing not in `by`
    assert len(paired_differences(pd.concat([raw(A, B, timing="x"), raw(A, B, timing="y")]),
                                  by=("edits", "timing", "metric"))) == 2
    with pytest.raises(ValueError, match="no rows for method 'rome'"):
        paired_differences(raw(A, B), b="rome")
    with pytest.raises(ValueError, match="no column"):
        paired_differences(raw(A, B).drop(columns="edits"))
    with pytest.raises(ValueError, match="method"):
        paired_differences(raw(A, B), method="wilcoxon")


def test_figure():
    import matplotlib

    matplotlib.use("Agg")
    both = pd.concat([raw(A, B), raw(B, A, edits=200), raw(A, B, metric="efficacy", prompt_kind="rewrite")])
    fig = plot_paired_differences(paired_differences(both, method="t"))
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
    import matplotlib.pyplot as plt

    plt.close(fig)
