"""What the one-batch benchmarks (`postnorm_check.py`, `target_lr_check.py`) share: the three scores of a batch and
the targets the editor computes for it."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

# (family, prompt kind, metric) of `alphaedit_core.metrics.evaluate`'s rows -> the name in the benchmarks' tables
SCORES = {("official", "rewrite", "efficacy"): "efficacy", ("official", "neighborhood", "specificity"): "specificity",
          ("easyedit", "rewrite", "rewrite_acc"): "rewrite_acc"}


def batch_scores(model, tok, records: list[dict[str, Any]]) -> dict[str, float]:
    """Means over `records` of official efficacy and specificity and EasyEdit rewrite_acc, as the model is now."""
    from alphaedit_core.metrics import evaluate

    df = evaluate(model, tok, records, families=("official", "easyedit"), progress=False)
    return {name: float(df[(df.family == f) & (df.prompt_kind == k) & (df.metric == m)].value.mean())
            for (f, k, m), name in SCORES.items()}


@contextlib.contextmanager
def keeping_targets() -> Iterator[list]:
    """Within the block, every `TargetResult` the editor computes (z, h0, steps, loss) is appended to the list it
    yields; the editor's own `compute_targets` is put back afterwards."""
    from alphaedit_core import editor as editor_module

    original, kept = editor_module.compute_targets, []

    def keep(*args, **kwargs):
        kept.append(original(*args, **kwargs))
        return kept[-1]

    editor_module.compute_targets = keep
    try:
        yield kept
    finally:
        editor_module.compute_targets = original
