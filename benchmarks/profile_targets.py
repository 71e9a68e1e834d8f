"""Where the time of `compute_targets` goes, on a real model: torch.profiler over one batch, every op attributed to a
component by the module it ran in (and, for backward ops, the module of the forward op that made them).

    python benchmarks/profile_targets.py --model smollm2-135m-instruct --batch 100 --out benchmarks/results/x.md
    python benchmarks/profile_targets.py ... --impl path/to/targets.py   # profile another version of targets.py

Components (share of the wall time):
- upper layers: linear layers (matmul), attention core (sdpa, rotary, the cached-prefix concatenation, reshapes),
  norms, activations, residual adds and other elementwise ops, forward and backward separately;
- final norm, LM head at the label positions and at the KL rows, the NLL (log-softmax / logsumexp, gather) and the
  KL term (log-softmax, exp, products over the vocabulary), weight decay and loss bookkeeping;
- Adam, the clamp and step bookkeeping (ops outside the model and the loss);
- building the chunks (the prefix and suffix forward run once per chunk, and rebuilds);
- copies and allocation (clone, cat, copy_, empty, zeros, index_put outside the attention core);
- Python overhead: wall time not inside any op (interpreter, hooks, dispatch outside the ops, the profiler).
Ops are attributed by their total time at the outermost op level (an op's children are not counted again).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import os
import platform
import re
import statistics
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.autograd.profiler import record_function

from alphaedit_core.arch import ModelAdapter
from alphaedit_core.data import load_offline_counterfact, to_requests
from alphaedit_core.hparams import EditHParams
from alphaedit_core.models import load_model
from alphaedit_core.prompts import context_templates

ALLOC_OPS = {"aten::empty", "aten::empty_like", "aten::zeros", "aten::zeros_like", "aten::clone", "aten::copy_",
             "aten::cat", "aten::index_put_", "aten::new_zeros", "aten::new_empty", "aten::full", "aten::contiguous",
             "aten::empty_strided", "aten::resize_", "aten::fill_", "aten::zero_"}
ALLOC_BWD = ("CloneBackward", "CatBackward", "CopyBackward", "IndexPutBackward", "CopySlices")


def load_impl(path: str | None):
    """The targets module: the installed one, or a file loaded as a sibling module of alphaedit_core."""
    if path is None:
        from alphaedit_core import targets
        return targets
    name = "alphaedit_core._profiled_targets_" + re.sub(r"\W", "_", Path(path).stem)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Scopes:
    """Forward hooks that open a record_function named after each module's role around its call."""

    def __init__(self, adapter: ModelAdapter, upper: list[int]):
        self.handles = []
        self.stack = []
        for l in upper:
            for name, m in adapter.layers[l].named_modules():
                if name == "":
                    continue
                self._wrap(m, "mod:" + self.role(name, m))
        self._wrap(adapter.final_norm, "mod:final_norm")
        self._wrap(adapter.lm_head, "mod:lm_head")

    @staticmethod
    def role(name: str, m) -> str:
        kind = type(m).__name__
        if isinstance(m, torch.nn.Linear) or kind == "Conv1D":
            return "linear"
        if "norm" in kind.lower() or "norm" in name.split(".")[-1].lower() or name.split(".")[-1].startswith("ln"):
            return "norm"
        if "act" in name.split(".")[-1].lower() or any(a in kind for a in ("SiLU", "GELU", "Activation", "Tanh")):
            return "activation"
        if "attn" in name.lower() or "attention" in kind.lower():
            return "attention"
        if "mlp" in name.lower() or "mlp" in kind.lower():
            return "mlp"
        return "other"

    def _wrap(self, m, label):
        def pre(_m, _a):
            rf = record_function(label)
            rf.__enter__()
            self.stack.append(rf)

        def post(_m, _a, _o):
            self.stack.pop().__exit__(None, None, None)

        self.handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]

    def remove(self):
        for h in self.handles:
            h.remove()


def patch(impl, names: dict[str, str]):
    """Wrap functions / methods of the targets module in record_function scopes."""
    undo = []
    for dotted, label in names.items():
        owner, attr = impl, dotted
        if "." in dotted:
            cls, attr = dotted.split(".")
            owner = getattr(impl, cls)
        if not hasattr(owner, attr):
            continue
        fn = getattr(owner, attr)

        def make(fn, label):
            def wrapped(*a, **k):
                lab = label
                if label == "scope:step":  # _Chunk.losses(self, delta): the sizes go into the scope's name
                    P = len(a[0].labels) if hasattr(a[0], "labels") else len(a[0].label_rows)
                    lab = f"scope:step R={a[1].shape[0]} P={P}"
                with record_function(lab):
                    return fn(*a, **k)
            return wrapped

        setattr(owner, attr, make(fn, label))
        undo.append((owner, attr, fn))
    return lambda: [setattr(o, a, f) for o, a, f in undo]


