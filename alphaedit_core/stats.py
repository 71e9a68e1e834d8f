"""Second-moment statistics C = E[k kᵀ] of the edited modules' inputs over a text corpus.

Shared by MEMIT (as its preserved-knowledge term) and AlphaEdit (to build the projector P). Cached on disk as
safetensors under a key made of the model's weights fingerprint, the layer and module, the corpus identity,
the token budget, the window length and the dtype; a file whose recorded key differs is refused, never reused.

Every matrix is checked after it is computed and after it is read back (`validate_second_moment`: shape, finite,
symmetric, positive semi-definite to a tolerance); the token budget must be met exactly (a corpus that runs out
first is an error, not a smaller sample), and an unreadable cache file is an error naming its path. A computation
journals its running sums beside the cache (every ten minutes by default), so that an interrupted one resumes where
it stopped and ends with the same matrices.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .arch import ModelAdapter, capture_inputs, run_until
from .paths import cache_dir, write_whole
from .prompts import pad_right


class Corpus(Protocol):
    identity: str

    def texts(self) -> Iterator[str]: ...


class StaleStatsError(RuntimeError):
    """A statistics file exists at the expected place but was computed for something else."""


class InvalidStatsError(ValueError):
    """A second-moment matrix is not a valid second moment (shape, NaN/inf, asymmetric, not PSD)."""


class CorruptStatsError(InvalidStatsError):
    """A statistics file in the cache cannot be read (truncated, not safetensors, no matrix, short token count)."""


SYMMETRY_TOL = 1e-5  # max |C − Cᵀ| relative to max |C|
PSD_TOL = 1e-5  # smallest eigenvalue allowed: −PSD_TOL · largest eigenvalue


def validate_second_moment(cov: torch.Tensor, layer: int | str, *, d: int | None = None, source: str = "",
                           sym_tol: float = SYMMETRY_TOL, psd_tol: float = PSD_TOL) -> torch.Tensor:
    """Raise `InvalidStatsError` unless `cov` [d, d] is square (of size `d` when given), finite, symmetric
    (max |C − Cᵀ| <= sym_tol · max |C|) and positive semi-definite (λ_min >= −psd_tol · λ_max); return `cov`.

    The PSD test is a Cholesky factorisation of C + psd_tol · max(diag C) · I (max diag C <= λ_max), with an
    eigenvalue computation only when it fails, so a valid matrix costs one Cholesky."""
    where = f"second moment of layer {layer}" + (f" ({source})" if source else "")
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or (d is not None and cov.shape[0] != d):
        want = f"[{d}, {d}]" if d is not None else "a square matrix"
        raise InvalidStatsError(f"{where}: shape {list(cov.shape)}, expected {want}")
    if not bool(torch.isfinite(cov).all()):
        n_nan, n_inf = int(torch.isnan(cov).sum()), int(torch.isinf(cov).sum())
        raise InvalidStatsError(f"{where}: not finite: {n_nan} NaN and {n_inf} infinite entries of "
                                f"{cov.shape[0]}x{cov.shape[1]} (the model's activations overflowed or are NaN)")
    scale = float(cov.abs().max())
    asym = float((cov - cov.T).abs().max())
    if asym > sym_tol * scale:
        raise InvalidStatsError(f"{where}: not symmetric: max |C - C^T| = {asym:.3g}, {asym / scale:.3g} of "
                                f"max |C| = {scale:.3g} (tolerance {sym_tol:g})")
    c = cov.to(torch.float64)
    c = (c + c.T) / 2  # a fresh copy: shifted in place below
    shift = psd_tol * max(float(c.diagonal().max()), 0.0)
    c.diagonal().add_(shift)
    _, info = torch.linalg.cholesky_ex(c)
    if int(info) != 0:
        ev = torch.linalg.eigvalsh(c) - shift
        lo, hi = float(ev[0]), float(ev[-1])
        if lo < -psd_tol * max(hi, 0.0):
            raise InvalidStatsError(f"{where}: not positive semi-definite: smallest eigenvalue {lo:.6g}, largest "
                                    f"{hi:.6g} (tolerance {psd_tol:g} of the largest); {int((ev < 0).sum())} "
                                    f"negative eigenvalue(s)")
    return cov


def check_layers(layers: list[int], n_layers: int) -> None:
    """Raise a ValueError naming hparams field 'layers' unless every index is an int in [0, n_layers)."""
    if not layers:
        raise ValueError(f"hparams field 'layers'={layers!r}: no layer to compute statistics for")
    bad = [l for l in layers if isinstance(l, bool) or not isinstance(l, int) or not 0 <= l < n_layers]
    if bad:
        raise ValueError(f"hparams field 'layers'={list(layers)!r}: layer(s) {bad} out of range, the model has "
                         f"{n_layers} layers (indices 0..{n_layers - 1})")


def check_budget(n_tokens: int | None, name: str = "n_tokens") -> None:
    """`n_tokens` must be a positive int, or None (the whole corpus)."""
    if n_tokens is not None and (isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 1):
        raise ValueError(f"{name}={n_tokens!r}: must be a positive integer (or None: the whole corpus)")


def short_corpus_error(corpus: Corpus, available: int, asked: int, seq_len: int, skipped: int = 0,
                       field: str = "n_tokens") -> ValueError:
    """The error of a corpus that ran out before the token budget."""
    skip = f" after skipping {skipped:,}" if skipped else ""
    return ValueError(f"corpus {corpus.identity!r} ran out of tokens: {available:,} tokens available{skip} "
                      f"(windows of {seq_len}), {asked:,} asked ({field}); ask for at most {available:,}, use a "
                      f"larger corpus, or pass n_tokens=None for the whole corpus")


@dataclass(frozen=True)
class StatsKey:
    model: str  # weights fingerprint
    module: str  # e.g. "model.layers.4.mlp.down_proj"
    corpus: str  # corpus identity
    n_tokens: int | None  # None: the whole corpus
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


def _batches(windows: Iterator[list[int]], budget: int | None, size: int) -> Iterator[list[list[int]]]:
    """Group windows `size` at a time, cutting the last one so that exactly `budget` tokens are used (all of
    them when `budget` is None)."""
    batch: list[list[int]] = []
    if budget is None:
        budget = math.inf
    for w in windows:
        w = w[:budget] if budget < len(w) else w
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
    n_tokens: int | None,
    seq_len: int,
    dtype: torch.dtype = torch.float32,
    batch_windows: int = 8,
    progress: bool = True,
    journal: Path | None = None,
    journal_every_s: float = 600.0,
    journal_id: str = "",
) -> tuple[dict[int, torch.Tensor], int]:
    """Mean of k kᵀ over exactly `n_tokens` non-padding tokens (`None`: the whole corpus): {layer: [d_ff, d_ff]},
    tokens counted. A corpus shorter than `n_tokens` is a ValueError naming both counts; every matrix is checked
    by `validate_second_moment`.

    Runs the model only up to the deepest requested layer; sums in float64 on each layer's device; the matrices
    returned are on the CPU (they are cached on disk; the Editor moves them to the layers' devices).

    `journal`: a file where the running float64 sums and the tokens counted are written whole every
    `journal_every_s` seconds, after a batch; a later call with the same file and `journal_id` (which must name
    everything the sums depend on: model, corpus, budget, window length, layers) resumes after the tokens it counted
    and returns the same matrices as an uninterrupted run, to the bit (same windows, same batches, same order of
    summation). A journal written for another `journal_id` or other layers is an error naming the file."""
    check_layers(layers, adapter.n_layers)
    check_budget(n_tokens)
    devices = {l: adapter.layer_device(l) for l in layers}
    state = _read_journal(journal, journal_id, layers, adapter.d_ff) if journal is not None else None
    if state is None:
        sums = {l: torch.zeros(adapter.d_ff, adapter.d_ff, dtype=torch.float64, device=devices[l]) for l in layers}
        counted = 0
    else:
        sums, counted = {l: s.to(devices[l]) for l, s in state[0].items()}, state[1]
    budget = None if n_tokens is None else n_tokens - counted
    last_write = time.monotonic()
    with tqdm(total=n_tokens, initial=counted, desc="second moments", unit="tok", disable=not progress) as bar:
        windows = _skip_tokens(token_windows(tok, corpus, seq_len), counted)
        for keys in (_stream_keys(model, tok, adapter, layers, windows, budget, batch_windows) if budget != 0 else ()):
            for l, k in keys.items():
                k = k.to(sums[l].device, torch.float64)
                sums[l] += k.T @ k
            n = len(next(iter(keys.values())))
            counted += n
            bar.update(n)
            if journal is not None and time.monotonic() - last_write >= journal_every_s:
                _write_journal(journal, journal_id, sums, counted)
                last_write = time.monotonic()
    if counted == 0:
        raise ValueError(f"corpus {corpus.identity!r} produced no tokens")
    if n_tokens is not None and counted < n_tokens:
        raise short_corpus_error(corpus, counted, n_tokens, seq_len, field="n_tokens, hparams field 'mom2_n_tokens'")
    source = f"computed on {counted:,} tokens of corpus {corpus.identity!r}"
    return {l: validate_second_moment((s / counted).to(dtype).cpu(), l, d=adapter.d_ff, source=source)
            for l, s in sums.items()}, counted


def _skip_tokens(windows: Iterator[list[int]], n: int) -> Iterator[list[int]]:
    """`windows` after their first `n` tokens (whole windows dropped, the window that holds the cut continued from
    it)."""
    skipped = 0
    for w in windows:
        if skipped + len(w) > n:
            yield w[n - skipped :]
            yield from windows
            return
        skipped += len(w)


def _read_metadata(path: Path, corrupt: Callable[[str], CorruptStatsError]) -> dict[str, str]:
    """The metadata of a safetensors file; `corrupt(why)` raised when it cannot be read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise corrupt(f"{type(err).__name__}: {err}") from err


def _read_tensors(path: Path, corrupt: Callable[[str], CorruptStatsError]) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; `corrupt(why)` raised when they cannot be read."""
    from safetensors import SafetensorError

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise corrupt(f"{type(err).__name__}: {err}") from err


def _write_journal(path: Path, journal_id: str, sums: dict[int, torch.Tensor], counted: int) -> None:
    """The running sums {layer: [d_ff, d_ff] float64} and the tokens counted, written whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"journal_id": journal_id, "tokens_counted": str(counted), "layers": json.dumps(sorted(sums))}
    tensors = {f"sum.{l}": s.detach().cpu().contiguous() for l, s in sums.items()}
    write_whole(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _read_journal(path: Path, journal_id: str, layers: list[int], d: int
                  ) -> tuple[dict[int, torch.Tensor], int] | None:
    """The sums and count of a journal written by `_write_journal` for the same id and layers; None when there is
    no file. A journal of another computation or an unreadable one is a `CorruptStatsError` naming the file."""
    path = Path(path)
    if not path.exists():
        return None

    def corrupt(why: str) -> CorruptStatsError:
        return CorruptStatsError(f"statistics journal {path} is unreadable ({why}); delete it to start the statistics "
                                 f"again")

    meta, tensors = _read_metadata(path, corrupt), _read_tensors(path, corrupt)
    if meta.get("journal_id") != journal_id or meta.get("layers") != json.dumps(sorted(layers)):
        raise CorruptStatsError(f"statistics journal {path} belongs to another computation (id "
                                f"{meta.get('journal_id')!r}, layers {meta.get('layers')}; wanted {journal_id!r}, "
                                f"{sorted(layers)}); delete it to start the statistics again")
    sums = {l: tensors.get(f"sum.{l}") for l in layers}
    counted = int(meta.get("tokens_counted", "-1"))
    if counted < 0 or any(s is None or s.shape != (d, d) or s.dtype != torch.float64 for s in sums.values()):
        raise CorruptStatsError(f"statistics journal {path} is incomplete (tokens counted {counted}, tensors "
                                f"{sorted(tensors)}); delete it to start the statistics again")
    return sums, counted


def layer_stats(
    model: torch.nn.Module,
    tok,
    adapter: ModelAdapter,
    layers: list[int],
    corpus: Corpus,
    *,
    fingerprint: str,
    n_tokens: int | None,
    seq_len: int,
    dtype: str = "float32",
    root: Path | None = None,
    progress: bool = True,
    journal_every_s: float = 600.0,
) -> dict[int, torch.Tensor]:
    """Second moments for `layers`, read from the cache where a file with the same key exists, computed (and
    cached) otherwise. {layer: [d_ff, d_ff]}. `n_tokens=None`: the whole corpus. Every matrix, read or
    computed, is checked by `validate_second_moment`. A computation journals its running sums every
    `journal_every_s` seconds (`compute_second_moments`): interrupted, the same call resumes it."""
    check_layers(layers, adapter.n_layers)
    check_budget(n_tokens)
    root = Path(root) if root is not None else cache_dir("stats")
    keys = {l: StatsKey(fingerprint, adapter.mlp_out_names[l], corpus.identity, n_tokens, seq_len, dtype) for l in layers}
    out = {l: load_stats(keys[l], root) for l in layers}
    for l, cov in out.items():
        if cov is not None:
            path = keys[l].path(root)
            try:
                validate_second_moment(cov, l, d=adapter.d_ff, source=f"cached file {path}")
            except InvalidStatsError as err:
                raise CorruptStatsError(f"{err}; delete the file to recompute it") from err
    missing = [l for l, v in out.items() if v is None]
    if missing:
        # the running sums are journaled beside the cache files, so that an interrupted computation resumes
        journal_id = hashlib.sha256("|".join(keys[l].digest() for l in missing).encode()).hexdigest()[:20]
        journal = root / fingerprint[:16] / f"partial-{journal_id}.safetensors"
        fresh, counted = compute_second_moments(
            model, tok, adapter, missing, corpus, n_tokens=n_tokens, seq_len=seq_len,
            dtype=getattr(torch, dtype), progress=progress, journal=journal, journal_every_s=journal_every_s,
            journal_id=journal_id,
        )
        for l in missing:
            save_stats(keys[l], root, fresh[l], counted)
            out[l] = fresh[l]
        journal.unlink(missing_ok=True)
    return out


def save_stats(key: StatsKey, root: Path, cov: torch.Tensor, counted: int) -> Path:
    path = key.path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: str(v) for k, v in asdict(key).items()} | {"tokens_counted": str(counted)}
    # another process may be writing the same key
    return write_whole(path, lambda tmp: save_file({"cov": cov.contiguous()}, str(tmp), metadata=meta))


