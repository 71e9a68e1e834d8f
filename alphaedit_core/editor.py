"""Sequential batched editing with AlphaEdit or MEMIT. All state (original weights, the accumulated constraint
`cache_c` of earlier edits, progress) lives in one `Editor`; it can restore the model, save and resume.

Per batch (the reference's `apply_AlphaEdit_to_model` / `execute_memit`):
  1. target values z at the last edited layer L (`targets.compute_targets`);
  2. for each edited layer l, in order: keys K at l and the current layer-L output at the subject, residual
     R = (z − current) / (number of layers left), Δ from `solve`, W_l += Δ;
  3. AlphaEdit only: keys recomputed on the edited model, cache_c[l] += K Kᵀ.
Methods: "alphaedit" (P and cache_c), "alphaedit_no_cache" (P, without cache_c: an ablation), "memit".
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .arch import ModelAdapter
from .hparams import EditHParams
from .keys import keys_and_outputs
from .projection import Projector
from .prompts import context_templates
from .requests import EditRequest
from .solve import alphaedit_delta, condition_number, memit_delta
from .targets import compute_targets, compute_targets_reference

METHODS = ("alphaedit", "alphaedit_no_cache", "memit")


@dataclass
class BatchReport:
    batch: int
    n_requests: int
    edits_done: int
    seconds_targets: float
    seconds_keys: float
    seconds_solve: float
    target_steps_mean: float
    target_loss_mean: float
    delta_norm: dict[int, float] = field(default_factory=dict)  # ‖Δ_l‖_F of this batch
    total_norm: dict[int, float] = field(default_factory=dict)  # ‖W_l − W_l⁰‖_F after the batch
    weight_norm: dict[int, float] = field(default_factory=dict)  # ‖W_l⁰‖_F
    condition: dict[int, float] = field(default_factory=dict)  # cond of the solved system (diagnostics=True)
    residual_left: float = 0.0  # mean ‖z − layer-L output‖ after the update, relative to ‖z − h0‖


class Editor:
    """Edits `model` in place. Needs the second moments `covs` {layer: [d_ff, d_ff]} for MEMIT, or projectors
    {layer: Projector} for AlphaEdit (see `Editor.prepare` to compute both from a corpus)."""

    def __init__(self, model, tok, hparams: EditHParams, *, method: str = "alphaedit",
                 projectors: dict[int, Projector] | None = None, covs: dict[int, torch.Tensor] | None = None,
                 templates: list[str] | None = None, fast_targets: bool = True, diagnostics: bool = False,
                 progress: bool = True):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
        self.model, self.tok, self.hp, self.method = model, tok, hparams, method
        self.adapter = ModelAdapter.from_model(model)
        hparams.check_model(self.adapter.n_layers)
        model.requires_grad_(False)
        if method == "memit":
            missing = [l for l in hparams.layers if covs is None or l not in covs]
            if missing:
                raise ValueError(f"MEMIT needs the second moments of layers {missing}")
        else:
            missing = [l for l in hparams.layers if projectors is None or l not in projectors]
            if missing:
                raise ValueError(f"AlphaEdit needs a projector for layers {missing}")
        self.projectors, self.covs = projectors or {}, covs or {}
        self.fast_targets, self.diagnostics, self.progress = fast_targets, diagnostics, progress
        self.original = {l: self.adapter.weight_view(l).detach().clone() for l in hparams.layers}
        self.cache_c = {l: torch.zeros(self.adapter.d_ff, self.adapter.d_ff) for l in hparams.layers} \
            if method == "alphaedit" else {}
        self.templates = templates if templates is not None else context_templates(
            model, tok, length=hparams.context_template_length, count=hparams.context_template_count,
            seed_words=hparams.context_template_seeds, seed=hparams.seed)
        self.batches_done = 0
        self.case_ids: list = []
        self.reports: list[BatchReport] = []

    # --------------------------------------------------------------------------------------------- set-up
    @classmethod
    def prepare(cls, model, tok, hparams: EditHParams, *, method: str = "alphaedit", corpus=None,
                fingerprint: str | None = None, stats_root: Path | None = None, **kwargs) -> "Editor":
        """Compute (or read from the cache) the statistics of `hparams.mom2_corpus` and build the editor."""
        from .corpus import get_corpus
        from .models import model_fingerprint
        from .projection import projector_from_cov
        from .stats import layer_stats

        adapter = ModelAdapter.from_model(model)
        corpus = corpus if corpus is not None else get_corpus(hparams.mom2_corpus)
        covs = layer_stats(model, tok, adapter, hparams.layers, corpus,
                           fingerprint=fingerprint or model_fingerprint(model), n_tokens=hparams.mom2_n_tokens,
                           seq_len=hparams.mom2_seq_len, dtype=hparams.mom2_dtype, root=stats_root,
                           progress=kwargs.get("progress", True))
        projectors = {l: projector_from_cov(c, threshold=hparams.nullspace_threshold, mode=hparams.nullspace_mode,
                                            energy=hparams.nullspace_energy) for l, c in covs.items()}
        return cls(model, tok, hparams, method=method, projectors=projectors, covs=covs, **kwargs)

    # --------------------------------------------------------------------------------------------- editing
    def edit_batch(self, requests: list[EditRequest]) -> BatchReport:
        """Apply one batch of edits."""
        if not requests:
            raise ValueError("empty batch of requests")
        hp, a = self.hp, self.adapter
        layers, L = hp.layers, hp.layers[-1]
        t0 = time.perf_counter()
        find = compute_targets if self.fast_targets else compute_targets_reference
        tr = find(self.model, self.tok, a, requests, self.templates, hp, progress=self.progress)
        t1 = time.perf_counter()
        t_keys = t_solve = 0.0
        report = BatchReport(self.batches_done, len(requests), 0, t1 - t0, 0.0, 0.0,
                             float(tr.steps.float().mean()), float(tr.loss.mean()))
        zs = tr.z.double()
        for i, l in enumerate(layers):
            s0 = time.perf_counter()
            keys, cur = keys_and_outputs(self.model, self.tok, a, requests, self.templates, [l], out_layer=L)
            s1 = time.perf_counter()
            K = keys[l].T  # [d_ff, n]
            R = (zs - cur.double()).T / (len(layers) - i)  # [d, n]
            if self.method == "memit":
                delta, A = memit_delta(K, R, self.covs[l], hp.mom2_update_weight)
            else:
                delta, A = alphaedit_delta(K, R, self.projectors[l], self.cache_c.get(l), hp.L2)
            W = a.weight_view(l)
            with torch.no_grad():
                W += delta.to(W.dtype)
            if self.diagnostics:
                report.condition[l] = condition_number(A)
            report.delta_norm[l] = float(delta.norm())
            t_keys += s1 - s0
            t_solve += time.perf_counter() - s1
        s0 = time.perf_counter()
        keys, cur = keys_and_outputs(self.model, self.tok, a, requests, self.templates, layers, out_layer=L)
        if self.method == "alphaedit":
            for l in layers:
                K = keys[l].T
                self.cache_c[l] += K @ K.T
        t_keys += time.perf_counter() - s0
        report.residual_left = float(((tr.z - cur).norm(dim=-1) / (tr.z - tr.h0).norm(dim=-1).clamp_min(1e-12)).mean())
        for l in layers:
            report.total_norm[l] = float((a.weight_view(l) - self.original[l]).norm())
            report.weight_norm[l] = float(self.original[l].norm())
        report.seconds_keys, report.seconds_solve = t_keys, t_solve
        self.batches_done += 1
        self.case_ids.extend(r.case_id for r in requests)
        report.edits_done = len(self.case_ids)
        self.reports.append(report)
        return report

    def run(self, requests: list[EditRequest], *, batch_size: int | None = None, checkpoint: str | Path | None = None,
            on_batch: Callable[["Editor", list[EditRequest], BatchReport], None] | None = None,
            stop_after: int | None = None, deadline: float | None = None) -> list[BatchReport]:
        """Edit `requests` sequentially in batches. With `checkpoint`, the state is saved after every batch and
        a run that finds a checkpoint there resumes after its last batch (its edited case ids must be a prefix of
        `requests`). `stop_after` ends after that many batches in total (for tests of interruption); `deadline`
        (a `time.time()` value) starts no new batch after it: a later call resumes from the checkpoint."""
        batch_size = batch_size or self.hp.batch_size
        if checkpoint is not None and (Path(checkpoint) / "state.json").exists():
            self.load(checkpoint)
            done = [r.case_id for r in requests[: len(self.case_ids)]]
            if done != self.case_ids:
                raise ValueError(f"checkpoint {checkpoint} holds edits of other requests than the first "
                                 f"{len(self.case_ids)} given")
        batches = [requests[i : i + batch_size] for i in range(0, len(requests), batch_size)]
        bar = tqdm(total=len(batches), initial=self.batches_done, desc=f"{self.method} batches", disable=not self.progress)
        for batch in batches[self.batches_done :]:
            if stop_after is not None and self.batches_done >= stop_after:
                break
            if deadline is not None and time.time() >= deadline:
                break
            report = self.edit_batch(batch)
            if on_batch is not None:  # before the checkpoint: an interrupted callback is redone on resume
                on_batch(self, batch, report)
            if checkpoint is not None:
                self.save(checkpoint)
            bar.update(1)
        bar.close()
        return self.reports

    # --------------------------------------------------------------------------------------------- state
    def restore(self) -> None:
        """Put the original weights back and forget every edit."""
        with torch.no_grad():
            for l, w in self.original.items():
                self.adapter.weight_view(l).copy_(w)
        for c in self.cache_c.values():
            c.zero_()
        self.batches_done, self.case_ids, self.reports = 0, [], []

    def weight_deltas(self) -> dict[int, torch.Tensor]:
        """W_l − W_l⁰ for each edited layer: {layer: [d_model, d_ff]}."""
        return {l: self.adapter.weight_view(l).detach() - w for l, w in self.original.items()}

    def save(self, path: str | Path) -> None:
        """Edited weights, cache_c, templates and progress; written to a temporary folder then swapped in."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tensors = {f"weight.{l}": self.adapter.weight_view(l).detach().contiguous().clone() for l in self.hp.layers}
        tensors |= {f"cache_c.{l}": c.contiguous() for l, c in self.cache_c.items()}
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps({
            "method": self.method, "hparams": self.hp.to_dict(), "templates": self.templates,
            "batches_done": self.batches_done, "case_ids": self.case_ids,
            "reports": [asdict(r) for r in self.reports]}, indent=1))
        old = path.with_name(path.name + ".old")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)

    def load(self, path: str | Path) -> None:
        """Resume from `save`: same method, hparams and templates required."""
        path = Path(path)
        meta = json.loads((path / "state.json").read_text())
        if meta["method"] != self.method or meta["hparams"] != self.hp.to_dict():
            raise ValueError(f"checkpoint {path} was made with method {meta['method']!r} and other hparams")
        tensors = load_file(str(path / "state.safetensors"))
        with torch.no_grad():
            for l in self.hp.layers:
                self.adapter.weight_view(l).copy_(tensors[f"weight.{l}"])
        for l in self.cache_c:
            self.cache_c[l] = tensors[f"cache_c.{l}"].clone()
        self.templates = meta["templates"]
        self.batches_done, self.case_ids = meta["batches_done"], meta["case_ids"]
        self.reports = [BatchReport(**{**r, **{k: {int(i): v for i, v in r[k].items()} for k in
                                              ("delta_norm", "total_norm", "weight_norm", "condition")}})
                        for r in meta["reports"]]

