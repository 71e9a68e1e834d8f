"""Second-moment statistics C = E[k kᵀ] of the edited modules' inputs over a text corpus.

Shared by MEMIT (as its preserved-knowledge term) and AlphaEdit (to build the projector P). Cached on disk as
safetensors under a key made of the model's weights fingerprint, the layer and module, the corpus identity,
the token budget, the window length and the dtype; a file whose recorded key differs is refused, never reused.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Protocol

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .arch import ModelAdapter, capture_inputs, run_until
from .paths import cache_dir
from .prompts import pad_right


class Corpus(Protocol):
    identity: str

    def texts(self) -> Iterator[str]: ...


class StaleStatsError(RuntimeError):
    """A statistics file exists at the expected place but was computed for something else."""


@dataclass(frozen=True)
class StatsKey:
    model: str  # weights fingerprint
    module: str  # e.g. "model.layers.4.mlp.down_proj"
    corpus: str  # corpus identity
    n_tokens: int
    seq_len: int
    dtype: str

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]

    def path(self, root: Path) -> Path:
        return root / self.model[:16] / f"{self.module}.{self.digest()}.safetensors"


def token_windows(tok, corpus: Corpus, seq_len: int) -> Iterator[list[int]]:
    """Consecutive windows of at most `seq_len` tokens of each document, in corpus order; a BOS starts each
    window where the tokenizer adds one."""
    probe = tok("a").input_ids
    bos = [tok.bos_token_id] if tok.bos_token_id is not None and probe and probe[0] == tok.bos_token_id else []
    body = seq_len - len(bos)
    for text in corpus.texts():
        ids = tok(text, add_special_tokens=False).input_ids
        for start in range(0, len(ids), body):
            chunk = ids[start : start + body]
            if chunk:
                yield bos + chunk


def _batches(windows: Iterator[list[int]], budget: int, size: int) -> Iterator[list[list[int]]]:
    """Group windows `size` at a time, cutting the last one so that exactly `budget` tokens are used."""
    batch: list[list[int]] = []
    for w in windows:
        w = w[:budget]
        budget -= len(w)
        batch.append(w)
        if len(batch) == size or budget == 0:
            yield batch
            batch = []
        if budget == 0:
            return
    if batch:
        yield batch


@torch.no_grad()
def compute_second_moments(
    model: torch.nn.Module,
    tok,
    adapter: ModelAdapter,
    layers: list[int],
    corpus: Corpus,
    *,
    n_tokens: int,
    seq_len: int,
    dtype: torch.dtype = torch.float32,
    batch_windows: int = 8,
    progress: bool = True,
) -> tuple[dict[int, torch.Tensor], int]:
    """Mean of k kᵀ over every non-padding token (up to `n_tokens`): {layer: [d_ff, d_ff]}, tokens counted.

    Runs the model only up to the deepest requested layer; sums in float64."""
    device = next(model.parameters()).device
    sums = {l: torch.zeros(adapter.d_ff, adapter.d_ff, dtype=torch.float64, device=device) for l in layers}
    counted = 0
    with tqdm(total=n_tokens, desc="second moments", unit="tok", disable=not progress) as bar:
        for keys in _stream_keys(model, tok, adapter, layers, token_windows(tok, corpus, seq_len), n_tokens,
                                 batch_windows):
            for l, k in keys.items():
                k = k.to(torch.float64)
                sums[l] += k.T @ k
            n = len(next(iter(keys.values())))
            counted += n
            bar.update(n)
    if counted == 0:
        raise ValueError(f"corpus {corpus.identity!r} produced no tokens")
    return {l: (s / counted).to(dtype).cpu() for l, s in sums.items()}, counted


def layer_stats(
    model: torch.nn.Module,
    tok,
    adapter: ModelAdapter,
    layers: list[int],
    corpus: Corpus,
    *,
    fingerprint: str,
    n_tokens: int,
    seq_len: int,
    dtype: str = "float32",
    root: Path | None = None,
    progress: bool = True,
) -> dict[int, torch.Tensor]:
    """Second moments for `layers`, read from the cache where a file with the same key exists, computed (and
    cached) otherwise. {layer: [d_ff, d_ff]}."""
    root = Path(root) if root is not None else cache_dir("stats")
    keys = {l: StatsKey(fingerprint, adapter.mlp_out_names[l], corpus.identity, n_tokens, seq_len, dtype) for l in layers}
    out = {l: load_stats(keys[l], root) for l in layers}
    missing = [l for l, v in out.items() if v is None]
    if missing:
        fresh, counted = compute_second_moments(
            model, tok, adapter, missing, corpus, n_tokens=n_tokens, seq_len=seq_len,
            dtype=getattr(torch, dtype), progress=progress,
        )
        for l in missing:
            save_stats(keys[l], root, fresh[l], counted)
            out[l] = fresh[l]
    return out


def save_stats(key: StatsKey, root: Path, cov: torch.Tensor, counted: int) -> Path:
    path = key.path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: str(v) for k, v in asdict(key).items()} | {"tokens_counted": str(counted)}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # unique: another process may be writing the same key
    save_file({"cov": cov.contiguous()}, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load_stats(key: StatsKey, root: Path, path: Path | None = None) -> torch.Tensor | None:
    """The cached matrix for `key`, None when absent; `StaleStatsError` when the file's recorded key differs."""
    path = Path(path) if path is not None else key.path(root)
    if not path.exists():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    expected = {k: str(v) for k, v in asdict(key).items()}
    wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if wrong:
        raise StaleStatsError(f"statistics file {path} was computed for another setting: " +
                              ", ".join(f"{k}: file has {a!r}, wanted {b!r}" for k, (a, b) in wrong.items()))
    return load_file(str(path))["cov"]


