"""One batch of real edits on a model whose MLP output is normalised before it joins the residual (Gemma3's
post-feedforward norm), with the residual translated through the norm (`postnorm.value_residual`, the editor's
default) and asked of the matrix directly (the editor before the translation): official efficacy and specificity,
EasyEdit rewrite_acc, the update's size against the weights' and the residual left, from the same original weights.

    python benchmarks/postnorm_check.py --model gemma3-270m --edits 10 --out benchmarks/results/postnorm-{model}.md

Statistics from `--stats-tokens` tokens of the preset's corpus (the projector's exact values hardly matter for this
check; the full budget is cached for the real runs). Prints a markdown table; `--out` writes it.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--edits", type=int, default=10, help="requests in the one batch (the stream's first records)")
    ap.add_argument("--stats-tokens", type=int, default=20000)
    ap.add_argument("--method", default="alphaedit", choices=["alphaedit", "memit"])
    ap.add_argument("--out", default=None, help="markdown file ({model} is replaced)")
    args = ap.parse_args()

    from alphaedit_core.data import load_offline_counterfact, to_requests
    from alphaedit_core.editor import Editor
    from alphaedit_core.keys import keys_and_outputs
    from alphaedit_core.hparams import EditHParams
    from alphaedit_core.models import load_model
    from one_batch import batch_scores, keeping_targets, machine_line, write_report

    model, tok = load_model(args.model)
    hp = EditHParams.load(args.model, mom2_n_tokens=args.stats_tokens)
    records = load_offline_counterfact(n=400, seed=0)[: args.edits]  # the first records of every model's stream
    requests = to_requests(records)
    rows = []

    rows.append(dict(setting="unedited", **batch_scores(model, tok, records)))
    for translate in (True, False):
        t0 = time.perf_counter()
        ed = Editor.prepare(model, tok, hp, method=args.method, progress=False)
        found = sorted(ed.post_norms)
        if not translate:
            ed.post_norms = {}
        with keeping_targets() as kept:  # the batch's targets z and h0, to split the change made along / across them
            report = ed.edit_batch(requests)
        tr = kept[-1]
        L = hp.layers[-1]
        _, cur = keys_and_outputs(model, tok, ed.adapter, requests, ed.templates, [L], out_layer=L)
        asked, made = (tr.z - tr.h0).double(), (cur - tr.h0).double()
        along = (made * asked).sum(-1) / asked.pow(2).sum(-1)  # share of the asked change made along it
        across = (made - along[:, None] * asked).norm(dim=-1) / asked.norm(dim=-1)
        got = batch_scores(model, tok, records)
        rel = max(report.delta_norm[l] / float(ed.original[l].norm()) for l in hp.layers)
        rows.append(dict(setting="residual translated through the norm" if translate else "residual asked of W",
                         **got, max_rel_update=rel, residual_left=report.residual_left,
                         along=float(along.mean()), across=float(across.mean()),
                         seconds=time.perf_counter() - t0, post_norm_layers=found))
        ed.restore()

    lines = [f"# Post-MLP norm check: {args.model}, {args.method}, one batch of {args.edits} edits", "",
             machine_line(f"statistics from {args.stats_tokens:,} tokens; layers {hp.layers}; layers with a "
                          f"post-MLP norm: {rows[1]['post_norm_layers']}"), "",
             "| setting | efficacy | specificity | rewrite_acc | max ‖Δ_l‖/‖W_l‖ | residual left | made along | "
             "made across | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['efficacy']:.2f} | {r['specificity']:.2f} | {r['rewrite_acc']:.2f} | "
                     + (f"{r['max_rel_update']:.3g} | {r['residual_left']:.3g} | {r['along']:.2f} | "
                        f"{r['across']:.2f} | {r['seconds']:.0f} |" if "seconds" in r else "— | — | — | — | — |"))
    lines += ["", "efficacy: official P(new) > P(true) on the rewrite prompt; specificity: official, on the "
              "neighbourhood prompts; rewrite_acc: EasyEdit's token accuracy of the new object. residual left: "
              "‖z − h‖ / ‖z − h0‖ at the last edited layer after the batch (1: as far from the targets as before); made "
              "along / across: the change of that layer's output, h − h0, split into its share along the asked "
              "change z − h0 (1: all of it made) and the size of the rest relative to ‖z − h0‖, means over the "
              "requests. The residual left can stay near 1 while the edits land when the change is made along the "
              "asked one and the rest lies across it: an RMSNorm only rotates its output on an ellipsoid, so the "
              "layers cannot add a change in every direction the targets, optimised in the residual stream, ask for."]
    write_report(lines, args.out, args.model)


if __name__ == "__main__":
    main()
