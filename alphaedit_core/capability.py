"""General capability (claim P2) and hidden-representation drift (claim P3) on held-out ordinary English text.

The covariance statistics use Jane Austen's novels (`corpus.AustenCorpus`), so text for testing what edits do to
the rest of the model must come from elsewhere. Two held-out sources, both installable offline from Debian like the
Austen corpus (``apt-get download`` into ``cache_dir("corpus")``, unpacked in Python, no root install):

* **fortunes** (`FortunesCorpus`, Debian ``fortunes``, ~15k items): the main English collection of the Unix
  ``fortune`` program -- short *modern* English quotations, jokes, aphorisms, bits of dialogue and verse
  (computers, people, politics, science, songs-poems, ...). Informal 20th-century English, the opposite register to
  Austen's narrative prose. Parsing: every file under ``usr/share/games/fortunes/`` except the ``.dat`` indexes,
  anything under ``off/`` (the offensive collection; Debian ships it separately in ``fortunes-off``, so normally
  absent) and ``ascii-art`` (drawings, not text); items are separated by lines holding a single ``%``; trailing
  spaces are stripped, inner line breaks kept (they are part of the genre: verse, dialogue, attributions).
* **wordnet** (`WordNetCorpus`, Debian ``wordnet-base``, WordNet 3.0, ~117k synsets): dictionary definitions --
  terse encyclopaedic/expository English, close to the *kind* of factual statement knowledge editing touches.
  Parsing: each synset line of ``data.noun``/``data.verb``/``data.adj``/``data.adv`` (the license header lines
  start with spaces and are skipped); the gloss is the part after ``" | "`` (definition; example sentences in
  quotes). A document line is ``"<first lemma>: <gloss>"`` (underscores -> spaces, adjective markers such as
  ``(a)`` dropped): a definition without its headword is not a sentence anyone writes.

Not chosen: ``sword-text-web`` (the World English Bible: archaic register, close to Austen's in age, in a binary
module format) and ``python3.11-doc`` (HTML technical documentation, mostly code and markup).

Each source is parsed once into a deterministic JSON-lines file in the cache (``fortunes.jsonl``,
``wordnet.jsonl``; one item per line: ``{"source": ..., "text": ...}``, in archive order), written atomically.
A corpus groups consecutive items of one source (one fortune file, one WordNet lexicographer file such as
``noun.animal``) into documents of at least `doc_words` words, then takes the sources' documents round-robin, so
the first N documents sample every source. Identity: name + text-format version + sha256 of the JSON-lines file +
the grouping parameters.

Measurements (all deterministic, float64 sums; windows from `stats.token_windows`, budgets cut as in
`stats._batches`, so every function sees exactly the same tokens for the same arguments):

* `perplexity` -- mean next-token NLL and perplexity, with per-window sums for a paired bootstrap across models.
* `hidden_states` -- the residual stream after decoder layer l for every token.
* `representation_drift` -- per layer: paired token distances and an unpaired distribution distance.
* `paired_bootstrap` -- the difference in mean NLL between two models on the same windows, with a percentile CI.
* `paired_nll` -- the same for a table of per-window NLL sums (one row per method and window), per text source.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import torch

from .arch import ModelAdapter, layer_output, run_until
from .corpus import _apt_update, _deb_files, _sha
from .paths import cache_dir
from .prompts import pad_right
from .stats import _batches, token_windows

__all__ = [
    "HELD_OUT",
    "FortunesCorpus",
    "WordNetCorpus",
    "held_out_corpus",
    "fetch_deb",
    "build_fortunes_text",
    "build_wordnet_text",
    "parse_fortunes",
    "parse_wordnet",
    "perplexity",
    "hidden_states",
    "representation_drift",
    "paired_bootstrap",
]

# ----------------------------------------------------------------------------------------------------------------
# fetching and parsing

FORTUNES_PACKAGE = "fortunes"
WORDNET_PACKAGE = "wordnet-base"
_FORTUNES_DIR = "usr/share/games/fortunes/"
_WORDNET_DIR = "usr/share/wordnet/"
_FORTUNES_SKIP = {"ascii-art"}  # drawings, not text
_WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
# lexicographer file numbers (WordNet 3.0 lexnames(5WN)); the source label of each gloss
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()
_FORTUNES_FORMAT = "fortunes-text-v1"  # bump when the parsing changes
_WORDNET_FORMAT = "wordnet-text-v1"
_GROUPING = "group-v1"  # bump when the item -> document rule changes


def _find_deb(folder: Path, package: str) -> Path | None:
    debs = sorted(folder.glob(f"{package}_*.deb"))
    return debs[-1] if debs else None


def _no_deb_message(package: str, folder: Path) -> str:
    return (f"The held-out corpus needs the Debian package {package}. On Debian or Ubuntu: `sudo apt-get update && "
            f"(cd {folder} && apt-get download {package})` (or run scripts/fetch_corpus.sh). Elsewhere, download the "
            f".deb from https://packages.debian.org/stable/all/{package}/download and put it in {folder}.")


def fetch_deb(package: str, folder: str | os.PathLike | None = None, *, update: bool | None = None) -> Path:
    """The `package` .deb in `folder` (default ``cache_dir("corpus")``), downloaded with ``apt-get download`` when
    it is not there yet; ``apt-get update`` runs only when the download fails and we are root (or `update=True`;
    not root: a RuntimeError saying to run it). Same rules as `corpus.fetch_austen`. Idempotent."""
    folder = Path(folder) if folder is not None else cache_dir("corpus")
    folder.mkdir(parents=True, exist_ok=True)
    deb = _find_deb(folder, package)
    if deb is not None:
        return deb
    if shutil.which("apt-get") is None:
        raise RuntimeError("apt-get not found. " + _no_deb_message(package, folder))
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0

    def download() -> subprocess.CompletedProcess:
        cmd = ["apt-get", "download", *(["-o", "APT::Sandbox::User=root"] if is_root else []), package]
        return subprocess.run(cmd, cwd=folder, capture_output=True, text=True)

    if update:
        _apt_update(is_root)
    res = download()
    if res.returncode != 0 and update is None:
        if not is_root:
            raise RuntimeError(f"`apt-get download {package}` failed in {folder}:\n{res.stderr.strip()}\n\nThe "
                               f"package lists may be missing: apt-get update needs root. "
                               + _no_deb_message(package, folder))
        _apt_update(is_root)
        res = download()
    deb = _find_deb(folder, package)
    if res.returncode != 0 or deb is None:
        raise RuntimeError(f"`apt-get download {package}` failed in {folder}:\n{res.stderr.strip()}\n\n"
                           + _no_deb_message(package, folder))
    return deb


def parse_fortunes(files: dict[str, bytes]) -> list[dict]:
    """{path relative to the fortunes folder: bytes} -> [{"source": file name, "text": fortune}], files in sorted
    order, fortunes in file order. Skips ``.dat`` indexes, ``off/...`` and ``ascii-art``; a fortune ends at a line
    holding a single ``%``; empty items are dropped."""
    out = []
    for name in sorted(files):
        if name.endswith(".dat") or name.startswith("off/") or "/" in name or name in _FORTUNES_SKIP:
            continue
        text = files[name].decode("utf-8", errors="replace").replace("\r\n", "\n")
        cur: list[str] = []
        for line in text.split("\n") + ["%"]:
            if line.strip() == "%":
                item = "\n".join(cur).strip("\n")
                if item.strip():
                    out.append({"source": name, "text": item})
                cur = []
            else:
                cur.append(line.rstrip())
    return out


_ADJ_MARKER = re.compile(r"\((a|p|ip)\)$")


def parse_wordnet(files: dict[str, bytes]) -> list[dict]:
    """{"data.noun": bytes, ...} -> [{"source": lexicographer file, "text": "<lemma>: <gloss>"}] in the order of
    `_WORDNET_FILES`, then file order. Lines starting with a space (the license) are skipped."""
    out = []
    for name in _WORDNET_FILES:
        if name not in files:
            continue
        for line in files[name].decode("utf-8", errors="replace").splitlines():
            if not line or line.startswith(" ") or " | " not in line:
                continue
            head, gloss = line.split(" | ", 1)
            fields = head.split()
            lexnum, w_cnt = int(fields[1]), int(fields[3], 16)
            if w_cnt < 1:
                continue
            lemma = _ADJ_MARKER.sub("", fields[4]).replace("_", " ")
            gloss = gloss.strip()
            if not gloss:
                continue
            source = _LEXNAMES[lexnum] if lexnum < len(_LEXNAMES) else f"lex{lexnum:02d}"
            out.append({"source": source, "text": f"{lemma}: {gloss}"})
    return out


def _write_jsonl(items: list[dict], out: Path) -> Path:
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False, sort_keys=True) + "\n")
    os.replace(tmp, out)
    return out


def _build(name: str, package: str, prefix: str, parse, folder, fetch: bool) -> Path:
    folder = Path(folder) if folder is not None else cache_dir("corpus")
    out = folder / f"{name}.jsonl"
    if out.is_file():
        return out
    deb = fetch_deb(package, folder) if fetch else _find_deb(folder, package)
    if deb is None:
        raise FileNotFoundError(_no_deb_message(package, folder))
    items = parse(_deb_files(deb, prefix))
    if not items:
        raise ValueError(f"{deb}: no text found under {prefix}")
    return _write_jsonl(items, out)


def build_fortunes_text(folder: str | os.PathLike | None = None, *, fetch: bool = True) -> Path:
    """``fortunes.jsonl`` in the cache, built once from the ``fortunes`` .deb."""
    return _build("fortunes", FORTUNES_PACKAGE, _FORTUNES_DIR, parse_fortunes, folder, fetch)


def build_wordnet_text(folder: str | os.PathLike | None = None, *, fetch: bool = True) -> Path:
    """``wordnet.jsonl`` in the cache, built once from the ``wordnet-base`` .deb."""
    return _build("wordnet", WORDNET_PACKAGE, _WORDNET_DIR, parse_wordnet, folder, fetch)


# ----------------------------------------------------------------------------------------------------------------
# corpora

class _JsonlItemsCorpus:
    """Items {"source", "text"} of a JSON-lines file, grouped into documents (see the module docstring)."""

    name = ""
    text_format = ""
    joiner = "\n"

    def __init__(self, path: str | os.PathLike, doc_words: int = 200, interleave: bool = True):
        if isinstance(doc_words, bool) or not isinstance(doc_words, int) or doc_words < 1:
            raise ValueError(f"doc_words={doc_words!r}: must be a positive integer")
        self.path = Path(path)
        self.doc_words, self.interleave = doc_words, bool(interleave)
        data = self.path.read_bytes()
        self._items = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
        self.identity = (f"{self.name}:{self.text_format}:{_sha(data)}:{_GROUPING}:w{self.doc_words}"
                         f":{'rr' if self.interleave else 'seq'}")

    def documents_by_source(self) -> dict[str, list[str]]:
        by: dict[str, list[str]] = {}
        for it in self._items:  # dicts keep first-seen order: archive order
            by.setdefault(it["source"], []).append(it["text"])
        out = {}
        for source, items in by.items():
            docs, cur, words = [], [], 0
            for t in items:
                cur.append(t)
                words += len(t.split())
                if words >= self.doc_words:
                    docs.append(self.joiner.join(cur))
                    cur, words = [], 0
            if cur:
                docs.append(self.joiner.join(cur))
            out[source] = docs
        return out

    def texts(self) -> Iterator[str]:
        per = list(self.documents_by_source().values())
        if not self.interleave:
            for docs in per:
                yield from docs
            return
        for i in range(max(map(len, per), default=0)):
            for docs in per:
                if i < len(docs):
                    yield docs[i]

    @property
    def n_items(self) -> int:
        return len(self._items)

    @property
    def n_words(self) -> int:
        return sum(len(it["text"].split()) for it in self._items)

    def __len__(self) -> int:
        return sum(len(d) for d in self.documents_by_source().values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r})"


class FortunesCorpus(_JsonlItemsCorpus):
    """Debian ``fortunes``: short modern English quotations; fortunes of one file joined by blank lines."""

    name, text_format, joiner = "fortunes", _FORTUNES_FORMAT, "\n\n"

    def __init__(self, doc_words: int = 200, interleave: bool = True, folder: str | os.PathLike | None = None,
                 fetch: bool = True):
        super().__init__(build_fortunes_text(folder, fetch=fetch), doc_words, interleave)


class WordNetCorpus(_JsonlItemsCorpus):
    """Debian ``wordnet-base``: WordNet 3.0 definitions, one ``lemma: gloss`` per line."""

    name, text_format, joiner = "wordnet", _WORDNET_FORMAT, "\n"

    def __init__(self, doc_words: int = 200, interleave: bool = True, folder: str | os.PathLike | None = None,
                 fetch: bool = True):
        super().__init__(build_wordnet_text(folder, fetch=fetch), doc_words, interleave)


HELD_OUT = {"fortunes": FortunesCorpus, "wordnet": WordNetCorpus}


def held_out_corpus(name: str, **kwargs):
    """"fortunes" | "wordnet" (also "wordnet-base", "fortune")."""
    key = {"fortune": "fortunes", "wordnet-base": "wordnet"}.get(name.lower(), name.lower())
    if key not in HELD_OUT:
        raise ValueError(f"unknown held-out corpus {name!r}: use one of {sorted(HELD_OUT)}")
    return HELD_OUT[key](**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# measurements

def _check_count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}")
    return value


def _windows(tok, corpus, seq_len: int, skip_tokens: int) -> Iterator[list[int]]:
    """`stats.token_windows` minus the first `skip_tokens` tokens (whole windows dropped, then the rest of the cut
    one, without a new BOS) -- the same rule as `stats.corpus_keys`."""
    windows = token_windows(tok, corpus, seq_len)
    skipped = 0
    if skip_tokens:
        for w in windows:
            if skipped + len(w) > skip_tokens:
                return itertools.chain([w[skip_tokens - skipped:]], windows)
            skipped += len(w)
        return iter(())
    return windows


def _short(corpus, got: int, n_tokens: int, seq_len: int, skip_tokens: int) -> ValueError:
    skip = f" after skipping {skip_tokens:,}" if skip_tokens else ""
    return ValueError(f"corpus {corpus.identity!r} ran out of tokens: {got:,} tokens available{skip} (windows of "
                      f"{seq_len}), {n_tokens:,} asked; ask for fewer or use a larger corpus")


@torch.no_grad()
def perplexity(model, tok, corpus, *, n_tokens: int, seq_len: int, skip_tokens: int = 0,
               batch_windows: int = 8) -> dict:
    """Next-token NLL of `model` on exactly `n_tokens` input tokens of `corpus`: the windows of
    `stats.token_windows(tok, corpus, seq_len)` after the first `skip_tokens` tokens, the last one cut so that the
    budget is met (a corpus that runs out first is a ValueError).

    Every window of L tokens (ids [L], BOS first where the tokenizer adds one) is run as one right-padded row of an
    [batch_windows, max L] batch; its L − 1 tokens after the first are scored: nll_t = −log softmax(logits[t−1])[id_t]
    (logits [B, S, vocab], float32 log-softmax, float64 sums). Returns a dict:

    * ``mean_nll`` -- sum of nll over all scored tokens / ``n_scored`` (nats per token); ``perplexity`` = exp of it;
    * ``n_tokens`` (input tokens, = the budget), ``n_scored`` (= n_tokens − number of windows), ``n_windows``;
    * ``windows`` -- [(window index, nll sum, scored token count)] in order, index 0 = the first window after the
      skip: the unit of a paired bootstrap across models run with the same arguments (see `paired_bootstrap`);
    * ``corpus``, ``seq_len``, ``skip_tokens``.
    Deterministic for a given model and arguments (eval mode is the caller's; models here are loaded in eval)."""
    _check_count(n_tokens, "n_tokens", 1)
    _check_count(seq_len, "seq_len", 2)
    _check_count(skip_tokens, "skip_tokens", 0)
    _check_count(batch_windows, "batch_windows", 1)
    device = next(model.parameters()).device
    rows: list[tuple[int, float, int]] = []
    got = 0
    for batch in _batches(_windows(tok, corpus, seq_len, skip_tokens), n_tokens, batch_windows):
        ids, mask = pad_right(batch, tok.pad_token_id or 0)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        for i, w in enumerate(batch):
            n = len(w) - 1
            if n > 0:
                lp = torch.log_softmax(logits[i, :n].float(), dim=-1)
                target = ids[i, 1:len(w)].to(lp.device)  # the logits are on the LM head's device
                s = -lp.gather(-1, target[:, None]).to(torch.float64).sum().item()
            else:
                s = 0.0
            rows.append((len(rows), s, max(n, 0)))
            got += len(w)
    if got < n_tokens:
        raise _short(corpus, got, n_tokens, seq_len, skip_tokens)
    total = math.fsum(r[1] for r in rows)
    scored = sum(r[2] for r in rows)
    if scored == 0:
        raise ValueError(f"no token to score: {n_tokens} input token(s) in windows of one token each")
    mean = total / scored
    return {"corpus": corpus.identity, "seq_len": seq_len, "skip_tokens": skip_tokens, "n_tokens": got,
            "n_scored": scored, "n_windows": len(rows), "mean_nll": mean, "perplexity": math.exp(mean),
            "windows": rows}


def paired_bootstrap(reference: dict, edited: dict, *, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Difference in mean NLL (edited − reference, nats/token) between two `perplexity` results on the same windows,
    with a percentile bootstrap CI that resamples windows (the same windows for both models: paired).
    Each resample's difference is sum(nll_e − nll_r) / sum(count) over the drawn windows."""
    a, b = reference["windows"], edited["windows"]
    if [(i, c) for i, _, c in a] != [(i, c) for i, _, c in b] or reference["corpus"] != edited["corpus"]:
        raise ValueError("paired_bootstrap needs two perplexity results on the same corpus windows")
    d = torch.tensor([e[1] - r[1] for r, e in zip(a, b)], dtype=torch.float64)
    c = torch.tensor([r[2] for r in a], dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(a), (n_boot, len(a)), generator=g)
    boot = d[idx].sum(1) / c[idx].sum(1).clamp_min(1)
    lo, hi = torch.quantile(boot, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    diff = float(d.sum() / c.sum())
    return {"delta_nll": diff, "ci_low": lo, "ci_high": hi, "ppl_ratio": math.exp(diff), "n_windows": len(a),
            "level": level, "n_boot": n_boot}


def _as_perplexity(corpus: str, w, index) -> dict:
    """The rows `index` of a per-window table (nll_sum, tokens by window) in the shape `perplexity` returns."""
    return {"corpus": corpus, "windows": [(int(i), float(w.at[i, "nll_sum"]), int(w.at[i, "tokens"])) for i in index]}


def paired_nll(windows, a: str, b: str, *, method_col: str = "method", n_boot: int = 2000, seed: int = 0,
               level: float = 0.95):
    """Per text source, the difference in mean NLL per token `a` − `b` over the windows both were scored on, weighted
    by tokens: diff = Σ(nll_a − nll_b) / Σ tokens = log(perplexity_a / perplexity_b) of the pooled perplexities,
    with `paired_bootstrap`'s interval (windows resampled; a 2-token window weighs 2 tokens, not one window).

    `windows`: a DataFrame with columns `method_col`, corpus, window, nll_sum, tokens (scored tokens), one row per
    method, corpus and window. Returns a DataFrame with columns prompt_kind (the corpus), n (paired windows),
    n_only_a, n_only_b, mean_a, mean_b (pooled NLL per token), diff, ci_low, ci_high, ci_method, tokens.
    Raises `ValueError` when a method has no row, a source has no common window, or a window's token count
    differs between the two (they were not scored on the same text)."""
    import pandas as pd

    rows = []
    for name in (a, b):
        if not (windows[method_col] == name).any():
            raise ValueError(f"no rows for method {name!r} in column {method_col!r}")
    for corpus, group in windows[windows[method_col].isin([a, b])].groupby("corpus", sort=True):
        wa, wb = (group[group[method_col] == m].set_index("window")[["nll_sum", "tokens"]] for m in (a, b))
        for name, w in ((a, wa), (b, wb)):
            if w.index.duplicated().any():
                raise ValueError(f"corpus {corpus!r}: method {name!r} has a window twice")
        common = wa.index.intersection(wb.index).sort_values()
        if len(common) == 0:
            raise ValueError(f"corpus {corpus!r}: no window scored for both {a!r} and {b!r}")
        ta, tb = wa.loc[common, "tokens"].to_numpy(), wb.loc[common, "tokens"].to_numpy()
        if (ta != tb).any():
            raise ValueError(f"corpus {corpus!r}: windows {list(common[ta != tb])[:5]} scored different token counts "
                             f"for {a!r} and {b!r}")
        boot = paired_bootstrap(_as_perplexity(corpus, wb, common), _as_perplexity(corpus, wa, common),
                                n_boot=n_boot, seed=seed, level=level)
        tokens = int(ta.sum())
        rows.append(dict(prompt_kind=corpus, n=len(common), n_only_a=len(wa) - len(common),
                         n_only_b=len(wb) - len(common), mean_a=float(wa.loc[common, "nll_sum"].sum()) / tokens,
                         mean_b=float(wb.loc[common, "nll_sum"].sum()) / tokens, diff=boot["delta_nll"],
                         ci_low=boot["ci_low"], ci_high=boot["ci_high"],
                         ci_method="bootstrap over windows, token-weighted", tokens=tokens))
    return pd.DataFrame(rows)


@torch.no_grad()
def hidden_states(model, tok, corpus, *, layers: list[int], n_tokens: int, seq_len: int,
                  skip_tokens: int = 0, batch_windows: int = 8) -> dict[int, torch.Tensor]:
    """The residual stream after decoder layer l (the output of ``ModelAdapter.layers[l]``, before any final norm)
    at every token of the same `n_tokens` input tokens as `perplexity` uses: {l: [n_tokens, d_model]} float32 on
    the CPU, tokens in window order, padding dropped. For l < n_layers − 1 this is
    ``model(..., output_hidden_states=True).hidden_states[l + 1]``; the forward stops after the deepest layer."""
    _check_count(n_tokens, "n_tokens", 1)
    _check_count(seq_len, "seq_len", 1)
    _check_count(skip_tokens, "skip_tokens", 0)
    _check_count(batch_windows, "batch_windows", 1)
    adapter = ModelAdapter.from_model(model)
    layers = list(layers)
    bad = [l for l in layers if isinstance(l, bool) or not isinstance(l, int) or not 0 <= l < adapter.n_layers]
    if not layers or bad:
        raise ValueError(f"layers={layers!r}: need layer indices in 0..{adapter.n_layers - 1}")
    device = next(model.parameters()).device
    store: dict[int, torch.Tensor] = {}

    def make(l):
        def hook(_m, _args, output):
            store[l] = layer_output(output)
        return hook

    handles = [adapter.layers[l].register_forward_hook(make(l)) for l in sorted(set(layers))]
    out: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    got = 0
    try:
        for batch in _batches(_windows(tok, corpus, seq_len, skip_tokens), n_tokens, batch_windows):
            ids, mask = pad_right(batch, tok.pad_token_id or 0)
            store.clear()
            run_until(model, adapter.layers[max(layers)], input_ids=ids.to(device), attention_mask=mask.to(device))
            keep = mask.bool().reshape(-1)
            for l in layers:
                out[l].append(store[l].reshape(-1, adapter.d_model)[keep.to(store[l].device)].float().cpu())
            got += int(keep.sum())
    finally:
        for h in handles:
            h.remove()
    if got < n_tokens:
        raise _short(corpus, got, n_tokens, seq_len, skip_tokens)
    return {l: torch.cat(v) for l, v in out.items()}


def representation_drift(reference: dict[int, torch.Tensor], edited: dict[int, torch.Tensor], eps: float = 1e-12):
    """Per-layer drift of `edited` hidden states from `reference` ones on the same tokens ({layer: [n, d]} each,
    e.g. from `hidden_states` with the same arguments). A pandas DataFrame, one row per layer (sorted):

    * ``rel_l2`` -- mean over tokens of ‖h_i − h0_i‖ / ‖h0_i‖ (paired);
    * ``cos`` -- mean over tokens of cos(h_i, h0_i) (paired);
    * ``mean_shift`` -- ‖μ − μ0‖ / s0, μ and μ0 the mean vectors over tokens, s0 = sqrt(mean_i ‖h0_i − μ0‖²) the
      reference spread (root of the total variance, 1/n); distribution-level (unpaired): 0 for the same
      distribution (up to sampling noise ~ 1/sqrt(n)), 1 when the centre moved by one typical distance of a token
      from the centre. ‖μ − μ0‖² is the linear-kernel MMD²;
    * ``spread_ratio`` -- s / s0, the same spread of the edited states over the reference one (1: unchanged);
    * ``n_tokens``, ``d_model``.
    Computed in float64; ε in the denominators only guards zero vectors."""
    import pandas as pd

    if sorted(reference) != sorted(edited):
        raise ValueError(f"layers differ: reference {sorted(reference)}, edited {sorted(edited)}")
    rows = []
    for l in sorted(reference):
        h0, h = reference[l].to(torch.float64), edited[l].to(torch.float64)
        if h0.shape != h.shape or h0.ndim != 2:
            raise ValueError(f"layer {l}: shapes {list(h0.shape)} and {list(h.shape)} differ or are not [n, d]")
        n0 = h0.norm(dim=1)
        rel = ((h - h0).norm(dim=1) / n0.clamp_min(eps)).mean()
        cos = ((h * h0).sum(1) / (h.norm(dim=1) * n0).clamp_min(eps)).mean()
        mu0, mu = h0.mean(0), h.mean(0)
        s0 = (h0 - mu0).pow(2).sum(1).mean().sqrt()
        s = (h - mu).pow(2).sum(1).mean().sqrt()
        rows.append({"layer": l, "n_tokens": h0.shape[0], "d_model": h0.shape[1], "rel_l2": float(rel),
                     "cos": float(cos), "mean_shift": float((mu - mu0).norm() / s0.clamp_min(eps)),
                     "spread_ratio": float(s / s0.clamp_min(eps))})
    return pd.DataFrame(rows)
