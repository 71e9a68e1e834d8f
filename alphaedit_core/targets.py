"""Target values z: the residual stream at the last edited layer L, at the subject's last token, that makes the
model say the new target (the reference's `compute_z`).

For each request a vector δ ([d_model]) is added to the output of layer L at the subject's last token of every
prompt of the request (T context templates + the KL prompt "{subject} is a"); δ minimises

    loss = mean_t NLL(target | template_t)                                 (read at layer v_loss_layer)
         + kl_factor · KL(p_δ(· | "{s} is a") ‖ p_0(· | "{s} is a"))
         + v_weight_decay · ‖δ‖ / ‖h0‖²                                     (norm not squared, as the reference)

with Adam (lr v_lr), stopping when loss < early_stop_loss or after v_num_grad_steps − 1 updates, ‖δ‖ clamped to
clamp_norm_factor · ‖h0‖ after each update; z = h0 + δ, h0 = layer-L output of the bare prompt.

Most-probable early stopping (`target_stop="most_probable"`; ENCORE, Gupta et al. 2025: stop optimising a request's
target once the new object is the most probable continuation on its prompts): a request also stops at the step
whose forward pass finds, for the `most_probable_count`-th time (cumulative), every token of the new object to be
the argmax at its label position (teacher-forced: the label positions of the loss) on every rewriting prompt of the
request (the bare prompt and each context template; not the KL prompt). The loss threshold and the step cap stay
in force, as in the authors' code (knowledge-editing-regularization, encore/compute_z.py: `prob_cutoff < 0` counts
the evaluations with all targets at rank 1 and breaks at |prob_cutoff|, before the update; `loss < 5e-2` still
breaks; their files use prob_cutoff −2 for Llama3-8B, −3 Llama2-7B, −4 GPT2-XL). Their check slices away the first
rewriting prompt (`log_probs[1:]`, commented as removing the KL prompt, which is not in that tensor); here every
rewriting prompt is checked. It can only stop a request earlier than the loss rule, never later.

Norm-Anchor Scaling (`anchor_values`, applied by the Editor; Liu et al. 2026, "rescaling each solved value vector
to an original-model reference norm"): the value vector is the MLP's share of z, v* = v0 + δ, with v0 the output
of layer L's MLP output projection at the subject's last token of the bare prompt on the current model, so that
z = (h0 − v0) + v*; v* is rescaled to the reference norm and z rebuilt from it (as the authors' code,
SasyaTitech/NAS, NAS/compute_z.py: `v_star = delta + v0`, `scale_vector_to_norm(v_star, mean_norm)`, target =
(target_init − v0) + v_star, and v_star = v0 (the request left unedited) when ‖v*‖ > 2 × the reference). The
reference is the mean ‖v*‖ over requests solved on the unedited model with the largest 5% dropped
(util/vstar_stats.py: 1,000 CounterFact requests, upper-trimmed mean); see `anchor_reference`.

Two implementations with the same result:
- `compute_targets_reference`: one request at a time, a full forward per step (what the reference does).
- `compute_targets`: many requests at once. Per chunk of requests it runs the model once over the prompts
  (layers below L never see δ), caches the keys/values of every position before the subject's last token in
  layers above L (δ cannot reach them: attention is causal), and each step re-runs only layers L+1..loss layer on
  the positions from the subject's last token on, with the logits only where the loss reads them. Each request
  keeps its own Adam state and stops on its own; stopped requests leave the chunk when it is rebuilt.
  The replayed rows are grouped by their number of suffix columns, so no padded column is replayed, and the KL rows
  stop at the subject's last token (where the KL is read: the tokens after it cannot change it).
  (benchmarks/results/targets_speed_changes.md: what each candidate change saves, kept or not.)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from .arch import ModelAdapter, StopForward, at_positions, layer_output, replace_layer_output, run_until, stop_hook
from .hparams import EditHParams
from .prompts import Tokenized, subject_last_index, target_ids, tokenize
from .requests import EditRequest

KL_PROMPT = "{} is a"
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass
class TargetResult:
    z: torch.Tensor  # [n, d_model] target values
    h0: torch.Tensor  # [n, d_model] unedited layer-L output (bare prompt)
    steps: torch.Tensor  # [n] Adam updates taken
    loss: torch.Tensor  # [n] last loss evaluated
    seconds_journal: float = 0.0  # what the chunks read back from a journal took when they were optimised


class ChunkJournal(Protocol):
    """Where `compute_targets` keeps finished chunks (`checkpoint.TargetJournal`): `load` gives a chunk's tensors
    (z, h0, steps, loss) and the seconds they took, or None; `save` keeps them."""

    def load(self, requests: Sequence[EditRequest]) -> tuple[dict[str, torch.Tensor], float] | None: ...

    def save(self, requests: Sequence[EditRequest], tensors: dict[str, torch.Tensor], seconds: float) -> Any: ...


def _most_probable(hp: EditHParams) -> bool:
    return hp.target_stop == "most_probable"


def all_argmax(logits: torch.Tensor, labels: torch.Tensor, label_request: torch.Tensor, n: int) -> torch.Tensor:
    """[n] bool: for each request, is every label the argmax of its row? logits [P, V] (or log-probs), labels and
    label_request [P]."""
    wrong = (logits.argmax(-1) != labels).to(torch.long)
    return torch.zeros(n, dtype=torch.long, device=logits.device).index_add(0, label_request, wrong) == 0


# ------------------------------------------------------------------------------------------------ shared pieces
@dataclass
class _Rows:
    """All prompts of some requests, request-major: T rewriting rows then 1 KL row per request."""

    tok: Tokenized
    request_of_row: torch.Tensor  # [B]
    label_rows: torch.Tensor  # [P] row of each supervised position
    label_pos: torch.Tensor  # [P] position whose logits predict the label
    labels: torch.Tensor  # [P]
    label_weight: torch.Tensor  # [P] 1 / (len(target) · T): sums to the mean NLL per request
    label_request: torch.Tensor  # [P]
    kl_rows: torch.Tensor  # [R] the KL row of each request
    first_rows: torch.Tensor  # [R] the bare-template row of each request


def _build_rows(tok, requests: list[EditRequest], templates: list[str]) -> _Rows:
    n_t = len(templates)
    texts, subjects, suffixes, tgts = [], [], [], []
    for r in requests:
        tgt = target_ids(tok, r.target_new)
        tgts.append(tgt)
        for t in templates:
            texts.append(t.format(r.prompt))
            subjects.append(r.subject)
            suffixes.append(tgt[:-1])
        texts.append(KL_PROMPT)
        subjects.append(r.subject)
        suffixes.append([])
    t = tokenize(tok, texts, subjects, suffixes)
    per = n_t + 1
    rows, pos, labels, weight, req = [], [], [], [], []
    for i, tgt in enumerate(tgts):
        for j in range(n_t):
            b = i * per + j
            start = t.lengths[b] - len(tgt)
            for k, label in enumerate(tgt):
                rows.append(b)
                pos.append(start + k)
                labels.append(label)
                weight.append(1.0 / (len(tgt) * n_t))
                req.append(i)
    n = len(requests)
    return _Rows(
        tok=t,
        request_of_row=torch.arange(n).repeat_interleave(per),
        label_rows=torch.tensor(rows),
        label_pos=torch.tensor(pos),
        labels=torch.tensor(labels),
        label_weight=torch.tensor(weight),
        label_request=torch.tensor(req),
        kl_rows=torch.arange(n) * per + n_t,
        first_rows=torch.arange(n) * per,
    )


def _losses(
    hp: EditHParams,
    rows: _Rows,
    adapter: ModelAdapter,
    hidden_at_labels: torch.Tensor,  # [P, d] last-layer hidden states (before the final norm) at label positions
    hidden_at_kl: torch.Tensor,  # [R, d] at the KL rows' subject position
    kl_init: torch.Tensor | None,  # [R, V] log-probs of the unedited model, None on the first step
    delta: torch.Tensor,  # [R, d]
    h0_norm: torch.Tensor,  # [R]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-request loss [R] (on delta's device), the KL log-probs [R, V], and (target_stop "most_probable" only, else
    None) whether every label is the argmax, per request [R] (on the logits' device)."""
    n = delta.shape[0]
    logp = adapter.logits(adapter.final_norm(hidden_at_labels)).float().log_softmax(-1)
    labels, label_request = rows.labels.to(logp.device), rows.label_request.to(logp.device)
    picked = logp.gather(1, labels[:, None])[:, 0]
    nll = torch.zeros(n, device=logp.device).index_add(
        0, label_request, -picked * rows.label_weight.to(logp.device))
    hit = all_argmax(logp.detach(), labels, label_request, n) if _most_probable(hp) else None
    kl_logp = adapter.logits(adapter.final_norm(hidden_at_kl)).float().log_softmax(-1)
    if kl_init is None:
        kl_init = kl_logp.detach()
    kl = (kl_logp.exp() * (kl_logp - kl_init)).sum(-1)  # KL(current ‖ unedited), one prompt per request
    wd = delta.norm(dim=-1) / h0_norm**2
    return (nll + hp.kl_factor * kl).to(delta.device) + hp.v_weight_decay * wd, kl_init, hit