def scope_chain(ev) -> list[str]:
    out = []
    while ev is not None:
        out.append(ev.name)
        ev = ev.cpu_parent
    return out


def classify_forward(ev, chain: list[str]) -> str:
    names = [c for c in chain if c.startswith(("mod:", "scope:"))]
    if any(c == "scope:build" for c in names):
        return "chunk building (prefix + suffix forward, once per chunk and rebuild)"
    step = next((c for c in names if c.startswith("scope:step")), None)
    mod = next((c for c in names if c.startswith("mod:")), None)  # innermost module
    if step is None:
        if ev.name in ALLOC_OPS:
            return "copies and allocation"
        return "Adam, clamp, step bookkeeping"
    R = int(re.search(r"R=(\d+)", step).group(1))
    P = int(re.search(r"P=(\d+)", step).group(1))
    if mod == "mod:lm_head":
        rows = ev.input_shapes[0][0] if ev.input_shapes and ev.input_shapes[0] else -1
        return {R: "LM head, KL rows", P: "LM head, label positions", P + R: "LM head, label positions + KL rows (one pass)"
                }.get(rows, "LM head")
    if mod == "mod:final_norm":
        return "final norm (labels + KL rows)"
    if mod is None:  # in the loss, outside the head, or the delta injection / clone before the layers
        shapes = ev.input_shapes or []
        big = [s for s in shapes if len(s) >= 2 and s[-1] > 4096]
        if big:
            return "KL term (over the vocabulary)" if big[0][0] == R else "NLL (log-softmax / logsumexp, gather)"
        if ev.name in ALLOC_OPS:
            return "copies and allocation"
        return "loss bookkeeping, weight decay, delta injection"
    if ev.name in ALLOC_OPS and mod != "mod:attention":
        return "copies and allocation"
    return {"mod:linear": "upper layers: linear layers (matmul)", "mod:attention": "upper layers: attention core",
            "mod:norm": "upper layers: norms", "mod:activation": "upper layers: activations"}.get(
        mod, "upper layers: residual adds, other elementwise")


def analyse(events, wall: float):
    """{category: seconds} forward, {category: seconds} backward, per-op-name seconds."""
    fwd, bwd = defaultdict(float), defaultdict(float)
    by_seq = {}
    ops = defaultdict(float)
    tops = []
    for ev in events:
        if ev.device_type.name != "CPU":
            continue
        parent = ev.cpu_parent
        is_op = ev.name.startswith("aten::") or ev.name.startswith("autograd::engine::evaluate_function")
        if not is_op:
            continue
        # outermost op: no op among its ancestors
        p, nested = parent, False
        while p is not None:
            if p.name.startswith("aten::") or p.name.startswith("autograd::engine::evaluate_function"):
                nested = True
                break
            p = p.cpu_parent
        if ev.name.startswith("aten::") and getattr(ev, "sequence_nr", -1) >= 0 and not ev.name.startswith("autograd"):
            in_backward = any(c.startswith("autograd::engine") for c in scope_chain(parent))
            if not in_backward:
                by_seq.setdefault((ev.sequence_nr, ev.thread), ev)
                by_seq.setdefault(ev.sequence_nr, ev)
        if not nested:
            tops.append(ev)
    for ev in tops:
        dt = ev.cpu_time_total / 1e6
        if ev.name.startswith("autograd::engine::evaluate_function"):
            node = ev.name.split(":")[-1].strip()
            ops["backward: " + node] += dt
            src = by_seq.get((ev.sequence_nr, getattr(ev, "fwd_thread", ev.thread)))
            if src is None:
                src = by_seq.get(ev.sequence_nr)
            cat = classify_forward(src, scope_chain(src)) if src is not None else "backward, unattributed"
            if node.startswith(ALLOC_BWD) and not cat.startswith("upper layers: attention"):
                cat = "copies and allocation"
            bwd[cat] += dt
        else:
            ops[ev.name] += dt
            fwd[classify_forward(ev, scope_chain(ev))] += dt
    return fwd, bwd, ops


