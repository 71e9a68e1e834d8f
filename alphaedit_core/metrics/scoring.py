"""Shared teacher-forced scoring: each distinct prompt runs once, and every target after it is read from that pass.

Every teacher-forced metric of the study (the official CounterFact probability comparison, the official
ZsRE token accuracy, the strict all-tokens-right flag, EasyEdit's partial-credit accuracy, its locality
argmax tokens) is read from the same per-token log-probabilities and argmax tokens, so a (prompt, target)
pair is scored once, however many metric families use it.

Tokenization convention (as the official code does it): the prompt is tokenized on its own, with the
tokenizer's special tokens (a BOS where the tokenizer adds one); the target is tokenized on its own with a
leading space (" Paris") and no special tokens, and a BOS that the tokenizer still puts in front of it is
stripped. The model reads ``prompt_ids + target_ids``; target token j is predicted at position
``len(prompt_ids) + j - 1``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from .forward import cache_kwarg, call, decode, forward_kwargs, left_pad, model_device, output_cache, pad_token_id


@dataclass(frozen=True)
class Probe:
    """One (prompt, target) pair to score by teacher forcing. `target` is stored as given; a leading
    space is added when it is tokenized."""

    prompt: str
    target: str


@dataclass(frozen=True)
class TargetScore:
    """What one teacher-forced forward pass says about a target after a prompt.

    `logprobs[j]` = log p(target_j | prompt, target_<j); `argmax[j]` = the model's top-1 token at the
    position that predicts target_j.
    """

    target_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    argmax: tuple[int, ...]

    @property
    def nll(self) -> float:
        """Mean per-token negative log-likelihood: -(1/T) Σ_j log p(target_j | ...)."""
        return -sum(self.logprobs) / len(self.logprobs)

    @property
    def prob(self) -> float:
        """exp(-mean NLL): the geometric mean of the per-token probabilities (the official code's
        `p`, not the probability of the whole target sequence)."""
        return math.exp(-self.nll)

    @property
    def hits(self) -> tuple[bool, ...]:
        """Per target token: argmax at the predicting position == the token."""
        return tuple(a == t for a, t in zip(self.argmax, self.target_ids))

    @property
    def token_acc(self) -> float:
        """Mean of the token hits (partial credit): (1/T) Σ_j [argmax_j == target_j]."""
        h = self.hits
        return sum(h) / len(h)

    @property
    def all_correct(self) -> bool:
        """All target tokens are the argmax (strict)."""
        return all(self.hits)


def encode_prompt(tok: Any, prompt: str) -> list[int]:
    """Prompt token ids, with the tokenizer's own special tokens (e.g. a BOS)."""
    ids = list(tok(prompt)["input_ids"])
    if not ids:
        raise ValueError(f"prompt {prompt!r} tokenizes to nothing; nothing would predict the target's first token")
    return ids


def encode_target(tok: Any, target: str) -> list[int]:
    """Target token ids for " target" (one leading space added unless present), no special tokens,
    a leading BOS stripped."""
    text = target if target.startswith(" ") else " " + target
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    bos = getattr(tok, "bos_token_id", None)
    if ids and bos is not None and ids[0] == bos:
        ids = ids[1:]
    if not ids:
        raise ValueError(f"target {target!r} tokenizes to nothing")
    return ids


def forward_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """`model(input_ids=..., attention_mask=...).logits`."""
    return model(input_ids=input_ids, attention_mask=attention_mask).logits


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def score_pairs(
    model: torch.nn.Module,
    tok: Any,
    pairs: Iterable[Probe | tuple[str, str]],
    *,
    batch_size: int = 64,
    shared_prefix: bool | None = None,
    progress: bool = False,
    desc: str = "scoring",
) -> dict[Probe, TargetScore]:
    """Teacher-force every distinct (prompt, target) pair and return its :class:`TargetScore`.

    Identical pairs are scored once. Two ways, same numbers (to float rounding):

    * `shared_prefix=True` (the default when the model's forward takes a key/value cache and position ids):
      each distinct prompt runs once, `batch_size` prompts per left-padded batch, with the logits of its last
      position only (they predict every target's first token); the other target tokens then run as a
      continuation against a copy of the prompts' cache, one pass per target slot, on the rows that need it
      (a CounterFact prompt's target_new and target_true share one prompt pass).
    * `shared_prefix=False`: every ``prompt_ids + target_ids`` sequence in right-padded batches of `batch_size`,
      full logits (what a model without a cache needs).

    From the logits that predict target token j it keeps log_softmax of token j and the argmax.
    """
    return score_and_decode(model, tok, pairs, batch_size=batch_size, shared_prefix=shared_prefix,
                            progress=progress, desc=desc)[0]


