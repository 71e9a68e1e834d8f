"""Model calls shared by teacher-forced scoring and free generation: which arguments the forward takes, the
key/value cache it returns, and token-by-token decoding from a prompt pass that has already run.

Prompts are left-padded everywhere (every prompt ends in the last column, so one prompt pass serves both the
first target token of teacher forcing and the first generated token); position ids follow the attention mask.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch


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


def forward_kwargs(model: torch.nn.Module) -> set[str]:
    """Names of the arguments `model.forward` takes (empty when it cannot be inspected)."""
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def cache_kwarg(params: set[str]) -> str | None:
    """The forward argument that takes a key/value cache: `cache` (transformers 5), `past_key_values` before."""
    return "cache" if "cache" in params else ("past_key_values" if "past_key_values" in params else None)


def output_cache(out: Any) -> Any:
    """The key/value cache a forward returned, or None."""
    for name in ("cache", "past_key_values"):
        try:
            c = out[name] if isinstance(out, dict) else getattr(out, name, None)
        except KeyError:
            c = None
        if c is not None:
            return c
    return None


def call(
    model: torch.nn.Module,
    params: set[str],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    cache: Any = None,
    last_only: bool = False,
) -> Any:
    """`model(...)` with the arguments its forward takes (`params`, from :func:`forward_kwargs`): position ids
    where it takes them; with a key/value cache where it takes one (`cache`, or a new one when None), returned in
    the output; logits of the last position only when `last_only` and it takes `logits_to_keep`."""
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "position_ids" in params:
        kwargs["position_ids"] = position_ids
    cache_kw = cache_kwarg(params)
    if cache_kw is not None:
        kwargs["use_cache"] = True
        if cache is not None:
            kwargs[cache_kw] = cache
    if last_only and "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1
    return model(**kwargs)


def left_pad(seqs: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ids [n, w], attention mask [n, w] and position ids [n, w] (0 at each row's first real token)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    ids, mask = ids.to(device), mask.to(device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def next_token(logits: torch.Tensor, do_sample: bool = False, top_k: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token per row of `logits` [n, V]: the argmax, or a sample (from the `top_k` most likely tokens)."""
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
def decode(
    model: torch.nn.Module,
    last_logits: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    cache: Any,
    max_new_tokens: int,
    *,
    pad: int,
    eos: int | None,
    stop_at_eos: bool = True,
    do_sample: bool = False,
    top_k: int | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """Continue left-padded prompts whose prompt pass has run.

    `last_logits` [n, V]: logits at the prompts' last position; `ids`, `mask` [n, w]: the prompts; `cache`: the
    prompt pass's key/value cache (None: the model takes none, and every step re-runs the whole sequence).
    Returns the new tokens [n, max_new_tokens] (pad after a row stops) and each row's length (EOS not kept).
    """
    params = forward_kwargs(model)
    cache_kw = cache_kwarg(params) if cache is not None else None
    n = last_logits.shape[0]
    new = torch.full((n, max_new_tokens), pad, dtype=torch.long, device=last_logits.device)
    lengths = [max_new_tokens] * n
    done = torch.zeros(n, dtype=torch.bool, device=last_logits.device)
    logits = last_logits
    for step in range(max_new_tokens):
        nxt = next_token(logits, do_sample, top_k, temperature, generator)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        new[:, step] = nxt
        if stop_at_eos and eos is not None:
            hit = (nxt == eos) & ~done
            for r in hit.nonzero()[:, 0].tolist():
                lengths[r] = step  # EOS itself is not kept
            done |= hit
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if cache_kw is not None:
            step_ids = nxt[:, None]
        else:
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            step_ids = ids
        out = call(model, params, step_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.size(1):],
                   cache=cache, last_only=True)
        if cache_kw is not None:
            cache = output_cache(out)
        logits = out.logits[:, -1, :]
    return new, lengths
