"""Free generation (our own loop over the model's forward, no `generate`) and the generation-based
("in the wild", Yang et al. 2025) answer checks.

Prompts are left-padded; position ids follow the attention mask, and the key/value cache is used when the
model's forward takes one (`cache` in transformers 5, `past_key_values` before), else the whole sequence
is recomputed every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from .forward import call, decode, forward_kwargs, left_pad, model_device, output_cache, pad_token_id
from .scoring import encode_prompt


@dataclass(frozen=True)
class Generation:
    prompt: str
    continuation: str  # the generated text after the prompt
    text: str  # the decoded prompt + continuation (what the official fluency code scores)
    new_ids: tuple[int, ...]


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tok: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 100,
    batch_size: int = 16,
    do_sample: bool = False,
    top_k: int | None = None,
    temperature: float = 1.0,
    seed: int | None = 0,
    stop_at_eos: bool = True,
    progress: bool = False,
    desc: str = "generating",
) -> list[Generation]:
    """Generate up to `max_new_tokens` tokens after each prompt.

    Greedy (argmax) by default; `do_sample=True` samples (optionally from the `top_k` most likely tokens;
    the official fluency code samples with top_k=5) from a torch.Generator seeded with `seed`, so a run is
    reproducible for the same prompts, order and batch size. A sequence stops at EOS when `stop_at_eos`.
    """
    if max_new_tokens < 0:
        raise ValueError("max_new_tokens must be >= 0")
    device = model_device(model)
    pad = pad_token_id(tok)
    eos = getattr(tok, "eos_token_id", None)
    params = forward_kwargs(model)
    gen = None
    if do_sample:
        gen = torch.Generator(device=device)
        gen.manual_seed(0 if seed is None else int(seed))

    encoded = [encode_prompt(tok, p) for p in prompts]
    results: list[Generation | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        for idx in tqdm(batches, desc=desc, disable=not progress, leave=False):
            ids, mask, pos = left_pad([encoded[i] for i in idx], pad, device)
            if max_new_tokens:
                out = call(model, params, ids, mask, pos, last_only=True)
                new, lengths = decode(model, out.logits[:, -1, :], ids, mask, output_cache(out), max_new_tokens,
                                      pad=pad, eos=eos, stop_at_eos=stop_at_eos, do_sample=do_sample, top_k=top_k,
                                      temperature=temperature, generator=gen)
            else:
                new, lengths = torch.zeros(len(idx), 0, dtype=torch.long), [0] * len(idx)
            new = new.cpu()
            for r, i in enumerate(idx):
                results[i] = to_generation(tok, prompts[i], encoded[i], new[r, : lengths[r]].tolist())
    finally:
        if was_training:
            model.train()
    return results  # type: ignore[return-value]


def to_generation(tok: Any, prompt: str, prompt_ids: Sequence[int], new_ids: Sequence[int]) -> Generation:
    """The decoded continuation and full text of `new_ids` generated after `prompt`."""
    pre = tok.decode(list(prompt_ids), skip_special_tokens=True)
    full = tok.decode(list(prompt_ids) + list(new_ids), skip_special_tokens=True)
    cont = full[len(pre):] if full.startswith(pre) else tok.decode(list(new_ids), skip_special_tokens=True)
    return Generation(prompt, cont, full, tuple(new_ids))


def first_answer_span(generation: str) -> str:
    """The generated answer: the continuation stripped, cut at its first newline or period, stripped again."""
    s = generation.strip()
    for stop in ("\n", "."):
        k = s.find(stop)
        if k >= 0:
            s = s[:k]
    return s.strip()


def exact_match(generation: str, target: str) -> bool:
    """[first_answer_span(generation).lower() == target.strip().lower()] (case-insensitive; whitespace runs
    collapsed on both sides)."""
    norm = lambda x: " ".join(x.split()).lower()  # noqa: E731
    return norm(first_answer_span(generation)) == norm(target)


def contains_answer(generation: str, target: str) -> bool:
    """[target.strip().lower() is a substring of generation.lower()] (anywhere in the whole generation,
    no word-boundary check)."""
    t = target.strip().lower()
    return bool(t) and t in generation.lower()
