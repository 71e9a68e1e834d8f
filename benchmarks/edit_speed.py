"""Seconds per request of one edit batch on real offline models, split into target optimisation / keys / solve, the
projected hours for a 2,000-edit stream, peak memory, and (optionally) the same batch's targets through another
version of targets.py or the per-request implementation, alternated with the installed one in the same process.

    python benchmarks/edit_speed.py --models smollm2-135m-instruct qwen2.5-coder-0.5b-instruct --batch 100 \
        --out benchmarks/results/edit_speed-{model}-after.md
    python benchmarks/edit_speed.py --models smollm2-135m-instruct --batch 25 --before old_targets.py
    python benchmarks/edit_speed.py --models smollm2-135m-instruct --batch 100 \
        --variant '{"target_stop": "most_probable"}' --out benchmarks/results/mpes_speed-{model}.md

Each model runs in its own process (so that peak memory is the model's). The projectors come from the statistics
measured here (`--stats-tokens` tokens) unless the cache holds the preset's: the solve's time depends on the
shapes, not on the values. `--before PATH` times the batch's targets with PATH's `compute_targets` and the installed
one, alternately (`--rounds` times each), and prints the ratio; `--variant JSON` does the same for the batch's
targets under the preset with those hyperparameters changed (e.g. MPES, the most-probable stopping rule), with the
Adam steps per request of each; `--compare-requests N` runs those comparisons on the batch's first N
requests only (a chunk of `targets_chunk` requests costs per request what the batch does, since the batch is optimised
chunk by chunk; it makes the comparison affordable on larger models); `--reference N` times the per-request version
on N requests. Prints markdown tables (with date, load average, threads, torch version); `--out` writes them, `{model}`
in the path is replaced by the model's name.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


def load_impl(path: str):
    name = "alphaedit_core._bench_targets_" + Path(path).stem.replace("-", "_").replace(".", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def alternate(first, second, rounds: int, n: int, first_name: str, second_name: str):
    """Time first() and second() alternately, `rounds` times each (so that load changes hit both alike). Returns the
    report rows (seconds per request of each, best round first, and the per-round speed-up first / second) and the
    last result of each."""
    times: tuple[list[float], list[float]] = ([], [])
    results = [None, None]
    for _ in range(rounds):
        for i, call in enumerate((first, second)):
            t0 = time.perf_counter()
            results[i] = call()
            times[i].append(time.perf_counter() - t0)
    ratios = sorted(a / b for a, b in zip(*times))
    rows = [(f"{name} (s per request; rounds)", min(t) / n, ", ".join(f"{x / n:.3f}" for x in t))
            for name, t in zip((first_name, second_name), times)]
    rows.append(("speed-up of the targets, per round (x)", ratios[len(ratios) // 2],
                 ", ".join(f"{r:.3f}" for r in ratios)))
    return rows, results[0], results[1]


def run_model(args, name: str) -> str:
    from alphaedit_core.arch import ModelAdapter
    from alphaedit_core.corpus import get_corpus
    from alphaedit_core.data import load_offline_counterfact, to_requests
    from alphaedit_core.editor import Editor
    from alphaedit_core.hparams import EditHParams
    from alphaedit_core.models import load_model
    from alphaedit_core.projection import projector_from_cov
    from alphaedit_core.stats import compute_second_moments
    from alphaedit_core.targets import compute_targets, compute_targets_reference

    torch.manual_seed(args.seed)
    model, tok = load_model(name)
    hp = EditHParams.load(args.preset or name)
    adapter = ModelAdapter.from_model(model)
    load_start = os.getloadavg()
    rows = []

    corpus = get_corpus(hp.mom2_corpus)
    t0 = time.perf_counter()
    covs, counted = compute_second_moments(model, tok, adapter, hp.layers, corpus, n_tokens=args.stats_tokens,
                                           seq_len=hp.mom2_seq_len, progress=False)
    stats_s = time.perf_counter() - t0
    rows.append((f"statistics throughput (tokens/s, layers {hp.layers})", counted / stats_s))
    projectors = {l: projector_from_cov(c, threshold=hp.nullspace_threshold, mode=hp.nullspace_mode,
                                        energy=hp.nullspace_energy, allow_degenerate=True) for l, c in covs.items()}
    editor = Editor(model, tok, hp, method="alphaedit", projectors=projectors, covs=covs, progress=False)
    requests = to_requests(load_offline_counterfact(n=args.batch, seed=args.seed))
    n = len(requests)

    extra = []
    compared = requests[:args.compare_requests] if args.compare_requests > 0 else requests
    if len(compared) < n:
        extra.append(("requests in the comparisons below (the batch's first)", len(compared), f"of {n}"))
    if args.before:  # targets only, alternated: before, installed, before, installed, ...
        old = load_impl(args.before)
        rows_t, r_old, r_new = alternate(
            lambda: old.compute_targets(model, tok, adapter, compared, editor.templates, hp),
            lambda: compute_targets(model, tok, adapter, compared, editor.templates, hp),
            args.rounds, len(compared), f"targets, {args.before}", "targets, installed targets.py")
        extra += rows_t + [
            ("max abs z difference, before vs installed", float((r_old.z - r_new.z).abs().max()), ""),
            ("requests with the same number of steps, before vs installed", int((r_old.steps == r_new.steps).sum()), f"of {len(compared)}"),
        ]
    if args.variant:  # targets only, alternated: the preset, the variant, the preset, the variant, ...
        changed = json.loads(args.variant)
        hp_variant = hp.replace(**changed)
        rows_t, r_base, r_var = alternate(
            lambda: compute_targets(model, tok, adapter, compared, editor.templates, hp),
            lambda: compute_targets(model, tok, adapter, compared, editor.templates, hp_variant),
            args.rounds, len(compared), "targets, preset", f"targets, variant {json.dumps(changed)}")
        extra += rows_t + [
            ("mean Adam steps per request, preset", float(r_base.steps.float().mean()), ""),
            ("mean Adam steps per request, variant", float(r_var.steps.float().mean()), ""),
            ("requests that stop earlier with the variant", int((r_var.steps < r_base.steps).sum()), f"of {len(compared)}"),
        ]
    if args.reference:
        m = min(args.reference, n)
        t0 = time.perf_counter()
        ref = compute_targets_reference(model, tok, adapter, requests[:m], editor.templates, hp)
        ref_s = time.perf_counter() - t0
        fast = compute_targets(model, tok, adapter, requests[:m], editor.templates, hp)
        extra += [(f"per-request reference targets, {m} requests (s per request)", ref_s / m, ""),
                  ("max abs z difference, installed vs per-request reference", float((fast.z - ref.z).abs().max()), ""),
                  ("requests with the same number of steps as the reference", int((fast.steps == ref.steps).sum()), f"of {m}")]

    report = editor.edit_batch(requests)  # the full batch, installed targets
    total = report.seconds_targets + report.seconds_keys + report.seconds_solve
    rows += [
        (f"targets (s per request, batch {n})", report.seconds_targets / n),
        (f"keys (s per request, batch {n})", report.seconds_keys / n),
        (f"solve (s per request, batch {n})", report.seconds_solve / n),
        ("total (s per request)", total / n),
        ("mean Adam steps per request", report.target_steps_mean),
        (f"projected 2,000 edits, batches of {n} (hours)", total * 2000 / n / 3600),
        ("peak resident memory (GiB)", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20),
    ]
    load_end = os.getloadavg()
    lines = [f"# edit speed: {name}, batch {n}", "",
             f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"targets_chunk {hp.targets_chunk}; load average (1/5/15 min) at the start "
             f"{'/'.join(f'{x:.1f}' for x in load_start)}, at the end {'/'.join(f'{x:.1f}' for x in load_end)}",
             "", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in rows]
    if extra:
        lines += ["", "| comparison | value | detail |", "|---|---|---|"]
        lines += [f"| {k} | {v:.4g} | {d} |" for k, v, d in extra]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct"])
    ap.add_argument("--preset", default=None, help="hparams preset (default: each model's)")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--before", default=None, help="another targets.py to time against the installed one")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds with --before or --variant")
    ap.add_argument("--variant", default=None, metavar="JSON",
                    help='hyperparameters to change for a second timing of the targets, e.g. \'{"target_stop": '
                         '"most_probable"}\'')
    ap.add_argument("--compare-requests", type=int, default=0, metavar="N",
                    help="time --before / --variant on the batch's first N requests only (0: all); with N = "
                         "targets_chunk that is one chunk, the unit the batch is optimised in")
    ap.add_argument("--reference", type=int, default=0, help="requests timed through the per-request version")
    ap.add_argument("--stats-tokens", type=int, default=10_000, help="tokens for the statistics (and projectors)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="markdown output; {model} is replaced by the model name")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if len(args.models) > 1:  # one process per model: peak memory is the model's own
        for name in args.models:
            cmd = [sys.executable, __file__, "--models", name] + [
                x for i, x in enumerate(sys.argv[1:]) if not _is_models_arg(sys.argv[1:], i)]
            subprocess.run(cmd, check=True)
        return
    text = run_model(args, args.models[0])
    print(text)
    if args.out:
        Path(args.out.replace("{model}", args.models[0])).write_text(text)


def _is_models_arg(argv: list[str], i: int) -> bool:
    """Whether argv[i] belongs to the --models option."""
    j = i
    while j >= 0 and not argv[j].startswith("--"):
        j -= 1
    return j >= 0 and argv[j] == "--models"


if __name__ == "__main__":
    main()