def can_share_prefix(model: torch.nn.Module) -> bool:
    """Whether the model's forward takes a key/value cache and position ids (what prefix sharing needs)."""
    params = forward_kwargs(model)
    return cache_kwarg(params) is not None and "position_ids" in params


@torch.no_grad()
def score_and_decode(
    model: torch.nn.Module,
    tok: Any,
    pairs: Iterable[Probe | tuple[str, str]],
    decode_prompts: Iterable[str] = (),
    *,
    max_new_tokens: int = 20,
    batch_size: int = 64,
    shared_prefix: bool | None = None,
    progress: bool = False,
    desc: str = "scoring",
) -> tuple[dict[Probe, TargetScore], dict[str, tuple[list[int], list[int]]]]:
    """:func:`score_pairs`, plus greedy decoding of `max_new_tokens` tokens (stopping at EOS) after each of
    `decode_prompts` from the same prompt pass: a prompt that is both scored and answered runs once.

    Returns (scores, {prompt: (prompt_ids, new_ids)}). Decoding needs `shared_prefix` (a cache).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if max_new_tokens < 0:
        raise ValueError("max_new_tokens must be >= 0")
    unique: dict[Probe, None] = {}
    for p in pairs:
        unique[p if isinstance(p, Probe) else Probe(*p)] = None
    to_decode = list(dict.fromkeys(decode_prompts))
    if not unique and not to_decode:
        return {}, {}

    p_cache: dict[str, list[int]] = {}
    t_cache: dict[str, list[int]] = {}
    encoded = []
    for probe in unique:
        if probe.prompt not in p_cache:
            p_cache[probe.prompt] = encode_prompt(tok, probe.prompt)
        if probe.target not in t_cache:
            t_cache[probe.target] = encode_target(tok, probe.target)
        encoded.append((probe, p_cache[probe.prompt], t_cache[probe.target]))

    can_share = can_share_prefix(model)
    if shared_prefix is None:
        shared_prefix = can_share
    elif shared_prefix and not can_share:
        raise ValueError("shared_prefix=True needs a model whose forward takes a key/value cache and position_ids")
    if to_decode and not shared_prefix:
        raise ValueError("decoding along with scoring needs shared_prefix (a model that takes a key/value cache)")
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        if shared_prefix:
            return _score_shared(model, tok, encoded, to_decode, max_new_tokens, batch_size, progress, desc)
        return _score_full(model, tok, encoded, batch_size, progress, desc), {}
    finally:
        if was_training:
            model.train()


def _score_full(model, tok, encoded, batch_size: int, progress: bool, desc: str) -> dict[Probe, TargetScore]:
    """One right-padded forward over prompt + target per pair, full logits."""
    encoded = sorted(encoded, key=lambda e: len(e[1]) + len(e[2]))
    device = model_device(model)
    pad = pad_token_id(tok)
    out: dict[Probe, TargetScore] = {}
    for batch in tqdm(list(_batches(encoded, batch_size)), desc=desc, disable=not progress, leave=False):
        width = max(len(p) + len(t) for _, p, t in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (_, p, t) in enumerate(batch):
            seq = p + t
            ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[i, : len(seq)] = 1
        logits = forward_logits(model, ids.to(device), mask.to(device))
        for i, (probe, p, t) in enumerate(batch):
            rows = logits[i, len(p) - 1 : len(p) + len(t) - 1].float()
            logp = torch.log_softmax(rows, dim=-1)
            tgt = torch.tensor(t, dtype=torch.long, device=logp.device)
            lp = logp.gather(1, tgt[:, None])[:, 0]
            out[probe] = TargetScore(
                target_ids=tuple(t),
                logprobs=tuple(float(x) for x in lp.cpu()),
                argmax=tuple(int(x) for x in rows.argmax(dim=-1).cpu()),
            )
    return out


def _score_shared(model, tok, encoded, to_decode: list[str], max_new_tokens: int, batch_size: int, progress: bool,
                  desc: str) -> tuple[dict[Probe, TargetScore], dict[str, tuple[list[int], list[int]]]]:
    """Each prompt once (left-padded, logits at its last position); then the targets' remaining tokens as
    continuations of a copy of the prompt cache, one pass per target slot; then greedy decoding of the prompts
    that want it from the cache itself."""
    groups: dict[str, tuple[list[int], list[tuple[Probe, list[int]]]]] = {}
    for probe, p, t in encoded:
        groups.setdefault(probe.prompt, (p, []))[1].append((probe, t))
    wanted = set(to_decode)
    for prompt in to_decode:
        if prompt not in groups:
            groups[prompt] = (encode_prompt(tok, prompt), [])
    prompts = sorted(groups.items(), key=lambda g: len(g[1][0]))
    params = forward_kwargs(model)
    device = model_device(model)
    pad = pad_token_id(tok)
    eos = getattr(tok, "eos_token_id", None)
    out: dict[Probe, TargetScore] = {}
    answers: dict[str, tuple[list[int], list[int]]] = {}
    for chunk in tqdm(list(_batches(prompts, batch_size)), desc=desc, disable=not progress, leave=False):
        batch = [g for _, g in chunk]
        n = len(batch)
        ids, mask, pos = left_pad([p for p, _ in batch], pad, device)
        res = call(model, params, ids, mask, pos, last_only=True)
        last = res.logits[:, -1].float()  # [n, V]: predicts every target's first token and the first new one
        first = last.log_softmax(-1)
        first_arg = first.argmax(-1).cpu()
        cache = output_cache(res)
        lengths = mask.sum(-1)  # [n]
        n_slots = max(len(ts) for _, ts in batch)
        dec_rows = [i for i, (prompt, _) in enumerate(chunk) if prompt in wanted]
        cont: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (row, slot) -> logp rows, argmax
        needs = [s for s in range(n_slots) if any(len(ts) > s and len(ts[s][1]) > 1 for _, ts in batch)]
        for k, s in enumerate(needs):
            rows = [i for i, (_, ts) in enumerate(batch) if len(ts) > s and len(ts[s][1]) > 1]
            past = cache if k == len(needs) - 1 and not dec_rows else copy.deepcopy(cache)
            sel = _select_rows(past, rows, n, device)
            w = max(len(batch[i][1][s][1]) - 1 for i in rows)
            c_ids = torch.full((len(sel), w), pad, dtype=torch.long)
            c_mask = torch.zeros((len(sel), w), dtype=torch.long)
            for r, i in enumerate(sel):
                if len(batch[i][1]) > s and len(batch[i][1][s][1]) > 1:
                    t = batch[i][1][s][1][:-1]
                    c_ids[r, : len(t)] = torch.tensor(t, dtype=torch.long)
                    c_mask[r, : len(t)] = 1
            c_ids, c_mask = c_ids.to(device), c_mask.to(device)
            idx = torch.tensor(sel, device=device)
            res = call(model, params, c_ids, torch.cat([mask[idx], c_mask], dim=1),
                       lengths[idx, None] + torch.arange(w, device=device)[None, :], cache=past)
            logits = res.logits.float()  # [len(sel), w, V]
            for r, i in enumerate(sel):
                if c_mask[r, 0]:
                    lp = logits[r].log_softmax(-1)
                    cont[(i, s)] = (lp, lp.argmax(-1).cpu())
        for i, (_, ts) in enumerate(batch):
            for s, (probe, t) in enumerate(ts):
                lps, args = [float(first[i, t[0]])], [int(first_arg[i])]
                if len(t) > 1:
                    lp, arg = cont[(i, s)]
                    tgt = torch.tensor(t[1:], dtype=torch.long, device=lp.device)
                    lps += [float(x) for x in lp[: len(t) - 1].gather(1, tgt[:, None])[:, 0].cpu()]
                    args += [int(x) for x in arg[: len(t) - 1]]
                out[probe] = TargetScore(target_ids=tuple(t), logprobs=tuple(lps), argmax=tuple(args))
        if dec_rows and not max_new_tokens:
            answers.update({chunk[i][0]: (batch[i][0], []) for i in dec_rows})
        elif dec_rows:
            sel = _select_rows(cache, dec_rows, n, device)
            idx = torch.tensor(sel, device=device)
            new, n_new = decode(model, last[idx], ids[idx], mask[idx], cache, max_new_tokens, pad=pad, eos=eos)
            new = new.cpu()
            for r, i in enumerate(sel):
                if i in dec_rows:
                    answers[chunk[i][0]] = (batch[i][0], new[r, : n_new[r]].tolist())
    return out, answers


def _select_rows(cache: Any, rows: list[int], n: int, device: torch.device) -> list[int]:
    """Keep only `rows` of the cache (in place) where the cache can; the rows it now holds. The index is a CPU
    tensor: each layer's keys/values live on that layer's device (a split model), and a CPU index can index a tensor
    on any device, where one on the first device cannot index a layer held on another."""
    if len(rows) < n and hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(torch.tensor(rows))
        return rows
    return list(range(n))