def ab_steps(args, model, tok, adapter, hp, templates, requests) -> str:
    """Seconds per optimisation step (forward + backward of one chunk) of several variants, alternated in one
    process so that all see the same load: round r times variant 1, 2, ..., then the next round."""
    variants = {}
    for spec in args.ab:
        name, _, opts = spec.partition(":")
        if name == "before":
            impl = load_impl(args.before)
            variants[spec] = lambda reqs, impl=impl: impl._Chunk(model, tok, adapter, reqs, templates, hp)
        else:
            impl = load_impl(None)
            kw = dict(grouping=name)
            if opts == "unfused":
                kw["fused_head"] = False
            variants[spec] = lambda reqs, impl=impl, kw=kw: impl._Chunk(model, tok, adapter, reqs, templates, hp, **kw)
    reqs = requests[: hp.targets_chunk]
    times = defaultdict(list)
    build = defaultdict(list)
    chunks = {}
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds + 1):  # round 0 builds the chunks and warms up
        for name, make in variants.items():
            torch.set_num_threads(args.threads or torch.get_num_threads())
            if r == 0:
                t0 = time.perf_counter()
                chunks[name] = make(reqs)
                build[name].append(time.perf_counter() - t0)
            delta = torch.zeros(len(reqs), adapter.d_model, requires_grad=True)
            t0 = time.perf_counter()
            chunks[name].losses(delta).sum().backward()
            if r > 0:
                times[name].append(time.perf_counter() - t0)
            print(f"round {r} {name}: {time.perf_counter() - t0:.2f} s", file=sys.stderr, flush=True)
        loads.append(os.getloadavg()[0])
    base = next(iter(variants))
    lines = [f"A/B of one optimisation step (forward + backward), chunk of {len(reqs)} requests, {args.rounds} "
             f"alternating rounds, {torch.get_num_threads()} threads, load average (1 min) per round: "
             + ", ".join(f"{l:.1f}" for l in loads), "",
             f"| variant | build (s) | step, median (s) | steps (s) | ratio to {base} (median of per-round ratios) |",
             "|---|---|---|---|---|"]
    for name in variants:
        med = statistics.median(times[name])
        ratio = statistics.median([b / x for b, x in zip(times[base], times[name])])
        lines.append(f"| {name} | {build[name][0]:.1f} | {med:.2f} | {', '.join(f'{t:.2f}' for t in times[name])} "
                     f"| {ratio:.3f} |")
    return "\n".join(lines) + "\n"


