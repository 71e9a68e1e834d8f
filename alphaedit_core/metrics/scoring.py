"""Shared teacher-forced scoring: one batched forward pass per group of (prompt, target) pairs.

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

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from tqdm.auto import tqdm


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


def pad_token_id(tok: Any) -> int:
    """The tokenizer's pad id; eos when it has none (0 as a last resort). The tokenizer is not modified."""
    for attr in ("pad_token_id", "eos_token_id"):
        v = getattr(tok, attr, None)
        if v is not None:
            return int(v)
    return 0


def model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


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


@torch.no_grad()
def score_pairs(
    model: torch.nn.Module,
    tok: Any,
    pairs: Iterable[Probe | tuple[str, str]],
    *,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "scoring",
) -> dict[Probe, TargetScore]:
    """Teacher-force every distinct (prompt, target) pair and return its :class:`TargetScore`.

    Identical pairs are scored once. Pairs are sorted by length and run in right-padded batches of
    `batch_size` sequences (``prompt_ids + target_ids``), one forward pass per batch; from the logits at
    the positions that predict the target tokens it keeps log_softmax of the target token and the argmax.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    unique: dict[Probe, None] = {}
    for p in pairs:
        unique[p if isinstance(p, Probe) else Probe(*p)] = None
    if not unique:
        return {}

    p_cache: dict[str, list[int]] = {}
    t_cache: dict[str, list[int]] = {}
    encoded = []
    for probe in unique:
        if probe.prompt not in p_cache:
            p_cache[probe.prompt] = encode_prompt(tok, probe.prompt)
        if probe.target not in t_cache:
            t_cache[probe.target] = encode_target(tok, probe.target)
        encoded.append((probe, p_cache[probe.prompt], t_cache[probe.target]))
    encoded.sort(key=lambda e: len(e[1]) + len(e[2]))

    device = model_device(model)
    pad = pad_token_id(tok)
    out: dict[Probe, TargetScore] = {}
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        batches = list(_batches(encoded, batch_size))
        for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
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
    finally:
        if was_training:
            model.train()
    return out
