"""Is MEMIT's gap to AlphaEdit on a model the model's, or MEMIT's λ?

MEMIT solves Δ (λ·C + K Kᵀ) = R Kᵀ: λ (`mom2_update_weight`, 15,000 in the LLaMA files every offline preset takes)
weighs the preserved keys' second moment C against the batch's keys. How large that is next to K Kᵀ depends on the
model's key scale and on the corpus budget, so one λ asks for updates of different sizes on different models; on a
model where it asks for a much smaller update than AlphaEdit's, MEMIT lands fewer edits for that reason alone.

This check edits one batch, the stream's first `--edits` requests, once with AlphaEdit (the preset, official P) and
then with MEMIT at each `--lambdas` value on the **same targets** z (optimised once, by the AlphaEdit batch, and
reused: `one_batch.reusing_targets`), restoring the weights between settings. It reports per setting official
efficacy and specificity, EasyEdit rewrite_acc and the update's size, the mean over the edited layers of
‖Δ_l‖/‖W_l‖. A λ at which MEMIT's update matches AlphaEdit's in size is the matched-strength comparison.

    python benchmarks/memit_lambda_check.py --model gemma3-270m --edits 50 --lambdas 15000 5000 1500 500 150 \\
        --out benchmarks/results/memit_lambda-{model}.md

Statistics come from the cache (the preset's corpus and budget, as the streams use them). With `--out`, the rows are
also written as CSV beside the report (same name, `.csv`): the across-models chapter reads them.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--edits", type=int, default=50, help="requests in the one batch (the stream's first records)")
    ap.add_argument("--stream-edits", type=int, default=2000,
                    help="the stream the records come from (every model edits the first records of the 2,000)")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[15000.0, 5000.0, 1500.0, 500.0, 150.0],
                    help="MEMIT's mom2_update_weight values")
    ap.add_argument("--out", default=None, help="markdown file ({model} is replaced)")
    args = ap.parse_args()

    from alphaedit_core.data import load_offline_counterfact, to_requests
    from alphaedit_core.editor import Editor
    from alphaedit_core.hparams import EditHParams
    from alphaedit_core.models import load_model
    from one_batch import SCORES, batch_scores, keeping_targets, machine_line, reusing_targets, write_report

    model, tok = load_model(args.model)
    hp = EditHParams.load(args.model)
    records = load_offline_counterfact(n=args.stream_edits, seed=hp.seed)[: args.edits]
    requests = to_requests(records)
    rows = [dict(setting="unedited", method="unedited", lam=None, **batch_scores(model, tok, records))]
    kept_targets = None

    def one(method: str, h: EditHParams, label: str, lam: float | None) -> None:
        nonlocal kept_targets
        t0 = time.perf_counter()
        ed = Editor.prepare(model, tok, h, method=method, progress=False)
        if kept_targets is None:
            with keeping_targets() as kept:
                report = ed.edit_batch(requests)
            kept_targets = kept[-1]
        else:
            with reusing_targets(kept_targets):
                report = ed.edit_batch(requests)
        change = sum(report.delta_norm[l] / float(ed.original[l].norm()) for l in h.layers) / len(h.layers)
        rows.append(dict(setting=label, method=method, lam=lam, **batch_scores(model, tok, records), change=change,
                         seconds=time.perf_counter() - t0))
        ed.restore()
        print(rows[-1], flush=True)

    one("alphaedit", hp, "AlphaEdit (official P)", None)
    for lam in args.lambdas:
        one("memit", hp.replace(mom2_update_weight=lam), "MEMIT", lam)

    lines = [f"# MEMIT's λ against AlphaEdit on the same targets: {args.model}, one batch of the stream's first "
             f"{args.edits} requests", "",
             machine_line(f"preset `{args.model}`: layers {hp.layers}, v_lr {hp.v_lr}, preset λ "
                          f"{hp.mom2_update_weight:g}, statistics {hp.mom2_n_tokens:,} tokens of {hp.mom2_corpus}"), "",
             "| setting | λ | efficacy | specificity | rewrite_acc | mean ‖Δ_l‖/‖W_l‖ | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lam = "" if r["lam"] is None else f"{r['lam']:g}" + (" (preset)" if r["lam"] == hp.mom2_update_weight else "")
        lines.append(f"| {r['setting']} | {lam} | " + " | ".join(f"{r[k]:.2f}" for k in SCORES.values())
                     + (f" | {r['change']:.3f} | {r['seconds']:.0f} |" if "change" in r else " | | |"))
    lines += ["", "Every edited row uses the same targets z (optimised once, in the AlphaEdit row, whose seconds "
              "include them; the MEMIT rows' seconds are the solve and the scoring). efficacy: official P(new) > "
              "P(true) on the rewrite prompt; specificity: official, on the neighbourhood prompts; rewrite_acc: "
              "EasyEdit's token accuracy of the new object; all on the batch's own records. mean ‖Δ_l‖/‖W_l‖: the "
              "update's Frobenius norm relative to the layer's weights, mean over the edited layers. Compare MEMIT "
              "with AlphaEdit at the λ whose update is as large as AlphaEdit's: the matched-strength comparison."]
    report = write_report(lines, args.out, args.model)
    if report is not None:  # the same rows for the across-models chapter (model_compare reads memit_lambda-<model>.csv)
        import pandas as pd

        pd.DataFrame(rows).assign(model=args.model, requests=args.edits, preset_lam=hp.mom2_update_weight).to_csv(
            report.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