def load_stats(key: StatsKey, root: Path, path: Path | None = None) -> torch.Tensor | None:
    """The cached matrix for `key` ([d_ff, d_ff]), None when absent; `StaleStatsError` when the file's recorded
    key differs; `CorruptStatsError` (naming the path) when the file cannot be read, holds no matrix, or records
    fewer tokens than the key's budget."""
    path = Path(path) if path is not None else key.path(root)
    if not path.exists():
        return None
    def corrupt(why: str) -> CorruptStatsError:
        return CorruptStatsError(f"statistics file {path} is unreadable or incomplete ({why}); delete it to recompute")

    meta = _read_metadata(path, corrupt)
    expected = {k: str(v) for k, v in asdict(key).items()}
    wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if wrong:
        raise StaleStatsError(f"statistics file {path} was computed for another setting: " +
                              ", ".join(f"{k}: file has {a!r}, wanted {b!r}" for k, (a, b) in wrong.items()))
    counted = meta.get("tokens_counted")
    if key.n_tokens is not None and counted is not None and counted != str(key.n_tokens):
        raise corrupt(f"it records {counted} tokens counted, the key asks for {key.n_tokens}")
    tensors = _read_tensors(path, corrupt)
    if "cov" not in tensors:
        raise corrupt(f"no 'cov' tensor, only {sorted(tensors)}")
    return tensors["cov"]