def z_check(args, model, tok, adapter, hp, templates, requests) -> str:
    """Fast variants (and the --before file's, if given) against the per-request reference on the same requests,
    and against each other: the spread between equivalent computations is the float-noise floor."""
    from functools import partial

    from alphaedit_core.targets import compute_targets, compute_targets_reference

    reqs = requests[: args.zcheck]
    load0 = os.getloadavg()[0]
    cache = Path(args.ref_cache) if args.ref_cache else None
    t_ref = float("nan")
    if cache is not None and cache.exists():
        ref = torch.load(cache)
    else:
        t0 = time.perf_counter()
        ref = compute_targets_reference(model, tok, adapter, reqs, templates, hp)
        t_ref = time.perf_counter() - t0
        if cache is not None:
            torch.save(ref, cache)
    runs = {"installed (defaults)": partial(compute_targets, hp=hp),
            "installed, fused head": partial(compute_targets, hp=hp, fused_head=True),
            "installed, chunk 10": partial(compute_targets, hp=hp.replace(targets_chunk=10))}
    if args.before:
        old = load_impl(args.before)
        runs["before"] = partial(old.compute_targets, hp=hp)
        runs["before, chunk 10"] = partial(old.compute_targets, hp=hp.replace(targets_chunk=10))
    lines = [f"z-equality on {args.model}, {len(reqs)} requests (offline counterfact, seed {args.seed}), "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}, {datetime.datetime.now():%Y-%m-%d %H:%M}, "
             f"load average {load0:.1f} at the start; reference {t_ref:.0f} s (nan: read from --ref-cache); "
             f"max |z_ref| {ref.z.abs().max():.3g}, mean ‖z_ref − h0‖ {(ref.z - ref.h0).norm(dim=-1).mean():.3g}, "
             f"reference steps {sorted(ref.steps.tolist())}", "",
             "| version | max abs z − z_ref | max ‖z − z_ref‖ / ‖z_ref‖ | max abs h0 − h0_ref | steps equal to reference "
             "| wall (s) |", "|---|---|---|---|---|---|"]
    results = {}
    for name, fn in runs.items():
        t0 = time.perf_counter()
        res = results[name] = fn(model, tok, adapter, reqs, templates)
        wall = time.perf_counter() - t0
        rel = ((res.z - ref.z).norm(dim=-1) / ref.z.norm(dim=-1)).max()
        lines.append(f"| {name} | {(res.z - ref.z).abs().max():.3e} | {rel:.3e} | {(res.h0 - ref.h0).abs().max():.3e} "
                     f"| {int((res.steps == ref.steps).sum())}/{len(reqs)} | {wall:.0f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    names = list(results)
    lines += ["", "Between the fast variants (max abs z difference / max relative; steps equal):", "",
              "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for a in names:
        cells = []
        for b in names:
            za, zb = results[a], results[b]
            rel = ((za.z - zb.z).norm(dim=-1) / zb.z.norm(dim=-1)).max()
            cells.append(f"{(za.z - zb.z).abs().max():.1e} / {rel:.1e}; {int((za.steps == zb.steps).sum())}")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines.append(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--impl", default=None, help="a targets.py file to profile instead of the installed one")
    ap.add_argument("--label", default=None, help="title of the table (default: the implementation)")
    ap.add_argument("--out", default=None, help="write the markdown here")
    ap.add_argument("--ab", nargs="*", default=None,
                    help="time optimisation steps of variants instead: 'before' (the --before file) or a grouping "
                         "of the installed version (single, kl, width), ':unfused' for the two-pass loss head")
    ap.add_argument("--before", default=None, help="targets.py of the 'before' variant")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--zcheck", type=int, default=None, help="compare z with the per-request reference on N requests")
    ap.add_argument("--ref-cache", default=None, help="--zcheck: read / write the reference's result here")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="cap v_num_grad_steps (a partial profile)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    impl = load_impl(args.impl)
    model, tok = load_model(args.model)
    hp = EditHParams.load(args.model)
    adapter = ModelAdapter.from_model(model)
    model.requires_grad_(False)
    templates = context_templates(model, tok, length=hp.context_template_length, count=hp.context_template_count,
                                  seed_words=hp.context_template_seeds, seed=hp.seed)
    requests = to_requests(load_offline_counterfact(n=args.batch, seed=args.seed))
    if args.steps:
        hp = hp.replace(v_num_grad_steps=args.steps)
    for wanted, report in ((args.zcheck, z_check), (args.ab, ab_steps)):
        if wanted:
            text = report(args, model, tok, adapter, hp, templates, requests)
            print(text)
            if args.out:
                Path(args.out).write_text(text)
            return
    upper = list(range(hp.layers[-1] + 1, hp.loss_layer(adapter.n_layers) + 1))
    load0 = os.getloadavg()
    scopes = Scopes(adapter, upper)
    undo = patch(impl, {"_Chunk.__init__": "scope:build", "_Chunk.losses": "scope:step"})
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            t0 = time.perf_counter()
            res = impl.compute_targets(model, tok, adapter, requests, templates, hp)
            wall = time.perf_counter() - t0
    finally:
        undo()
        scopes.remove()
    load1 = os.getloadavg()
    print(f"targets done in {wall:.1f} s; analysing the trace", file=sys.stderr, flush=True)
    gc.disable()  # parsing a long trace creates millions of objects: the collector would make it quadratic
    t0 = time.perf_counter()
    events = prof.events()
    fwd, bwd, ops = analyse(events, wall)
    gc.enable()
    print(f"trace of {len(events)} events analysed in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    attributed = sum(fwd.values()) + sum(bwd.values())
    cats = sorted(set(fwd) | set(bwd), key=lambda c: -(fwd.get(c, 0) + bwd.get(c, 0)))
    lines = [
        f"# compute_targets profile: {args.model}, batch {args.batch} — {args.label or (args.impl or 'alphaedit_core/targets.py')}",
        "",
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, load average before {load0[0]:.2f} / after "
        f"{load1[0]:.2f} (1 min), targets_chunk {hp.targets_chunk}, peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB",
        "",
        f"wall time under the profiler {wall:.1f} s = {wall / args.batch:.3f} s per request; mean Adam updates "
        f"{res.steps.float().mean():.2f} (max {int(res.steps.max())}); time inside ops {attributed:.1f} s.",
        "",
        "| component | forward (s) | backward (s) | total (s) | share of wall |",
        "|---|---|---|---|---|",
    ]
    for c in cats:
        f_, b_ = fwd.get(c, 0.0), bwd.get(c, 0.0)
        lines.append(f"| {c} | {f_:.2f} | {b_:.2f} | {f_ + b_:.2f} | {(f_ + b_) / wall:.1%} |")
    lines.append(f"| Python overhead (wall − time inside ops: interpreter, hooks, profiler) | | | "
                 f"{wall - attributed:.2f} | {(wall - attributed) / wall:.1%} |")
    lines += ["", "Outermost ops by total time (top 25):", "", "| op | s | share of wall |", "|---|---|---|"]
    for name, s in sorted(ops.items(), key=lambda x: -x[1])[:25]:
        lines.append(f"| {name} | {s:.2f} | {s / wall:.1%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
