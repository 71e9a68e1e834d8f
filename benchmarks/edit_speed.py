"""Seconds per edit batch on a real model, split into target optimisation / keys / solve; statistics throughput;
peak memory; and the same batch's targets through the straightforward per-request implementation, with the ratio.

    python benchmarks/edit_speed.py --model smollm2-135m-instruct --batch 100 --reference 100

`--reference N` times the per-request implementation on the first N requests of the batch (N < batch gives an
extrapolated per-batch time, marked as such). Prints a markdown table; `--json PATH` also writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import torch

from alphaedit_core.arch import ModelAdapter
from alphaedit_core.corpus import get_corpus
from alphaedit_core.data import load_offline_counterfact, to_requests
from alphaedit_core.editor import Editor
from alphaedit_core.hparams import EditHParams
from alphaedit_core.models import load_model
from alphaedit_core.stats import compute_second_moments
from alphaedit_core.targets import compute_targets, compute_targets_reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--preset", default=None, help="hparams preset (default: the model's)")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--reference", type=int, default=100, help="requests timed through the per-request version")
    ap.add_argument("--stats-tokens", type=int, default=20_000, help="tokens for the statistics throughput")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    model, tok = load_model(args.model)
    hp = EditHParams.load(args.preset or args.model)
    adapter = ModelAdapter.from_model(model)
    rows = []

    # statistics throughput (fresh computation, not the cache)
    corpus = get_corpus(hp.mom2_corpus)
    t0 = time.perf_counter()
    _, counted = compute_second_moments(model, tok, adapter, hp.layers, corpus, n_tokens=args.stats_tokens,
                                        seq_len=hp.mom2_seq_len, progress=False)
    stats_s = time.perf_counter() - t0
    rows.append(("statistics throughput (tokens/s, layers %s)" % hp.layers, counted / stats_s))

    editor = Editor.prepare(model, tok, hp, method="alphaedit", progress=False)
    requests = to_requests(load_offline_counterfact(n=args.batch, seed=args.seed))

    # the per-request reference on the same requests' targets (the model is not edited yet)
    n_ref = min(args.reference, args.batch)
    t0 = time.perf_counter()
    ref = compute_targets_reference(model, tok, adapter, requests[:n_ref], editor.templates, hp)
    ref_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast_only = compute_targets(model, tok, adapter, requests[:n_ref], editor.templates, hp)
    fast_sub_s = time.perf_counter() - t0
    rel = float(((fast_only.z - ref.z).norm(dim=-1) / ref.z.norm(dim=-1)).max())
    same_steps = int((fast_only.steps == ref.steps).sum())

    report = editor.edit_batch(requests)  # the full batch, fast targets
    total = report.seconds_targets + report.seconds_keys + report.seconds_solve
    ref_batch = ref_s * args.batch / n_ref
    rows += [
        (f"batch of {args.batch}: target optimisation (s)", report.seconds_targets),
        (f"batch of {args.batch}: keys (s)", report.seconds_keys),
        (f"batch of {args.batch}: solve (s)", report.seconds_solve),
        (f"batch of {args.batch}: total (s)", total),
        ("mean Adam steps per request", report.target_steps_mean),
        (f"per-request targets, {n_ref} requests (s)", ref_s),
        (f"batched targets, same {n_ref} requests (s)", fast_sub_s),
        (f"speed-up of target optimisation on {n_ref} requests (x)", ref_s / fast_sub_s),
        ("per-request targets, per batch (s)" + ("" if n_ref == args.batch else " [extrapolated]"), ref_batch),
        ("max relative difference of z, batched vs per-request", rel),
        (f"requests with the same number of steps (of {n_ref})", same_steps),
        ("projected 2,000 edits, batches of %d (min)" % args.batch, total * 2000 / args.batch / 60),
        ("peak resident memory (GiB)", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20),
    ]
    print(f"\nmodel {args.model}, {platform.processor() or platform.machine()}, torch threads "
          f"{torch.get_num_threads()}, torch {torch.__version__}\n")
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.4g} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({name: value for name, value in rows}, f, indent=1)


if __name__ == "__main__":
    main()
