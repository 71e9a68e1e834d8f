"""Does the target optimisation reach its targets on this model, and at which Adam learning rate?

Adam moves each coordinate of δ by at most about `v_lr` per step whatever the gradient's scale, so in
`v_num_grad_steps` steps ‖δ‖ can grow by at most ~ v_lr · steps · √d. A preset's `v_lr` carried over from another
model is therefore tied to that model's hidden-state scale: on a model whose residual stream is much larger
(Gemma3 scales its embeddings by √d) the same `v_lr` may leave most requests at the step cap, far from the loss
threshold. This check optimises the targets of the stream's first `--edits` requests (the unedited model, the
preset's templates) at each `--lrs` value and reports, per setting: ‖h0‖, ‖z − h0‖ (absolute, relative to ‖h0‖ and
to the Adam bound), the Adam steps taken, the final loss and the share of requests that reach `early_stop_loss`.
With `--edit`, each setting also edits the model with those targets (one AlphaEdit batch of the same requests,
statistics from the cache) and scores the batch (official efficacy and specificity, EasyEdit rewrite_acc), then
restores the weights.

    python benchmarks/target_lr_check.py --model gemma3-270m --edits 10 --lrs 0.5 2 5 \\
        --out benchmarks/results/target_lr-{model}.md

Without `--edit` nothing is edited; the targets are those the editor would compute for the first batch.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--edits", type=int, default=10, help="requests: the stream's first records")
    ap.add_argument("--stream-edits", type=int, default=2000,
                    help="the stream the records come from (every model edits the first records of the 2,000)")
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.5, 2.0, 5.0], help="Adam learning rates for δ")
    ap.add_argument("--edit", action="store_true", help="also edit with each setting's targets and score the batch")
    ap.add_argument("--out", default=None, help="markdown file ({model} is replaced)")
    args = ap.parse_args()

    from alphaedit_core.arch import ModelAdapter
    from alphaedit_core.data import load_offline_counterfact, to_requests
    from alphaedit_core.editor import Editor
    from alphaedit_core.hparams import EditHParams
    from alphaedit_core.models import load_model
    from alphaedit_core.prompts import context_templates
    from alphaedit_core.targets import compute_targets
    from one_batch import SCORES, batch_scores, keeping_targets, machine_line, write_report

    model, tok = load_model(args.model)
    hp = EditHParams.load(args.model)
    adapter = ModelAdapter.from_model(model)
    records = load_offline_counterfact(n=args.stream_edits, seed=hp.seed)[: args.edits]
    requests = to_requests(records)
    templates = context_templates(model, tok, length=hp.context_template_length, count=hp.context_template_count,
                                  seed_words=hp.context_template_seeds, seed=hp.seed)
    unedited = batch_scores(model, tok, records) if args.edit else {}
    rows = []
    for lr in args.lrs:
        h = hp.replace(v_lr=lr)
        t0 = time.perf_counter()
        if args.edit:  # the editor's own targets, kept as it computes them
            ed = Editor.prepare(model, tok, h, method="alphaedit", progress=False)
            with keeping_targets() as kept:
                ed.edit_batch(requests)
            edited = batch_scores(model, tok, records)
            ed.restore()
            r = kept[-1]
        else:
            r, edited = compute_targets(model, tok, adapter, requests, templates, h), {}
        seconds = time.perf_counter() - t0
        h0 = r.h0.norm(dim=-1)
        shift = (r.z - r.h0).norm(dim=-1)
        bound = lr * h.v_num_grad_steps * r.h0.shape[-1] ** 0.5
        rows.append(dict(v_lr=lr, h0=float(h0.mean()), shift=float(shift.mean()), rel=float((shift / h0).mean()),
                         of_bound=float(shift.mean()) / bound, steps=float(r.steps.float().mean()),
                         loss=float(r.loss.mean()), loss_max=float(r.loss.max()),
                         reached=float((r.loss < h.early_stop_loss).float().mean()), seconds=seconds / len(requests),
                         **edited))
        print(rows[-1], flush=True)

    lines = [f"# Target optimisation against the Adam learning rate: {args.model}, the stream's first {args.edits} "
             "requests", "",
             machine_line(f"preset `{args.model}`: layers {hp.layers}, steps cap {hp.v_num_grad_steps}, "
                          f"early_stop_loss {hp.early_stop_loss}, clamp {hp.clamp_norm_factor} × ‖h0‖, preset v_lr "
                          f"{hp.v_lr}"), "",
             "| v_lr | ‖h0‖ | ‖z − h0‖ | ‖z − h0‖/‖h0‖ | ‖z − h0‖ / Adam bound | Adam steps | final loss (mean, max) "
             "| reach early_stop_loss | s per request |"
             + (" efficacy | specificity | rewrite_acc |" if args.edit else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if args.edit else "")]
    if args.edit:
        lines.append("| unedited | | | | | | | | | " + " | ".join(f"{unedited[k]:.2f}" for k in SCORES.values()) + " |")
    for r in rows:
        lines.append(f"| {r['v_lr']:g} | {r['h0']:.0f} | {r['shift']:.1f} | {r['rel']:.3f} | {r['of_bound']:.2f} | "
                     f"{r['steps']:.1f} | {r['loss']:.3f}, {r['loss_max']:.3f} | {r['reached']:.0%} | "
                     f"{r['seconds']:.1f} |"
                     + ("".join(f" {r[k]:.2f} |" for k in SCORES.values()) if args.edit else ""))
    lines += ["", "Adam bound: v_lr × steps cap × √d, the most ‖δ‖ can grow when every coordinate takes a full step "
              "each time. A mean near the bound with the loss far above `early_stop_loss` means the step size, not "
              "the objective, limits the targets. The loss is the last step's (NLL of the new object plus the KL "
              "and weight-decay terms); a request stops early when it falls below `early_stop_loss`."]
    if args.edit:
        lines += ["", "With `--edit`: one AlphaEdit batch of these requests with each setting's targets (the "
                  "preset's P and statistics), scored on the same records after the batch: official efficacy "
                  "(P(new) > P(true) on the rewrite prompt), official specificity (neighbourhood prompts), "
                  "EasyEdit rewrite_acc; seconds then include the edit and the scoring."]
    write_report(lines, args.out, args.model)


if __name__ == "__main__":
    main()
