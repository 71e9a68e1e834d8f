"""Evaluation speed and the unedited model's metrics on the offline CounterFact set.

    python benchmarks/eval_speed.py --model smollm2-135m-instruct --records 200 [--compare] [--threads 2]

Times the baseline (the unedited model's argmax tokens for EasyEdit locality, computed once per run and cached
by the notebooks), then the evaluator: the teacher-forced families alone (official + EasyEdit) and all three
families (+ greedy generation-based answers). With `--compare` the same evaluations also run the plain way
(one sequence per (prompt, target) pair, generation in its own pass), in alternation with the shared-prefix
way so both see the same machine load, and the results are checked to agree. Prints the timings, the projection
to 2,000 records, and each metric's mean with its 95% interval, official and EasyEdit side by side.
"""
from __future__ import annotations

import argparse
import time

import torch

from alphaedit_core.data import load_offline_counterfact
from alphaedit_core.metrics import compute_baseline, evaluate, summarize
from alphaedit_core.models import load_model

KEY = ["case_id", "family", "prompt_kind", "metric"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--answer-tokens", type=int, default=8, help="new tokens per generation-family prompt")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--compare", action="store_true", help="also time the plain (no prefix sharing) evaluation")
    ap.add_argument("--skip-teacher-forced", action="store_true",
                    help="time only all three families together (not the teacher-forced ones alone)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tok = load_model(args.model)
    records = load_offline_counterfact(n=args.records, seed=args.seed)
    timings: dict[str, float] = {}

    def timed(name: str, fn):
        t0 = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - t0
        return result

    baseline = timed("baseline (unedited argmax, cached per run)",
                     lambda: compute_baseline(model, tok, records, batch_size=args.batch_size, progress=False))
    runs = {}
    ways = [True, False] if args.compare else [True]
    setups = [(("official", "easyedit"), "official + EasyEdit"),
              (("official", "easyedit", "generation"), f"all three ({args.answer_tokens} new tokens)")]
    for fams, label in setups[1:] if args.skip_teacher_forced else setups:
        for shared in ways:
            way = "shared prefix" if shared else "plain"
            runs[(label, shared)] = timed(f"{label}, {way}", lambda: evaluate(
                model, tok, records, baseline=baseline, families=fams, answer_max_new_tokens=args.answer_tokens,
                batch_size=args.batch_size, shared_prefix=shared, progress=False))
    print(f"\nmodel {args.model}, {args.records} records, torch threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}\n")
    print("| step | seconds | s / record | projected for 2,000 records (min) |\n|---|---|---|---|")
    for name, s in timings.items():
        print(f"| {name} | {s:.1f} | {s / args.records:.3f} | {s * 2000 / args.records / 60:.1f} |")
    if args.compare:
        for (label, shared), frame in runs.items():
            if shared:
                m = frame.merge(runs[(label, False)], on=KEY, suffixes=("", "_plain"))
                assert len(m) == len(frame), "the two ways returned different rows"
                print(f"\n{label}: shared prefix {timings[f'{label}, plain'] / timings[f'{label}, shared prefix']:.2f}x "
                      f"faster; largest difference in any value {float((m.value - m.value_plain).abs().max()):.2e}")
    full = runs[(f"all three ({args.answer_tokens} new tokens)", True)]
    table = summarize(full, by=["family", "prompt_kind", "metric"])
    print("\n| family | prompt | metric | mean | 95% interval | n |\n|---|---|---|---|---|---|")
    for r in table.itertuples():
        print(f"| {r.family} | {r.prompt_kind} | {r.metric} | {r.mean:.3f} | {r.ci_low:.3f}–{r.ci_high:.3f} | {r.n} |")


if __name__ == "__main__":
    main()