def _clamp(delta: torch.Tensor, max_norm: torch.Tensor) -> torch.Tensor:
    norm = delta.norm(dim=-1, keepdim=True)
    return torch.where(norm > max_norm[:, None], delta * max_norm[:, None] / norm, delta)


# ------------------------------------------------------------------------------------------------ reference
def compute_targets_reference(
    model, tok, adapter: ModelAdapter, requests: list[EditRequest], templates: list[str], hp: EditHParams,
    progress: bool = False,
) -> TargetResult:
    """One request at a time, full forward per step, torch's Adam: the straightforward implementation."""
    L = hp.layers[-1]
    loss_layer = hp.loss_layer(adapter.n_layers)
    device, dev_L = adapter.input_device, adapter.layer_device(L)  # δ, z and h0 live with layer L
    zs, h0s, steps, losses = [], [], [], []
    for request in tqdm(requests, desc="targets (per request)", disable=not progress):
        rows = _build_rows(tok, [request], templates)
        ids, mask = rows.tok.input_ids.to(device), rows.tok.attention_mask.to(device)
        lookup = torch.tensor(rows.tok.subject_last, device=dev_L)
        all_rows = torch.arange(ids.shape[0], device=dev_L)
        delta = torch.zeros(1, adapter.d_model, device=dev_L, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=hp.v_lr, betas=ADAM_BETAS, eps=ADAM_EPS)
        state: dict = {}

        def add_delta(_m, _a, out):
            h = layer_output(out)
            if "h0" not in state:
                state["h0"] = h[0, lookup[0].to(h.device)].detach().clone().to(dev_L)
            add = torch.zeros_like(h)
            add[all_rows.to(h.device), lookup.to(h.device)] = delta[0].to(h.device, h.dtype)
            return replace_layer_output(out, h + add)

        def grab(_m, _a, out):
            state["out"] = layer_output(out)
            raise StopForward

        handles = [adapter.layers[L].register_forward_hook(add_delta),
                   adapter.layers[loss_layer].register_forward_hook(grab)]
        kl_init = None
        hits = 0  # evaluations with every target token the argmax (target_stop "most_probable")
        try:
            for it in range(hp.v_num_grad_steps):
                opt.zero_grad()
                try:
                    model(input_ids=ids, attention_mask=mask, use_cache=False)
                except StopForward:
                    pass
                out = state["out"]  # on the loss layer's device
                h0 = state["h0"]
                kl_rows = rows.kl_rows.to(dev_L)
                loss, kl_init, hit = _losses(
                    hp, rows, adapter, at_positions(out, rows.label_rows, rows.label_pos),
                    at_positions(out, kl_rows, lookup[kl_rows]),
                    kl_init, delta, h0.norm()[None])
                hits += int(hit is not None and bool(hit[0]))
                if loss.item() < hp.early_stop_loss or it == hp.v_num_grad_steps - 1:
                    break
                if _most_probable(hp) and hits >= hp.most_probable_count:
                    break
                loss.sum().backward()
                opt.step()
                with torch.no_grad():
                    delta.copy_(_clamp(delta, hp.clamp_norm_factor * h0.norm()[None]))
        finally:
            for h in handles:
                h.remove()
        zs.append((h0 + delta[0]).detach())
        h0s.append(h0)
        steps.append(it)
        losses.append(loss.item())
    return TargetResult(torch.stack(zs), torch.stack(h0s), torch.tensor(steps), torch.tensor(losses))


