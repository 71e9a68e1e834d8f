"""Prompt handling shared by keys and targets: seeded context templates, tokenisation with right padding, and the
position of the subject's last token."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@torch.no_grad()
def context_templates(model, tok, *, length: int, count: int, seed_words: list[str], seed: int) -> list[str]:
    """["{}"] + `count` prefixes sampled from the model ("<sample>. {}"), each `length` tokens long (prompt included),
    top-5 sampling as the reference code does, but from a seeded generator so the same seed gives the same
    templates. Braces in the samples become spaces."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    out = ["{}"]
    for i in range(count):
        ids = tok(seed_words[i % len(seed_words)], return_tensors="pt").input_ids.to(device)
        while ids.shape[1] < length:
            logits = model(input_ids=ids, use_cache=False).logits[0, -1].float().cpu()
            top = logits.topk(5)
            choice = top.indices[torch.multinomial(top.values.softmax(-1), 1, generator=gen)]
            ids = torch.cat([ids, choice.view(1, 1).to(device)], dim=1)
        text = tok.decode(ids[0], skip_special_tokens=True)
        out.append(text.replace("{", " ").replace("}", " ") + ". {}")
    return out


def template_groups(templates: list[str]) -> list[list[int]]:
    """Indices of the reference's template groups: the bare "{}" alone, then all sampled ones.
    Keys are averaged within each group, then over groups (as the reference's `compute_ks`)."""
    groups = [[0]]
    if len(templates) > 1:
        groups.append(list(range(1, len(templates))))
    return groups


@dataclass
class Tokenized:
    input_ids: torch.Tensor  # [B, S] right-padded
    attention_mask: torch.Tensor  # [B, S]
    lengths: list[int]
    subject_last: list[int]  # position of the subject's last token in each row


def subject_last_index(tok, template: str, subject: str) -> tuple[list[int], int]:
    """Token ids of `template` with "{}" filled by `subject`, and the index of the subject's last token."""
    prefix, suffix = template.split("{}", 1)
    text = prefix + subject + suffix
    end = len(prefix) + len(subject)
    if getattr(tok, "is_fast", False):
        enc = tok(text, return_offsets_mapping=True)
        idx = max(i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end)
        return enc["input_ids"], idx
    ids = tok(text).input_ids
    return ids, len(tok(prefix + subject).input_ids) - 1


def tokenize(tok, templates: list[str], subjects: list[str], suffix_ids: list[list[int]] | None = None) -> Tokenized:
    """Tokenise `template.format(subject)` (+ optional token ids appended) for each row, right-padded."""
    rows, lookups = [], []
    for i, (template, subject) in enumerate(zip(templates, subjects)):
        ids, idx = subject_last_index(tok, template, subject)
        if suffix_ids is not None:
            ids = ids + list(suffix_ids[i])
        rows.append(ids)
        lookups.append(idx)
    input_ids, mask = pad_right(rows, tok.pad_token_id if tok.pad_token_id is not None else 0)
    return Tokenized(input_ids, mask, [len(r) for r in rows], lookups)


def pad_right(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists: ids [B, S], attention mask [B, S]."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def target_ids(tok, target: str) -> list[int]:
    """Token ids of " target" without special tokens (the reference strips a BOS)."""
    ids = tok(" " + target.strip(), add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"target {target!r} tokenises to nothing")
    return ids
