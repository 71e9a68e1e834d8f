"""Seconds for projection_check's threshold sweep on one layer: a P per threshold built from C on its own (one
eigendecomposition each, the way the sweep worked before `projection.decompose`) against one decomposition shared by
every threshold (`decompose` + `projector_from_spectrum`), and a check that both give the same P.

    python benchmarks/projector_sweep.py --d 1536 2048 4864 --out benchmarks/results/projector_sweep.md

C is a random second moment of the given size with a decaying spectrum (the time of an eigendecomposition depends
on the size, not on the values); `--stats FILE` takes a cached layer's C instead (a `.safetensors` of the statistics
cache). The decomposition runs on one thread, as in the library. Prints a markdown table (date, load, threads).
"""
from __future__ import annotations

import argparse
import time

import torch

THRESHOLDS = [1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1, 2e-1]  # projection_check's default sweep


def random_second_moment(d: int, seed: int = 0) -> torch.Tensor:
    """[d, d] symmetric positive semi-definite, eigenvalues from 1e-4 to 10 (log-spaced)."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(2 * d, d, generator=g) * torch.logspace(-2, 0.5, d)
    return keys.T @ keys / (2 * d)


def time_sweep(cov: torch.Tensor, thresholds: list[float]) -> dict:
    from alphaedit_core.projection import decompose, projector_from_cov, projector_from_spectrum

    start = time.perf_counter()
    alone = [projector_from_cov(cov, threshold=t, allow_degenerate=True) for t in thresholds]
    t_alone = time.perf_counter() - start
    start = time.perf_counter()
    spectrum = decompose(cov)
    shared = [projector_from_spectrum(spectrum, threshold=t, allow_degenerate=True) for t in thresholds]
    t_shared = time.perf_counter() - start
    same = all(a.n_kept == b.n_kept and torch.equal(a.basis, b.basis) for a, b in zip(alone, shared))
    return dict(d=cov.shape[0], alone=t_alone, shared=t_shared, same=same)


def main() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from one_batch import machine_line, write_report

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, nargs="*", default=[1536, 2048], help="sizes of random C")
    ap.add_argument("--stats", nargs="*", default=[], help="cached statistics files (.safetensors) to use as C")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    covs = [(f"random, d={d}", random_second_moment(d)) for d in args.d]
    if args.stats:
        from safetensors.torch import load_file

        for path in args.stats:
            tensors = load_file(path)
            key = next(k for k, v in tensors.items() if v.ndim == 2 and v.shape[0] == v.shape[1])
            covs.append((Path(path).name.split(".safetensors")[0], tensors[key]))
    lines = [f"# projection_check's threshold sweep: {len(THRESHOLDS)} thresholds, one layer", "",
             machine_line("eigendecomposition on one thread"), "",
             "| C | d_ff | one decomposition per threshold (s) | one shared decomposition (s) | speed-up | same P |",
             "|---|---|---|---|---|---|"]
    for name, cov in covs:
        r = time_sweep(cov, THRESHOLDS)
        lines.append(f"| {name} | {r['d']} | {r['alone']:.1f} | {r['shared']:.1f} | {r['alone'] / r['shared']:.1f}× "
                     f"| {r['same']} |")
        print(lines[-1], flush=True)
    lines += ["", "Before `projection.decompose`, projection_check built each threshold's P from C on its own; now the "
              "sweep decomposes each layer's C once. 'same P': identical bases and kept counts at every threshold."]
    write_report(lines, args.out, "")


if __name__ == "__main__":
    main()