# ------------------------------------------------------------------------------------------------ fast version
class _FrozenPrefix:
    """Stands in for the KV cache while layers above L are replayed: returns the cached keys/values of the
    positions before the subject's last token, followed by the new ones."""

    def __init__(self, keys: dict[int, torch.Tensor], values: dict[int, torch.Tensor]):
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if layer_idx not in self.keys:  # no prefix at all
            return key_states, value_states
        return (torch.cat([self.keys[layer_idx], key_states], dim=-2),
                torch.cat([self.values[layer_idx], value_states], dim=-2))


def _cache_kv(cache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    return cache.key_cache[layer], cache.value_cache[layer]


class _Group:
    """Rows of a chunk replayed together. Rows are re-laid so that every row's subject-last token sits in the same
    column P (left padding): columns [0, P) are the prefix, run once with a KV cache; columns [P, P + W) are the
    suffix, replayed at each step. True positions go in `position_ids`, and within a row columns and positions
    differ by a constant, so relative distances (sliding-window masks) are those of the unpadded prompt."""

    def __init__(self, model, adapter: ModelAdapter, L: int, upper: list[int], ids: torch.Tensor,
                 lengths: torch.Tensor, lookup: torch.Tensor):
        from transformers import DynamicCache

        self.adapter, self.upper = adapter, upper
        top = upper[-1] if upper else L
        device = ids.device
        P, W = int(lookup.max()), int((lengths - lookup).max())
        shift = P - lookup
        cols = torch.arange(P + W, device=device)[None, :] - shift[:, None]  # source position of each column
        mask = ((cols >= 0) & (cols < lengths[:, None])).long()
        aligned = torch.where(mask.bool(), ids.gather(1, cols.clamp(0, ids.shape[1] - 1)), ids[:, :1])
        positions = cols.clamp(min=0)
        cache = DynamicCache(config=model.config)
        # 1. the prefix columns once: keys/values of every layer up to the loss layer (they never see δ)
        if P > 0:
            stop = adapter.layers[top].register_forward_hook(stop_hook)
            try:
                model(input_ids=aligned[:, :P], attention_mask=mask[:, :P], position_ids=positions[:, :P],
                      cache=cache, use_cache=True)
            except StopForward:
                pass
            finally:
                stop.remove()
        kv = {l: _cache_kv(cache, l) for l in upper} if P > 0 else {}
        self.prefix = _FrozenPrefix({l: k for l, (k, _) in kv.items()}, {l: v for l, (_, v) in kv.items()})
        # 2. the suffix columns against the cached prefix, capturing layer L's output and the arguments each upper
        #    layer receives (masks, position embeddings), to replay them at every step
        store: dict = {}
        handles = [adapter.layers[L].register_forward_hook(lambda _m, _a, out: store.__setitem__("hL", layer_output(out)))]
        for l in upper:
            handles.append(adapter.layers[l].register_forward_pre_hook(_capture_call(store, l, self.prefix),
                                                                       with_kwargs=True))
        handles.append(adapter.layers[top].register_forward_hook(stop_hook))
        try:
            model(input_ids=aligned[:, P:], attention_mask=mask, position_ids=positions[:, P:],
                  cache=cache, use_cache=True)
        except StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        self.calls = {l: store[l] for l in upper}
        self.hL = store["hL"].detach()  # [b, W, d]

    def replay(self, delta_rows: torch.Tensor) -> torch.Tensor:
        """Output of the loss layer [b, W, d] with δ ([b, d], one per row) added at the subject's last token."""
        h = self.hL.clone()
        h[:, 0] = h[:, 0] + delta_rows.to(h.device, h.dtype)
        for l in self.upper:
            args, kwargs = self.calls[l]
            h = layer_output(self.adapter.layers[l](h, *args, **kwargs))
        return h


GROUPINGS = ("single", "kl", "width")


class _Chunk:
    """Requests optimised together, with everything that does not depend on δ computed once.

    The KL prompt is read at the subject's last token only, and attention is causal: its later tokens ("is a")
    cannot change what is read there, so the KL rows stop at the subject's last token. Rows are replayed in groups
    (`grouping`): "width" puts rows with the same number of suffix columns together (no padding in the replayed
    columns), "kl" the KL rows apart from the rewriting rows, "single" all rows in one group, the KL rows whole (the
    layout before the groups, kept to measure against)."""

    def __init__(self, model, tok, adapter: ModelAdapter, requests: list[EditRequest], templates: list[str],
                 hp: EditHParams, grouping: str = "width", fused_head: bool = False):
        if grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}, not {grouping!r}")
        self.adapter, self.hp, self.fused_head = adapter, hp, fused_head
        L, top = hp.layers[-1], hp.loss_layer(adapter.n_layers)
        upper = list(range(L + 1, top + 1))
        # row bookkeeping on the input device (it indexes the ids); what indexes δ, h0 and the state of the requests
        # on layer L's device (`dev_L`); what indexes the loss layer's output on that layer's device (`dev_top`)
        device, dev_L, dev_top = adapter.input_device, adapter.layer_device(L), adapter.layer_device(top)
        rows = self.rows = _build_rows(tok, requests, templates)
        ids = rows.tok.input_ids.to(device)
        lookup = torch.tensor(rows.tok.subject_last, device=device)
        lengths = torch.tensor(rows.tok.lengths, device=device)
        kl_rows = rows.kl_rows.to(device)
        if grouping != "single":
            lengths[kl_rows] = lookup[kl_rows] + 1
        width = lengths - lookup
        if grouping == "width":
            key = width
        elif grouping == "kl":
            key = torch.zeros_like(width)
            key[kl_rows] = 1
        else:
            key = torch.zeros_like(width)
        keys = key.unique().tolist()
        group_of_row = torch.searchsorted(torch.tensor(keys, device=device), key)
        local = torch.zeros_like(key)
        members = []
        for g in range(len(keys)):
            idx = (group_of_row == g).nonzero()[:, 0]
            local[idx] = torch.arange(len(idx), device=device)
            members.append(idx)
        self.groups = [_Group(model, adapter, L, upper, ids[idx], lengths[idx], lookup[idx]) for idx in members]
        request_of_row = rows.request_of_row.to(device)
        self.group_requests = [request_of_row[idx].to(dev_L) for idx in members]
        # label positions, group by group, in suffix coordinates; the label metadata in the same order
        label_rows = rows.label_rows.to(device)
        label_group = group_of_row[label_rows]
        order = torch.cat([(label_group == g).nonzero()[:, 0] for g in range(len(keys))])
        label_rows = label_rows[order]
        label_cols = rows.label_pos.to(device)[order] - lookup[label_rows]
        self.label_index = [(local[label_rows[label_group[order] == g]].to(dev_top),
                             label_cols[label_group[order] == g].to(dev_top)) for g in range(len(keys))]
        self.labels = rows.labels.to(device)[order]
        self.label_weight = rows.label_weight.to(device)[order]
        self.label_request = rows.label_request.to(device)[order]
        # the KL rows, group by group, and the permutation back to request order
        kl_group = group_of_row[kl_rows]
        self.kl_index = [local[kl_rows[kl_group == g]].to(dev_top) for g in range(len(keys))]
        kl_order = torch.cat([(kl_group == g).nonzero()[:, 0] for g in range(len(keys))])
        self.kl_back = torch.empty_like(kl_order)
        self.kl_back[kl_order] = torch.arange(len(kl_order), device=device)
        self.kl_back = self.kl_back.to(dev_top)
        # h0: layer L's output at the bare template's subject token
        first = rows.first_rows.to(device)
        self.h0 = torch.zeros(len(requests), adapter.d_model, device=dev_L)
        for g, grp in enumerate(self.groups):
            sel = (group_of_row[first] == g).nonzero()[:, 0]
            self.h0[sel.to(dev_L)] = grp.hL[local[first[sel]].to(grp.hL.device), 0].to(dev_L, self.h0.dtype)
        self.kl_init: torch.Tensor | None = None
        self.hit: torch.Tensor | None = None  # [R] every label the argmax at the last `losses` (most_probable)

    def losses(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-request loss [R] for deltas [R, d]; sets `hit` (see `_losses`)."""
        at_labels, at_kl = [], []
        for grp, req, (lrows, lcols), krows in zip(self.groups, self.group_requests, self.label_index, self.kl_index):
            h = grp.replay(delta[req])  # on the loss layer's device
            at_labels.append(at_positions(h, lrows, lcols))
            at_kl.append(h[krows.to(h.device), 0])
        at_labels, at_kl = torch.cat(at_labels), torch.cat(at_kl)
        at_kl = at_kl[self.kl_back.to(at_kl.device)]
        if not self.fused_head:
            loss, self.kl_init, self.hit = _losses(self.hp, self._rows_view(), self.adapter, at_labels, at_kl,
                                                   self.kl_init, delta, self.h0.norm(dim=-1))
            return loss
        loss, self.kl_init, self.hit = _head_losses(
            self.hp, self.adapter, at_labels, at_kl, self.labels, self.label_weight, self.label_request,
            self.kl_init, delta, self.h0.norm(dim=-1))
        return loss

    def _rows_view(self) -> _Rows:
        """The rows with the label metadata in this chunk's label order (for `_losses`)."""
        r = self.rows
        return _Rows(r.tok, r.request_of_row, r.label_rows, r.label_pos, self.labels, self.label_weight,
                     self.label_request, r.kl_rows, r.first_rows)


def _head_losses(hp: EditHParams, adapter: ModelAdapter, at_labels: torch.Tensor, at_kl: torch.Tensor,
                 labels: torch.Tensor, label_weight: torch.Tensor, label_request: torch.Tensor,
                 kl_init: torch.Tensor | None, delta: torch.Tensor, h0_norm: torch.Tensor):
    """`_losses` with one pass of the final norm and LM head over the label and KL rows together, and the NLL as
    logsumexp − picked logit (no [P, V] log-probabilities). Measured no faster than `_losses` on CPU (the head's
    matmul dominates, logsumexp materialises the same temporaries): kept as an option, off by default."""
    n, p = delta.shape[0], at_labels.shape[0]
    logits = adapter.logits(adapter.final_norm(torch.cat([at_labels, at_kl]))).float()
    labels, label_weight, label_request = (t.to(logits.device) for t in (labels, label_weight, label_request))
    lab = logits[:p]
    picked = lab.gather(1, labels[:, None])[:, 0]
    nll = torch.zeros(n, device=logits.device).index_add(0, label_request, (lab.logsumexp(-1) - picked) * label_weight)
    hit = all_argmax(lab.detach(), labels, label_request, n) if _most_probable(hp) else None
    kl_logp = logits[p:].log_softmax(-1)
    if kl_init is None:
        kl_init = kl_logp.detach()
    kl = (kl_logp.exp() * (kl_logp - kl_init)).sum(-1)
    wd = delta.norm(dim=-1) / h0_norm**2
    return (nll + hp.kl_factor * kl).to(delta.device) + hp.v_weight_decay * wd, kl_init, hit


def _is_cache(value) -> bool:
    return hasattr(value, "update") and hasattr(value, "get_seq_length")


def _capture_call(store: dict, layer: int, prefix: _FrozenPrefix):
    """Pre-hook recording the arguments a layer receives, with the KV cache swapped for the frozen prefix."""

    def hook(_module, args, kwargs):
        swap = lambda v: prefix if _is_cache(v) else v
        store[layer] = (tuple(swap(a) for a in args[1:]), {k: swap(v) for k, v in kwargs.items()})

    return hook


def compute_targets(
    model, tok, adapter: ModelAdapter, requests: list[EditRequest], templates: list[str], hp: EditHParams,
    progress: bool = False, rebuild_below: float = 0.5, grouping: str = "width", fused_head: bool = False,
    journal: ChunkJournal | None = None,
) -> TargetResult:
    """All requests, `hp.targets_chunk` at a time, with the caching described in the module docstring.
    A chunk is rebuilt for its still-active requests when fewer than `rebuild_below` of its requests are active.
    `grouping` and `fused_head` choose the layout of the replayed rows and the loss head (see `_Chunk`,
    `_head_losses`); every choice gives the same z to float rounding, the defaults are the fastest measured.
    With a `journal`, a chunk it holds is read back instead of optimised, and every chunk optimised is saved to it
    (chunks do not depend on each other, so a resumed batch gets the same bits). A journal with a `claim` is shared
    with other processes (`checkpoint.FirstBatchTargets`): a chunk another process is optimising is skipped and read
    once it is saved. z and h0 are on layer L's device (`ModelAdapter.layer_device`)."""
    device = adapter.layer_device(hp.layers[-1])
    n = len(requests)
    zs = torch.zeros(n, adapter.d_model, device=device)
    h0s = torch.zeros_like(zs)
    steps = torch.zeros(n, dtype=torch.long)
    last = torch.zeros(n)
    bar = tqdm(total=n, desc="targets", unit="req", disable=not progress)
    order = sorted(range(n), key=lambda i: _suffix_length(tok, requests[i]))  # little padding within a chunk
    reused = 0.0

    def read(chunk: list[EditRequest]) -> TargetResult | None:
        nonlocal reused
        kept = journal.load(chunk) if journal is not None else None
        if kept is None:
            return None
        t, seconds = kept
        reused += seconds
        return TargetResult(t["z"].to(device), t["h0"].to(device), t["steps"], t["loss"])

    def optimise(chunk: list[EditRequest]) -> TargetResult:
        t0 = time.perf_counter()
        res = _optimise(model, tok, adapter, chunk, templates, hp, rebuild_below,
                        dict(grouping=grouping, fused_head=fused_head))
        if journal is not None:
            journal.save(chunk, dict(z=res.z, h0=res.h0, steps=res.steps, loss=res.loss), time.perf_counter() - t0)
        return res

    def place(ids: list[int], res: TargetResult) -> None:
        zs[ids], h0s[ids], steps[ids], last[ids] = res.z, res.h0, res.steps, res.loss
        bar.update(len(ids))

    claim = getattr(journal, "claim", None)  # a journal shared with other processes (`FirstBatchTargets`)
    deferred = []
    for start in range(0, n, hp.targets_chunk):
        ids = order[start : start + hp.targets_chunk]
        chunk = [requests[i] for i in ids]
        res = read(chunk)
        if res is None and claim is not None:
            with claim(chunk) as mine:
                if not mine:  # another process is optimising it: take the next chunk, come back at the end
                    deferred.append(ids)
                    continue
                res = read(chunk) or optimise(chunk)  # (it may have been saved since the first look)
        place(ids, res or optimise(chunk))
    for ids in deferred:  # wait for the process that claimed it; optimise it here if that process died first
        chunk = [requests[i] for i in ids]
        with claim(chunk, wait=True):
            place(ids, read(chunk) or optimise(chunk))
    bar.close()
    return TargetResult(zs, h0s, steps, last, reused)


def _suffix_length(tok, request: EditRequest) -> int:
    """Tokens from the subject's last token to the end of the longest prompt of the request."""
    ids, idx = subject_last_index(tok, request.prompt, request.subject)
    return len(ids) - idx + len(target_ids(tok, request.target_new)) - 1


def _optimise(model, tok, adapter, requests, templates, hp, rebuild_below, layout: dict) -> TargetResult:
    n = len(requests)
    device = adapter.layer_device(hp.layers[-1])  # δ, its Adam state and the requests' flags live with layer L
    chunk = _Chunk(model, tok, adapter, requests, templates, hp, **layout)
    members = torch.arange(n, device=device)  # requests present in the chunk
    h0 = chunk.h0.clone()
    delta = torch.zeros(n, adapter.d_model, device=device)
    m, v = torch.zeros_like(delta), torch.zeros_like(delta)
    active = torch.ones(n, dtype=torch.bool, device=device)
    steps = torch.zeros(n, dtype=torch.long)
    last = torch.zeros(n)
    hits = torch.zeros(n, dtype=torch.long, device=device)  # evaluations with every target the argmax
    max_norm = hp.clamp_norm_factor * h0.norm(dim=-1)
    for it in range(hp.v_num_grad_steps):
        if int(active[members].sum()) < rebuild_below * len(members):
            keep = active.nonzero()[:, 0]
            saved_kl = chunk.kl_init
            chunk = _Chunk(model, tok, adapter, [requests[i] for i in keep.tolist()], templates, hp, **layout)
            # the unedited model's KL distribution stays the one of step 0
            chunk.kl_init = saved_kl[_positions(members, keep).to(saved_kl.device)]
            members = keep
        d = delta[members].clone().requires_grad_(True)
        loss = chunk.losses(d)
        with torch.no_grad():
            last[members.cpu()] = loss.detach().cpu()
            done = (loss < hp.early_stop_loss) | (it == hp.v_num_grad_steps - 1)
            if _most_probable(hp):
                hits[members] += chunk.hit.to(device, torch.long)
                done |= hits[members] >= hp.most_probable_count
            active[members] &= ~done
        step_rows = members[active[members]]
        if len(step_rows) == 0:
            break
        (loss * active[members]).sum().backward()
        with torch.no_grad():
            g = d.grad[active[members]]
            t = it + 1  # every active request has taken exactly `it` updates before this one
            m[step_rows] = m[step_rows].lerp(g, 1 - ADAM_BETAS[0])
            v[step_rows] = v[step_rows] * ADAM_BETAS[1] + (1 - ADAM_BETAS[1]) * g * g
            bc1, bc2 = 1 - ADAM_BETAS[0] ** t, 1 - ADAM_BETAS[1] ** t
            denom = v[step_rows].sqrt() / math.sqrt(bc2) + ADAM_EPS
            delta[step_rows] = _clamp(delta[step_rows] - (hp.v_lr / bc1) * m[step_rows] / denom, max_norm[step_rows])
            steps[step_rows.cpu()] += 1
    return TargetResult(h0 + delta, h0, steps, last)


def _positions(members: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Index of each `keep` entry within `members`."""
    lookup = {int(x): i for i, x in enumerate(members.tolist())}
    return torch.tensor([lookup[int(x)] for x in keep.tolist()], device=members.device)


# ------------------------------------------------------------------------------------------------ norm anchors
ANCHOR_TRIM = 0.05  # share of the largest ‖v*‖ dropped from the reference mean (NAS: upper quantile 0.95)


@torch.no_grad()
def mlp_outputs(model, tok, adapter: ModelAdapter, requests: list[EditRequest], template: str, layer: int,
                rows_per_pass: int = 256) -> torch.Tensor:
    """v0 [n, d_model]: output of layer `layer`'s MLP output projection at the subject's last token of
    `template.format(prompt)` (the bare template "{}": where h0 is read), on the model as it is now. For LLaMA,
    Qwen2 and GPT-2 it is the MLP's whole contribution to the residual stream (h0 − v0: the residual entering the
    MLP block); Gemma3 passes it through a post-feedforward norm first, so there v0 is the value before that norm
    (the vector W k the edit writes) and h0 − v0 is not the residual entering the MLP. On `layer`'s device."""
    device = adapter.input_device
    store: dict[str, torch.Tensor] = {}
    module = adapter.mlp_out(layer)
    handle = module.register_forward_hook(lambda _m, _a, out: store.__setitem__("v", out))
    out = []
    try:
        for start in range(0, len(requests), rows_per_pass):
            part = requests[start : start + rows_per_pass]
            t = tokenize(tok, [template.format(r.prompt) for r in part], [r.subject for r in part])
            run_until(model, module, input_ids=t.input_ids.to(device), attention_mask=t.attention_mask.to(device))
            rows = torch.arange(len(part), device=device)
            out.append(at_positions(store["v"], rows, torch.tensor(t.subject_last, device=device)).float())
    finally:
        handle.remove()
    return torch.cat(out).to(adapter.layer_device(layer))


def value_vectors(z: torch.Tensor, h0: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
    """v* = v0 + δ = v0 + z − h0 ([n, d]): the MLP output that, with the rest of the residual unchanged, gives z."""
    return v0 + (z - h0)


def anchor_reference(norms: torch.Tensor, trim: float = ANCHOR_TRIM) -> float:
    """The reference norm: mean of ‖v*‖ ([n]) after dropping the floor(trim · n) largest (NAS's upper-trimmed
    mean)."""
    drop = int(math.floor(trim * norms.numel()))
    kept = norms.double().sort().values
    kept = kept[: kept.numel() - drop] if drop else kept
    return float(kept.mean())


def anchor_values(z: torch.Tensor, h0: torch.Tensor, v0: torch.Tensor, reference: float, skip: float = 2.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Norm-Anchor Scaling of targets z [n, d] (h0, v0 [n, d]; see the module docstring): v* = v0 + z − h0 is
    rescaled to norm `reference` and z' = (h0 − v0) + v*' returned, with [n] bool of the requests skipped:
    ‖v*‖ > skip · reference (skip > 0) sets v*' = v0, so z' = h0 (that request asks for no change)."""
    v = value_vectors(z, h0, v0)
    norm = v.norm(dim=-1, keepdim=True)
    skipped = (norm[:, 0] > skip * reference) if skip > 0 else torch.zeros(len(z), dtype=torch.bool, device=z.device)
    scaled = torch.where(norm > 0, v * (reference / norm.clamp_min(1e-30)), v)
    anchored = torch.where(skipped[:, None], v0, scaled)
    return (h0 - v0) + anchored, skipped
