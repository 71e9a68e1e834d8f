"""Evaluation speed and the unedited model's metrics on the offline CounterFact set.

    python benchmarks/eval_speed.py --model smollm2-135m-instruct --records 200

Times the baseline (unedited argmax tokens for EasyEdit locality), the teacher-forced families (official +
EasyEdit, one shared forward pass) and the generation family separately, projects the time for 2,000 records,
and prints each metric's mean with its 95% interval, official and EasyEdit side by side.
"""
from __future__ import annotations

import argparse
import time

import torch

from alphaedit_core.data import load_offline_counterfact
from alphaedit_core.metrics import compute_baseline, evaluate, summarize
from alphaedit_core.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--answer-tokens", type=int, default=8, help="new tokens per generation-family prompt")
    args = ap.parse_args()

    model, tok = load_model(args.model)
    records = load_offline_counterfact(n=args.records, seed=args.seed)
    timings = {}
    t0 = time.perf_counter()
    baseline = compute_baseline(model, tok, records, progress=False)
    timings["baseline (unedited argmax)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tf = evaluate(model, tok, records, baseline=baseline, families=("official", "easyedit"), progress=False)
    timings["official + EasyEdit (one forward)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = evaluate(model, tok, records, families=("generation",), answer_max_new_tokens=args.answer_tokens,
                   progress=False)
    timings[f"generation ({args.answer_tokens} new tokens)"] = time.perf_counter() - t0
    total = sum(timings.values())
    print(f"\nmodel {args.model}, {args.records} records, torch threads {torch.get_num_threads()}\n")
    print("| step | seconds | projected for 2,000 records (s) |\n|---|---|---|")
    for name, s in timings.items():
        print(f"| {name} | {s:.1f} | {s * 2000 / args.records:.0f} |")
    print(f"| total | {total:.1f} | {total * 2000 / args.records:.0f} |")
    table = summarize(__import__("pandas").concat([tf, gen]), by=["family", "prompt_kind", "metric"])
    print("\n| family | prompt | metric | mean | 95% interval | n |\n|---|---|---|---|---|---|")
    for r in table.itertuples():
        print(f"| {r.family} | {r.prompt_kind} | {r.metric} | {r.mean:.3f} | {r.ci_low:.3f}–{r.ci_high:.3f} | {r.n} |")


if __name__ == "__main__":
    main()