@torch.no_grad()
def corpus_keys(
    model: torch.nn.Module, tok, adapter: ModelAdapter, layers: list[int], corpus: Corpus, *,
    skip_tokens: int, n_tokens: int, seq_len: int, batch_windows: int = 8,
) -> dict[int, torch.Tensor]:
    """Keys of the edited modules on `n_tokens` corpus tokens that come after the first `skip_tokens` (the ones the
    statistics used): held-out preserved keys, {layer: [n_tokens, d_ff]}."""
    windows = token_windows(tok, corpus, seq_len)
    skipped = 0
    for w in windows:  # drop whole windows up to the budget, then start from the rest of the cut one
        if skipped + len(w) > skip_tokens:
            windows = itertools.chain([w[skip_tokens - skipped :]], windows)
            break
        skipped += len(w)
    out: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    for keys in _stream_keys(model, tok, adapter, layers, windows, n_tokens, batch_windows):
        for l, k in keys.items():
            out[l].append(k.float().cpu())
    return {l: torch.cat(v) for l, v in out.items()}


def _stream_keys(model, tok, adapter: ModelAdapter, layers: list[int], windows: Iterator[list[int]], n_tokens: int,
                 batch_windows: int) -> Iterator[dict[int, torch.Tensor]]:
    """Run the model on `n_tokens` tokens of `windows`, `batch_windows` windows at a time, up to the deepest
    layer; yield each batch's keys of every non-padding token: {layer: [tokens, d_ff]}."""
    device = next(model.parameters()).device
    store: dict[int, torch.Tensor] = {}
    handles = capture_inputs({l: adapter.mlp_out(l) for l in layers}, store)
    try:
        for batch in _batches(windows, n_tokens, batch_windows):
            ids, mask = pad_right(batch, tok.pad_token_id or 0)
            run_until(model, adapter.mlp_out(max(layers)), input_ids=ids.to(device), attention_mask=mask.to(device))
            keep = mask.to(device).bool().reshape(-1)
            yield {l: store[l].reshape(-1, adapter.d_ff)[keep] for l in layers}
    finally:
        for h in handles:
            h.remove()
