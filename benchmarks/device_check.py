"""Do edits come out the same on every device placement? One command for a machine with a GPU (or two):

    .venv/bin/python benchmarks/device_check.py                 # every tiny architecture, AlphaEdit and MEMIT
    .venv/bin/python benchmarks/device_check.py --emulated      # also the CPU-emulated split (no GPU needed)
    .venv/bin/python benchmarks/device_check.py --out benchmarks/results/device_check.md

For each tiny random model (tests/tiny.py) and method, the same batch of edits is made on the CPU (the reference),
on cuda:0 (when CUDA is present), on a layer-wise device_map over cuda:0/cuda:1 (when two GPUs are present:
accelerate's `dispatch_model`, as `device_map="auto"` does for a large model), and, with `--emulated`, on the
CPU-emulated two-device split of tests/test_devices.py. The table gives, per placement, the devices of the edited
layers, max |ΔW − ΔW_cpu| relative to max |ΔW_cpu| and absolute, whether it is within `--tol`, and the seconds the
edits took (first call on a device includes its warm-up). Runs in seconds; it loads no real model.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
if "--emulated" in sys.argv:  # register the emulated device at import, before any backward pass (tests/test_devices.py)
    os.environ["ALPHAEDIT_DEVICE_EMULATION"] = "1"

from test_devices import FAKE, EmulatedDevices, _register, hp, run_edits, split, statistics  # noqa: E402
from tiny import REQUESTS, tiny_model, tiny_tokenizer  # noqa: E402

from alphaedit_core.arch import layerwise_device_map  # noqa: E402


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_edits(model, tok, method, h, covs, projectors, requests):
    sync()
    t0 = time.perf_counter()
    ed = run_edits(model, tok, method, h, covs, projectors, requests=requests)
    sync()
    return ed, time.perf_counter() - t0


def compare(ed, ref) -> tuple[float, float]:
    """(max |ΔW − ΔW_cpu| / max |ΔW_cpu|, max |ΔW − ΔW_cpu|) over the edited layers."""
    rel = err = 0.0
    for l, d_ref in ref.weight_deltas().items():
        a = d_ref.detach().double().cpu()
        b = ed.weight_deltas()[l].detach().double().cpu()
        e = float((a - b).abs().max())
        err, rel = max(err, e), max(rel, e / max(float(a.abs().max()), 1e-300))
    return rel, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", default="llama,qwen2,gemma3,gpt2")
    ap.add_argument("--methods", default="alphaedit,memit")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    ap.add_argument("--requests", type=int, default=6, help="edits per run (the tiny set has 6)")
    ap.add_argument("--batch", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-4, help="relative tolerance for the 'ok' column")
    ap.add_argument("--emulated", action="store_true", help="also the CPU-emulated cpu/fakegpu:0 split")
    ap.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    tok = tiny_tokenizer()
    h = hp(batch_size=args.batch)
    requests = REQUESTS[: args.requests]
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    placements = []
    if n_gpu >= 1:
        placements.append(("cuda:0", lambda m: m.to("cuda:0"), None))
    if n_gpu >= 2:
        def two_gpus(m):
            from accelerate import dispatch_model

            return dispatch_model(m, layerwise_device_map(m, [0, 1]),
                                  skip_keys=list(getattr(m, "_skip_keys_device_placement", None) or []))
        placements.append(("cuda:0+cuda:1 (layer-wise map)", two_gpus, None))
    if args.emulated:
        def emulated(m):
            _register()
            split(m, f"{FAKE}:0", "cpu")
            return m
        placements.append((f"{FAKE}:0+cpu (emulated split)", emulated, EmulatedDevices))
    rows = []
    for arch in args.archs.split(","):
        for method in args.methods.split(","):
            covs, projectors = statistics(tiny_model(arch), tok)
            ref, secs = timed_edits(tiny_model(arch).to(dtype), tok, method, h, covs, projectors, requests)
            rows.append((arch, method, "cpu (reference)", "cpu, cpu", 0.0, 0.0, True, secs))
            for name, place, mode in placements:
                model = tiny_model(arch).to(dtype)
                ctx = mode() if mode is not None else _Null()
                with ctx:
                    model = place(model) or model
                    ed, secs = timed_edits(model, tok, method, h, covs, projectors, requests)
                    rel, err = compare(ed, ref)
                    where = ", ".join(str(ed.devices[l]) for l in h.layers)
                rows.append((arch, method, name, where, rel, err, rel <= args.tol, secs))
    header = ("arch", "method", "placement", f"devices of layers {h.layers}",
              "max abs(dW - dW_cpu) / max abs(dW_cpu)", "max abs(dW - dW_cpu)", f"ok (<= {args.tol:g})", "seconds")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arch, method, name, where, rel, err, ok, secs in rows:
        lines.append(f"| {arch} | {method} | {name} | {where} | {rel:.2e} | {err:.2e} | {'yes' if ok else 'NO'} "
                     f"| {secs:.2f} |")
    gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(n_gpu)) or "none"
    note = (f"torch {torch.__version__}, CUDA devices: {gpus}; {platform.machine()}; model dtype {args.dtype}; "
            f"{len(requests)} edits in batches of {args.batch}; layers {h.layers}; solves in float64")
    text = "\n".join([note, "", *lines])
    print(text)
    if not n_gpu:
        print("\nno CUDA device here: only the CPU" + (" and the emulated split" if args.emulated else "")
              + " were run")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# Device check\n\n`{' '.join(sys.argv)}`\n\n{text}\n")
    if not all(r[6] for r in rows):
        sys.exit(1)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
