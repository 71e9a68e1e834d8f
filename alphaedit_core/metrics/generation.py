"""Free generation (our own loop over the model's forward, no `generate`) and the generation-based
("in the wild", Yang et al. 2025) answer checks.

Prompts are left-padded; position ids follow the attention mask, and the key/value cache is used when the
model's forward takes one (`cache` in transformers 5, `past_key_values` before), else the whole sequence
is recomputed every step.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from .scoring import encode_prompt, model_device, pad_token_id


@dataclass(frozen=True)
class Generation:
    prompt: str
    continuation: str  # the generated text after the prompt
    text: str  # the decoded prompt + continuation (what the official fluency code scores)
    new_ids: tuple[int, ...]


def _forward_kwargs(model: torch.nn.Module) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _get_cache(out: Any) -> Any:
    for name in ("cache", "past_key_values"):
        try:
            c = out[name] if isinstance(out, dict) else getattr(out, name, None)
        except KeyError:
            c = None
        if c is not None:
            return c
    return None


def _next_token(logits: torch.Tensor, do_sample: bool, top_k: int | None, temperature: float,
                generator: torch.Generator | None) -> torch.Tensor:
    logits = logits.float()
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


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
    params = _forward_kwargs(model)
    cache_kw = "cache" if "cache" in params else ("past_key_values" if "past_key_values" in params else None)
    use_pos = "position_ids" in params
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
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                e = encoded[i]
                ids[r, width - len(e):] = torch.tensor(e, dtype=torch.long)
                mask[r, width - len(e):] = 1
            ids, mask = ids.to(device), mask.to(device)
            new = torch.full((len(idx), max_new_tokens), pad, dtype=torch.long, device=device)
            lengths = torch.full((len(idx),), max_new_tokens, dtype=torch.long)
            done = torch.zeros(len(idx), dtype=torch.bool, device=device)
            cache = None
            step_ids = ids
            for step in range(max_new_tokens):
                kwargs: dict[str, Any] = {"input_ids": step_ids, "attention_mask": mask}
                if use_pos:
                    pos = (mask.cumsum(-1) - 1).clamp(min=0)
                    kwargs["position_ids"] = pos[:, -step_ids.size(1):]
                if cache_kw is not None:
                    kwargs["use_cache"] = True
                    if cache is not None:
                        kwargs[cache_kw] = cache
                if "logits_to_keep" in params:
                    kwargs["logits_to_keep"] = 1
                out = model(**kwargs)
                nxt = _next_token(out.logits[:, -1, :], do_sample, top_k, temperature, gen)
                nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
                new[:, step] = nxt
                if stop_at_eos and eos is not None:
                    hit = (nxt == eos) & ~done
                    for r in hit.nonzero()[:, 0].tolist():
                        lengths[r] = step  # EOS itself is not kept
                    done |= hit
                if bool(done.all()):
                    break
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                cache = _get_cache(out) if cache_kw is not None else None
                if cache is not None:
                    step_ids = nxt[:, None]
                else:
                    ids = torch.cat([ids, nxt[:, None]], dim=1)
                    step_ids = ids
            new = new.cpu()
            for r, i in enumerate(idx):
                n_ids = new[r, : int(lengths[r])].tolist()
                p_ids = encoded[i]
                pre = tok.decode(p_ids, skip_special_tokens=True)
                full = tok.decode(p_ids + n_ids, skip_special_tokens=True)
                cont = full[len(pre):] if full.startswith(pre) else tok.decode(n_ids, skip_special_tokens=True)
                results[i] = Generation(prompts[i], cont, full, tuple(n_ids))
    finally:
        if was_training:
            model.train()
    return results  # type: ignore[return-value]


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