@torch.no_grad()
def corpus_keys(
    model: torch.nn.Module, tok, adapter: ModelAdapter, layers: list[int], corpus: Corpus, *,
    skip_tokens: int, n_tokens: int | None, seq_len: int, batch_windows: int = 8,
) -> dict[int, torch.Tensor]:
    """Keys of the edited modules on `n_tokens` corpus tokens that come after the first `skip_tokens` (the ones the
    statistics used): held-out preserved keys, {layer: [n_tokens, d_ff]} (`None`: the rest of the corpus). A corpus
    shorter than `skip_tokens + n_tokens` is a ValueError naming the counts."""
    check_layers(layers, adapter.n_layers)
    check_budget(n_tokens)
    windows = _skip_tokens(token_windows(tok, corpus, seq_len), skip_tokens)
    out: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    got = 0
    for keys in _stream_keys(model, tok, adapter, layers, windows, n_tokens, batch_windows):
        for l, k in keys.items():
            out[l].append(k.float().cpu())
        got += len(next(iter(keys.values())))
    if got == 0 or n_tokens is not None and got < n_tokens:
        raise short_corpus_error(corpus, got, n_tokens or 1, seq_len, skipped=skip_tokens)
    return {l: torch.cat(v) for l, v in out.items()}


def _stream_keys(model, tok, adapter: ModelAdapter, layers: list[int], windows: Iterator[list[int]],
                 n_tokens: int | None, batch_windows: int) -> Iterator[dict[int, torch.Tensor]]:
    """Run the model on `n_tokens` tokens of `windows` (all of them when None), `batch_windows` windows at a time,
    up to the deepest layer; yield each batch's keys of every non-padding token: {layer: [tokens, d_ff]}."""
    device = adapter.input_device
    store: dict[int, torch.Tensor] = {}
    handles = capture_inputs({l: adapter.mlp_out(l) for l in layers}, store)
    try:
        for batch in _batches(windows, n_tokens, batch_windows):
            ids, mask = pad_right(batch, tok.pad_token_id or 0)
            run_until(model, adapter.mlp_out(max(layers)), input_ids=ids.to(device), attention_mask=mask.to(device))
            keep = mask.to(device).bool().reshape(-1)
            # each layer's keys stay on the device of the layer that produced them (the mask follows them there)
            yield {l: store[l].reshape(-1, adapter.d_ff)[keep.to(store[l].device)] for l in layers}
    finally:
        for h in handles:
            h.remove()
