"""What the one-batch benchmarks (`postnorm_check.py`, `target_lr_check.py`, `memit_lambda_check.py`) share: the
three scores of a batch, the targets the editor computes for it (kept, or reused) and the report's header and file."""
from __future__ import annotations

import contextlib
from pathlib import Path
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


@contextlib.contextmanager
def reusing_targets(kept) -> Iterator[None]:
    """Within the block, the editor's `compute_targets` returns `kept` (a `TargetResult` from an earlier batch of
    the same requests, e.g. from `keeping_targets`) instead of optimising the targets again: settings that differ
    only after the targets (MEMIT's λ, the projector) are then compared on the very same z."""
    from alphaedit_core import editor as editor_module

    original = editor_module.compute_targets
    editor_module.compute_targets = lambda *args, **kwargs: kept
    try:
        yield
    finally:
        editor_module.compute_targets = original


def machine_line(extra: str = "") -> str:
    """When and where a benchmark ran: UTC time, machine name, torch version, threads and load, then `extra`."""
    import datetime
    import os
    import platform

    import torch

    line = (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.node() or 'machine'}; "
            f"torch {torch.__version__}; threads {torch.get_num_threads()}; load {os.getloadavg()[0]:.1f}")
    return f"{line}; {extra}" if extra else line


def write_report(lines: list[str], out: str | None, model: str) -> Path | None:
    """Print the markdown report and, with `out`, write it there (`{model}` in `out` is replaced).

    Returns the path written, or None without `out`."""
    text = "\n".join(lines) + "\n"
    print(text)
    if not out:
        return None
    path = Path(out.replace("{model}", model))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
