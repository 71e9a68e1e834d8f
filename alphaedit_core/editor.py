"""Sequential batched editing with AlphaEdit or MEMIT. All state (original weights, the accumulated constraint
`cache_c` of earlier edits, progress) lives in one `Editor`; it can restore the model, save and resume.

Per batch (the reference's `apply_AlphaEdit_to_model` / `execute_memit`):
  1. target values z at the last edited layer L (`targets.compute_targets`);
  2. for each edited layer l, in order: keys K at l and the current layer-L output at the subject, residual
     R = (z − current) / (number of layers left), Δ from `solve`, W_l += Δ; where the MLP output is normalised
     before it joins the residual (Gemma2/3's post-feedforward norm) R is first translated into the change of W k
     that moves the norm's output by R (`postnorm.value_residual`), otherwise it is used as it is;
  3. AlphaEdit (and sequential MEMIT): keys recomputed on the edited model, cache_c[l] += K Kᵀ.
Methods: "alphaedit" (P and cache_c), "alphaedit_no_cache" (P, without cache_c: an ablation), "memit", and two
more for the paper's plug-in claim: "memit_projected" (MEMIT's Δ followed by Δ ← Δ P, the paper's "one line") and
"memit_seq" (the official repository's sequential MEMIT: λ C + cache_c + K Kᵀ, no P).

Devices: every tensor that belongs to edited layer l (its projector or second moment, cache_c[l], its keys, the
residuals written into it, the solve and Δ) lives on l's device (`ModelAdapter.layer_device(l)`, the device of W_l);
the targets z, h0 and the residual stream read at L live on L's device. Projectors and second moments are moved
there once, when the editor is built; cache_c is allocated there. So a model on one accelerator, or split across
several by a device map (`device_map="auto"`), is edited where its weights are. The solves run in float64 on that
device (fast on data-centre GPUs, slow on consumer ones, whose float64 throughput is a small fraction of float32),
which avoids moving the [d_ff, d_ff] state off the device at every batch. Checkpoints and snapshots hold CPU
copies and are loaded back onto each layer's device. Offloaded layers (weights on the "meta" device, e.g.
`device_map="auto"` with CPU/disk offload) cannot be edited in place: a ValueError names them.

Stabilisers (hparams, all off by default): `target_stop="most_probable"` (ENCORE's early stopping, in step 1),
`norm_constraint` μ (ENCORE's penalty μ‖Δ‖²_F on each update, in step 2), `value_anchor="nas"` (Norm-Anchor
Scaling of the targets between steps 1 and 2). NAS's reference norm is taken from the unedited model: the
upper-trimmed mean ‖v*‖ of the first batch's targets, solved before any edit (NAS takes 1,000 CounterFact requests
with the bare prompt; here the run's own first batch, hparams and templates); it is kept in checkpoints and
snapshots, so a resumed run anchors to the same number.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .arch import ModelAdapter
from .hparams import EditHParams
from .keys import keys_and_outputs
from .postnorm import post_mlp_norms, value_residual
from .projection import Projector
from .prompts import context_templates
from .requests import EditRequest, check_batch
from .solve import alphaedit_delta, condition_number, memit_delta
from .targets import (anchor_reference, anchor_values, compute_targets, compute_targets_reference, mlp_outputs,
                      value_vectors)

METHODS = ("alphaedit", "alphaedit_no_cache", "memit", "memit_projected", "memit_seq")
USES_COV = frozenset({"memit", "memit_projected", "memit_seq"})  # solve with λ C (MEMIT's)
USES_P = frozenset({"alphaedit", "alphaedit_no_cache", "memit_projected"})  # need a projector per layer
ACCUMULATES = frozenset({"alphaedit", "memit_seq"})  # keep cache_c, the keys of earlier batches


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
    target_shift_mean: float = 0.0  # mean ‖z − h0‖ of the targets written (after anchoring, if any)
    anchor_skipped: int = 0  # value_anchor "nas": requests left unedited (‖v*‖ > value_anchor_skip × reference)


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
        if method in USES_COV:
            missing = [l for l in hparams.layers if covs is None or l not in covs]
            if missing:
                raise ValueError(f"{method} needs the second moments of layers {missing}")
        if method in USES_P:
            missing = [l for l in hparams.layers if projectors is None or l not in projectors]
            if missing:
                raise ValueError(f"{method} needs a projector for layers {missing}")
        self.devices = {l: self.adapter.layer_device(l) for l in hparams.layers}  # where each edited layer lives
        offloaded = [l for l, d in self.devices.items() if d.type == "meta"]
        if offloaded:
            raise ValueError(f"the weights of edited layer(s) {offloaded} are offloaded (on the 'meta' device): they "
                             f"cannot be edited in place; load the model so that layers {list(hparams.layers)} sit "
                             f"on a real device (e.g. a device_map without CPU/disk offload)")
        projectors, covs = projectors or {}, covs or {}
        self.statistics = ckpt.statistics_sha256(
            ([covs[l] for l in hparams.layers] if method in USES_COV else [])
            + ([projectors[l].basis for l in hparams.layers] if method in USES_P else []))
        # the state each layer's solve reads, moved once to that layer's device (the caller's objects are untouched);
        # what the method does not read is not kept: an AlphaEdit editor holds no C (5 x [8960, 8960] float32, 1.6 GB,
        # on Qwen2.5-1.5B), a MEMIT editor no projector
        covs = {l: c.to(self.devices[l]) if l in self.devices else c for l, c in covs.items()} \
            if method in USES_COV else {}
        projectors = {l: p.to(self.devices[l]) if l in self.devices else p for l, p in projectors.items()} \
            if method in USES_P else {}
        self.projectors, self.covs = projectors, covs
        self.fast_targets, self.diagnostics, self.progress = fast_targets, diagnostics, progress
        self.original = {l: self.adapter.weight_view(l).detach().clone() for l in hparams.layers}
        from .models import model_fingerprint

        self.fingerprint = model_fingerprint(model)  # of the unedited model: a checkpoint of another is refused
        self.batch_size: int | None = None  # set by run(); recorded in checkpoints
        self.cache_c = {l: torch.zeros(self.adapter.d_ff, self.adapter.d_ff, device=self.devices[l])
                        for l in hparams.layers} if method in ACCUMULATES else {}
        self.templates = templates if templates is not None else context_templates(
            model, tok, length=hparams.context_template_length, count=hparams.context_template_count,
            seed_words=hparams.context_template_seeds, seed=hparams.seed)
        self.anchor_norm: float | None = None  # NAS reference ‖v*‖ of the unedited model (value_anchor "nas")
        # edited layers whose MLP output passes through a norm before the residual (postnorm.py); none on LLaMA
        self.post_norms = post_mlp_norms(model, tok, self.adapter, list(hparams.layers))
        if hparams.value_anchor == "nas" and self.post_norms:
            raise ValueError(f"value_anchor='nas' rescales v* = v0 + (z − h0), which assumes the MLP output joins the "
                             f"residual as it is; layers {sorted(self.post_norms)} of this model normalise it first "
                             f"(postnorm.py), so the anchored targets would be wrong: leave value_anchor 'off' here")
        self.batches_done = 0
        self.case_ids: list = []
        self.request_hashes: list[str] = []
        self.reports: list[BatchReport] = []

    # --------------------------------------------------------------------------------------------- set-up
    @classmethod
    def prepare(cls, model, tok, hparams: EditHParams, *, method: str = "alphaedit", corpus=None,
                fingerprint: str | None = None, stats_root: Path | None = None, **kwargs) -> "Editor":
        """Compute (or read from the cache) the statistics of `hparams.mom2_corpus` and build the editor. The second
        moments come back on the CPU and the projectors are built there (float64 eigendecomposition), so P is the
        same whatever the model's placement; the editor then moves each to its layer's device."""
        from .corpus import get_corpus
        from .models import model_fingerprint
        from .projection import projector_from_cov
        from .stats import layer_stats

        adapter = ModelAdapter.from_model(model)
        hparams.check_model(adapter.n_layers)
        corpus = corpus if corpus is not None else get_corpus(hparams.mom2_corpus)
        covs = layer_stats(model, tok, adapter, hparams.layers, corpus,
                           fingerprint=fingerprint or model_fingerprint(model), n_tokens=hparams.mom2_n_tokens,
                           seq_len=hparams.mom2_seq_len, dtype=hparams.mom2_dtype, root=stats_root,
                           progress=kwargs.get("progress", True))
        projectors = {} if method not in USES_P else {  # MEMIT uses C itself: a degenerate P must not stop it
            l: projector_from_cov(c, threshold=hparams.nullspace_threshold, mode=hparams.nullspace_mode,
                                  energy=hparams.nullspace_energy, layer=l) for l, c in covs.items()}
        return cls(model, tok, hparams, method=method, projectors=projectors, covs=covs, **kwargs)

    # --------------------------------------------------------------------------------------------- editing
    def edit_batch(self, requests: list[EditRequest], journal: ckpt.TargetJournal | None = None) -> BatchReport:
        """Apply one batch of edits. With a `journal` (`run` gives one with a checkpoint) the targets' finished
        chunks are kept in it and read back from it (see `compute_targets`); its seconds count in the report."""
        if not requests:
            raise ValueError("empty batch of requests")
        check_batch(requests)
        hp, a = self.hp, self.adapter
        layers, L = hp.layers, hp.layers[-1]
        t0 = time.perf_counter()
        if self.fast_targets:
            tr = compute_targets(self.model, self.tok, a, requests, self.templates, hp, progress=self.progress,
                                 journal=journal)
        else:
            tr = compute_targets_reference(self.model, self.tok, a, requests, self.templates, hp,
                                           progress=self.progress)
        z, skipped = self._anchor(requests, tr.z, tr.h0)
        t1 = time.perf_counter()
        t_keys = t_solve = 0.0
        report = BatchReport(self.batches_done, len(requests), 0, t1 - t0 + tr.seconds_journal, 0.0, 0.0,
                             float(tr.steps.float().mean()), float(tr.loss.mean()))
        report.target_shift_mean = float((z - tr.h0).norm(dim=-1).mean())
        report.anchor_skipped = int(skipped.sum())
        zs = z.double()
        for i, l in enumerate(layers):
            s0 = time.perf_counter()
            keys, cur = keys_and_outputs(self.model, self.tok, a, requests, self.templates, [l], out_layer=L)
            s1 = time.perf_counter()
            K = keys[l].T  # [d_ff, n], on l's device
            R = ((zs - cur.double()).T / (len(layers) - i)).to(self.devices[l])  # [d, n]: from L's device to l's
            if l in self.post_norms:  # Gemma2/3: the MLP output is normalised before it joins the residual
                V = mlp_outputs(self.model, self.tok, a, requests, self.templates[0], l).T.double()  # [d, n], bare
                R = value_residual(self.post_norms[l], V, R)  # the change of W k that moves f(W k) by R
            if self.method in USES_COV:
                delta, A = memit_delta(K, R, self.covs[l], hp.mom2_update_weight, hp.norm_constraint,
                                       self.cache_c.get(l))
                if self.method == "memit_projected":  # the plug-in: the update's rows projected, Δ ← Δ P
                    delta = self.projectors[l].apply(delta.T).T
            else:
                delta, A = alphaedit_delta(K, R, self.projectors[l], self.cache_c.get(l), hp.L2, hp.norm_constraint)
            W = a.weight_view(l)
            with torch.no_grad():
                W += delta.to(W.device, W.dtype)
            if self.diagnostics:
                report.condition[l] = condition_number(A)
            report.delta_norm[l] = float(delta.norm())
            t_keys += s1 - s0
            t_solve += time.perf_counter() - s1
        s0 = time.perf_counter()
        keys, cur = keys_and_outputs(self.model, self.tok, a, requests, self.templates, layers, out_layer=L)
        if self.method in ACCUMULATES:
            for l in layers:
                K = keys[l].T
                self.cache_c[l] += K @ K.T
        t_keys += time.perf_counter() - s0
        report.residual_left = float(((z - cur).norm(dim=-1) / (z - tr.h0).norm(dim=-1).clamp_min(1e-12)).mean())
        for l in layers:
            report.total_norm[l] = float((a.weight_view(l) - self.original[l]).norm())
            report.weight_norm[l] = float(self.original[l].norm())
        report.seconds_keys, report.seconds_solve = t_keys, t_solve
        self.batches_done += 1
        self.case_ids.extend(r.case_id for r in requests)
        self.request_hashes.extend(ckpt.request_sha256(r) for r in requests)
        report.edits_done = len(self.case_ids)
        self.reports.append(report)
        return report

    def _anchor(self, requests: list[EditRequest], z: torch.Tensor, h0: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets after Norm-Anchor Scaling (value_anchor "nas"), and which requests it skipped; z unchanged when
        off. The reference is set from this batch when none is known and the model is still unedited."""
        if self.hp.value_anchor == "off":
            return z, torch.zeros(len(z), dtype=torch.bool)
        v0 = mlp_outputs(self.model, self.tok, self.adapter, requests, self.templates[0], self.hp.layers[-1])
        if self.anchor_norm is None:
            if self.batches_done:
                raise RuntimeError("value_anchor 'nas' needs the reference norm of the unedited model: it is set by "
                                   "the first batch (or read from a checkpoint/snapshot), not after edits")
            self.anchor_norm = anchor_reference(value_vectors(z, h0, v0).norm(dim=-1))
        return anchor_values(z, h0, v0, self.anchor_norm, self.hp.value_anchor_skip)

    def run(self, requests: list[EditRequest], *, batch_size: int | None = None, checkpoint: str | Path | None = None,
            on_batch: Callable[["Editor", list[EditRequest], BatchReport], None] | None = None,
            stop_after: int | None = None, deadline: float | None = None,
            first_batch_cache: str | Path | None = None) -> list[BatchReport]:
        """Edit `requests` sequentially in batches. With `checkpoint`, the state is saved after every batch and
        a run that finds a checkpoint there resumes after its last batch, once the checkpoint is verified to
        belong to this run (same model, method, hparams, statistics, batch size, and requests: the edited ones
        must be, in order, the first of `requests`); otherwise `CheckpointMismatch` names the field.
        `stop_after` ends after that many batches in total (for tests of interruption); `deadline` (a
        `time.time()` value) starts no new batch after it: a later call resumes from the checkpoint.
        While it may write, the run holds the checkpoint's `WriterLock`: a second writer gets `CheckpointBusy`.
        A run with nothing left to do (all edited, `stop_after` reached, `deadline` passed) only reads.
        `first_batch_cache` (with `checkpoint`): a folder where the first batch's targets are shared with the other
        streams of the same unedited model and target settings (`checkpoint.FirstBatchTargets`)."""
        batch_size = self.hp.batch_size if batch_size is None else batch_size
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be a positive integer")
        check_batch(requests)  # the whole stream: a fact edited twice to different targets, a reused case id
        loaded = ckpt.current_version(checkpoint) if checkpoint is not None else None
        if loaded is not None:
            self.load(checkpoint, requests=requests, batch_size=batch_size)
        elif self.batches_done and self.batch_size not in (None, batch_size):
            raise ValueError(f"this editor ran with batch_size={self.batch_size}; asked for {batch_size}")
        self.batch_size = batch_size
        batches = [requests[i : i + batch_size] for i in range(0, len(requests), batch_size)]

        def more() -> bool:
            return (self.batches_done < len(batches) and (stop_after is None or self.batches_done < stop_after)
                    and (deadline is None or time.time() < deadline))

        lock = None
        if checkpoint is not None and more():  # a run with nothing left to do only reads: no lock, no cleanup
            lock = ckpt.WriterLock(checkpoint).acquire()
            now = ckpt.current_version(checkpoint)
            if now != loaded:
                lock.release()
                raise ckpt.CheckpointBusy(f"checkpoint {checkpoint} was written by another run after this one "
                                          f"read it ({loaded} then, {now} now)")
            ckpt.recover(checkpoint)  # what a killed writer left behind
            self._journal(checkpoint).prune()  # keeps only the targets of the batch to be edited now
        bar = tqdm(total=len(batches), initial=self.batches_done, desc=f"{self.method} batches", disable=not self.progress)
        try:
            while more():
                batch = batches[self.batches_done]
                journal = self._journal(checkpoint, first_batch_cache) if checkpoint is not None else None
                report = self.edit_batch(batch, journal)
                if on_batch is not None:  # before the checkpoint: an interrupted callback is redone on resume
                    on_batch(self, batch, report)  # (with the batch's targets read back from the journal)
                if checkpoint is not None:
                    self.save(checkpoint)
                    journal.prune(keep_own=False)
                bar.update(1)
        finally:
            bar.close()
            if lock is not None:
                lock.release()
        return self.reports

    # --------------------------------------------------------------------------------------------- state
    def restore(self) -> None:
        """Put the original weights back and forget every edit."""
        with torch.no_grad():
            for l, w in self.original.items():
                self.adapter.weight_view(l).copy_(w)
        for c in self.cache_c.values():
            c.zero_()
        self.batches_done, self.case_ids, self.request_hashes, self.reports = 0, [], [], []
        self.batch_size = None
        self.anchor_norm = None

    def weight_deltas(self) -> dict[int, torch.Tensor]:
        """W_l − W_l⁰ for each edited layer: {layer: [d_model, d_ff]}."""
        return {l: self.adapter.weight_view(l).detach() - w for l, w in self.original.items()}

    def _journal(self, checkpoint: str | Path, first_batch_cache: str | Path | None = None
                 ) -> ckpt.TargetJournal | ckpt.FirstBatchTargets:
        """The target journal of the next batch: bound to the run's identity and the requests edited so far, which
        fix the edited weights the targets are optimised on; for the first batch, with `first_batch_cache`, also
        shared with the other streams of the unedited model."""
        state = ckpt.digest({**self.identity(), "edited": self.request_hashes, "batch_size": self.batch_size})
        own = ckpt.TargetJournal(checkpoint, self.batches_done, state)
        if first_batch_cache is None or self.batches_done or not self.fast_targets:
            return own
        L = self.hp.layers[-1]
        shared = ckpt.first_batch_state(self.fingerprint, self.hp.to_dict(), self.templates, self.batch_size,
                                        str(self.adapter.layer_device(L)), str(self.adapter.weight_view(L).dtype),
                                        torch.get_num_threads())
        return ckpt.FirstBatchTargets(own, ckpt.TargetJournal(first_batch_cache, 0, shared))

    def identity(self) -> dict[str, Any]:
        """What a checkpoint of this run must match to be resumed by it."""
        return {"method": self.method, "model_fingerprint": self.fingerprint, "statistics_sha256": self.statistics,
                "hparams": self.hp.to_dict(), "templates": self.templates}

    def save(self, path: str | Path) -> None:
        """Edited weights, cache_c and progress, with the run's identity and a sha256 of every tensor; crash-safe
        (see `checkpoint.write_version`)."""
        tensors = {f"weight.{l}": self.adapter.weight_view(l) for l in self.hp.layers}
        tensors |= {f"cache_c.{l}": c for l, c in self.cache_c.items()}
        meta = {**self.identity(), "batch_size": self.batch_size, "batches_done": self.batches_done,
                "request_sha256": self.request_hashes, "case_ids": self.case_ids,
                "reports": [asdict(r) for r in self.reports], **self._anchor_meta()}
        ckpt.write_version(path, self.batches_done, tensors, meta)

    def load(self, path: str | Path, *, requests: list[EditRequest] | None = None, batch_size: int | None = None
             ) -> None:
        """Resume from `save`. Refuses (`CheckpointMismatch`, naming the field and both values) a checkpoint of
        another model, method, statistics, hparams or templates, of another batch size (when given), or whose
        edited requests are not the first of `requests` (when given); `CheckpointError` for a corrupted one."""
        meta, tensors = ckpt.read_version(path)
        expected = self.identity()
        if batch_size is not None:
            expected["batch_size"] = batch_size
        ckpt.verify_identity(Path(path), meta, expected)
        if requests is not None:
            ckpt.verify_requests(Path(path), meta["request_sha256"], requests)
        self._set_state(tensors, meta)
        self.batches_done, self.batch_size = meta["batches_done"], meta["batch_size"]
        self.reports = [BatchReport(**{**r, **{k: {int(i): v for i, v in r[k].items()} for k in
                                              ("delta_norm", "total_norm", "weight_norm", "condition")}})
                        for r in meta["reports"]]

    def _anchor_meta(self) -> dict[str, float]:
        """The NAS reference norm for a checkpoint's metadata (nothing when anchoring is off or not yet set)."""
        return {"value_anchor_norm": self.anchor_norm} if self.anchor_norm is not None else {}

    def _set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Edited weights, cache_c, the edited requests and the NAS reference norm from a checkpoint or snapshot."""
        with torch.no_grad():
            for l in self.hp.layers:
                self.adapter.weight_view(l).copy_(tensors[f"weight.{l}"])
        for l in self.cache_c:  # a checkpoint holds CPU tensors: back onto the layer's device
            self.cache_c[l] = tensors[f"cache_c.{l}"].to(self.devices[l], copy=True)
        self.case_ids, self.request_hashes = list(meta["case_ids"]), list(meta["request_sha256"])
        self.anchor_norm = meta.get("value_anchor_norm")

    # --------------------------------------------------------------------------------------------- snapshots
    def save_snapshot(self, path: str | Path, **extra: Any) -> Path:
        """The edited layers' weights and cache_c now, in one small safetensors file, with the run's identity, the
        edited requests and `extra` (e.g. the code version) as metadata: `load_snapshot` re-creates this state
        exactly, without re-editing. ([d_model, d_ff] and [d_ff, d_ff] float32 per layer: 65 MB for SmolLM2.)"""
        tensors = {f"weight.{l}": self.adapter.weight_view(l) for l in self.hp.layers}
        tensors |= {f"cache_c.{l}": c for l, c in self.cache_c.items()}
        meta = {**self.identity(), "batch_size": self.batch_size, "batches_done": self.batches_done,
                "edits": len(self.case_ids), "request_sha256": self.request_hashes, "case_ids": self.case_ids,
                **self._anchor_meta(), **extra}
        return ckpt.write_snapshot(path, tensors, meta)

    def load_snapshot(self, path: str | Path) -> dict[str, Any]:
        """Put the model (and cache_c) in the state of a snapshot of this run; returns its metadata. The reports
        of the batches are not in a snapshot: `reports` is emptied."""
        meta, tensors = ckpt.read_snapshot(path)
        ckpt.verify_identity(Path(path), meta, self.identity())
        self._set_state(tensors, meta)
        self.batches_done, self.batch_size, self.reports = meta["batches_done"], meta["batch_size"], []
        return meta
