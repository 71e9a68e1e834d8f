"""Text for the covariance statistics (REFERENCE.md step 1): the keys' second moment E[k kᵀ] over generic text.

A corpus is any object with
  * ``identity: str`` -- a stable string that changes whenever the text changes (name + content hash, or the dataset
    spec + revision); statistics files are keyed by it, so a different text never reuses a stale covariance;
  * ``texts() -> Iterator[str]`` -- the documents, always in the same order.

The official code (and EasyEdit) use Wikipedia through ``datasets``, which needs the internet. The offline default is
**Jane Austen's six novels** (`AustenCorpus`, Debian package ``r-cran-janeaustenr``, ~730k words) because it is
ordinary, well-edited English prose like Wikipedia, it is in the public domain, and it installs from a package registry
that this project can reach (Debian; nothing useful is on PyPI). It is *not* the reference's domain: 19th-century
narrative and dialogue instead of encyclopaedic articles. The projector P is computed from these statistics, so it
depends on the corpus (claim C1); the study measures how much by comparing corpora (`get_corpus`: "austen",
"wikitext", "wikipedia", a user file, or `TextCorpus`/`ModelSampledCorpus`).

`AustenCorpus` obtains the ``.deb`` with ``apt-get download`` into ``cache_dir("corpus")`` (once; no ``apt-get update``
when the .deb is already there), unpacks it in Python (no dpkg needed), reads the R lazy-load database with the PyPI
package ``rdata`` and caches the plain text as ``cache_dir("corpus")/austen.txt`` (one paragraph per line, novels
introduced by ``### <title>`` lines). ``scripts/fetch_corpus.sh`` runs the same step from the shell.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tarfile
import uuid
import warnings
import zlib
from pathlib import Path
from typing import Iterable, Iterator, Protocol, runtime_checkable

from .paths import cache_dir

__all__ = [
    "Corpus",
    "TextCorpus",
    "FileCorpus",
    "AustenCorpus",
    "HFDatasetCorpus",
    "ModelSampledCorpus",
    "get_corpus",
    "fetch_austen",
    "AUSTEN_NOVELS",
]


@runtime_checkable
class Corpus(Protocol):
    identity: str

    def texts(self) -> Iterator[str]: ...


def _sha(data: bytes, n: int = 16) -> str:
    return hashlib.sha256(data).hexdigest()[:n]


def _texts_hash(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(struct.pack(">Q", len(b)))  # length prefix: ["ab","c"] != ["a","bc"]
        h.update(b)
    return h.hexdigest()[:16]


class TextCorpus:
    """Documents given in memory (tests, user text). Identity: name + sha256 of the documents."""

    def __init__(self, texts: Iterable[str], name: str = "text"):
        self._texts = [str(t) for t in texts]
        self.name = name
        self.identity = f"{name}:{len(self._texts)}docs:{_texts_hash(self._texts)}"

    def texts(self) -> Iterator[str]:
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)

    def __repr__(self) -> str:
        return f"TextCorpus({self.identity!r})"


class FileCorpus:
    """A user file: ``.jsonl`` (one document per line: a JSON string or an object with a ``"text"`` field) or plain
    text (documents separated by one or more blank lines). Identity: file name + sha256 of its bytes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"corpus file {self.path} does not exist")
        data = self.path.read_bytes()
        self.identity = f"file:{self.path.name}:{_sha(data)}"

    def texts(self) -> Iterator[str]:
        if self.path.suffix == ".jsonl":
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        continue
                    obj = json.loads(line)
                    text = obj if isinstance(obj, str) else obj["text"]
                    if text.strip():
                        yield text
        else:
            text = self.path.read_text(encoding="utf-8")
            for block in re.split(r"\n\s*\n", text):
                if block.strip():
                    yield block.strip()

    def __repr__(self) -> str:
        return f"FileCorpus({self.identity!r})"


# ----------------------------------------------------------------------------------------------------------------
# Jane Austen (Debian r-cran-janeaustenr)

AUSTEN_PACKAGE = "r-cran-janeaustenr"
# publication order; R object name -> title
AUSTEN_NOVELS = {
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
_RDATA_DIR = "usr/lib/R/site-library/janeaustenr/data/"
_TEXT_FORMAT = "austen-text-v1"  # bump when the text extraction changes
_CHUNKING = "chunk-v1"  # bump when the paragraph -> document rule changes


def _find_deb(folder: Path) -> Path | None:
    debs = sorted(folder.glob(f"{AUSTEN_PACKAGE}_*.deb"))
    return debs[-1] if debs else None


def fetch_austen(folder: str | os.PathLike | None = None, *, update: bool | None = None) -> Path:
    """The ``r-cran-janeaustenr`` .deb in `folder` (default ``cache_dir("corpus")``), downloaded with
    ``apt-get download`` if it is not there yet. ``apt-get update`` runs only when the download fails for lack of
    package lists and we are root (or when `update=True`). Idempotent."""
    folder = Path(folder) if folder is not None else cache_dir("corpus")
    folder.mkdir(parents=True, exist_ok=True)
    deb = _find_deb(folder)
    if deb is not None:
        return deb
    if shutil.which("apt-get") is None:
        raise RuntimeError(_no_apt_message(folder))
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0

    def download() -> subprocess.CompletedProcess:
        # apt's sandbox user cannot write into root-owned cache folders; download as the calling user instead
        cmd = ["apt-get", "download", "-o", "APT::Sandbox::User=root", AUSTEN_PACKAGE] if is_root else \
              ["apt-get", "download", AUSTEN_PACKAGE]
        return subprocess.run(cmd, cwd=folder, capture_output=True, text=True)

    if update:
        _apt_update(is_root)
    res = download()
    if res.returncode != 0 and update is None and is_root:
        _apt_update(is_root)
        res = download()
    deb = _find_deb(folder)
    if res.returncode != 0 or deb is None:
        raise RuntimeError(
            f"`apt-get download {AUSTEN_PACKAGE}` failed in {folder}:\n{res.stderr.strip()}\n\n" + _no_apt_message(folder)
        )
    return deb


def _apt_update(is_root: bool) -> None:
    if not is_root:
        raise RuntimeError("apt-get update needs root: run `sudo apt-get update`, then retry")
    res = subprocess.run(["apt-get", "update"], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"`apt-get update` failed:\n{res.stderr.strip()}")


def _no_apt_message(folder: Path) -> str:
    return (
        f"The default offline corpus needs the Debian package {AUSTEN_PACKAGE} (Jane Austen's novels). On Debian or "
        f"Ubuntu: `sudo apt-get update && (cd {folder} && apt-get download {AUSTEN_PACKAGE})` "
        f"(or run scripts/fetch_corpus.sh). Elsewhere, download the .deb from "
        f"https://packages.debian.org/stable/all/{AUSTEN_PACKAGE}/download and put it in {folder}. "
        f"Or choose another corpus: get_corpus('wikitext') (needs `pip install datasets` and internet) or a .txt/.jsonl file."
    )


def _deb_members(deb: bytes) -> dict[str, bytes]:
    """Members of an ``ar`` archive (a .deb)."""
    if deb[:8] != b"!<arch>\n":
        raise ValueError("not a .deb (ar) archive")
    out, pos = {}, 8
    while pos + 60 <= len(deb):
        header = deb[pos:pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        out[name] = deb[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    return out


def _deb_files(deb_path: Path, prefix: str) -> dict[str, bytes]:
    """Files under `prefix` inside the .deb's data archive (pure Python: no dpkg-deb needed)."""
    members = _deb_members(deb_path.read_bytes())
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise ValueError(f"{deb_path}: no data.tar member")
    raw = members[data_name]
    if data_name.endswith(".zst"):
        raise ValueError(f"{deb_path}: zstd-compressed .deb; extract it with `dpkg-deb -x` instead")
    out = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as tar:
        for m in tar.getmembers():
            name = m.name[2:] if m.name.startswith("./") else m.name
            if m.isfile() and name.startswith(prefix):
                out[name[len(prefix):]] = tar.extractfile(m).read()
    return out


def _decompress_rds(data: bytes) -> bytes:
    """An .rds/.rdx file: gzip, bzip2, xz or uncompressed serialization."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


def _decompress_rdb_object(blob: bytes) -> bytes:
    """One object of an R lazy-load database: 4-byte big-endian length, then zlib data (R's default), or a type byte
    ('Z' zlib, '2' bzip2, 'X' xz, '0' none) and the data."""
    n = struct.unpack(">I", blob[:4])[0]
    body = blob[4:]
    kind = body[:1]
    if kind in (b"Z", b"2", b"X", b"0"):  # never a zlib header byte as R writes it (0x78)
        payload = body[1:]
        out = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress, b"0": lambda x: x}[kind](payload)
    else:
        out = zlib.decompress(body)
    if len(out) != n:
        raise ValueError(f"R lazy-load object: expected {n} bytes, got {len(out)}")
    return out


def _parse_r(data: bytes):
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unknown file type: assumed RDS"
        return rdata.conversion.convert(rdata.parser.parse_data(data))


def read_austen_deb(deb_path: str | os.PathLike) -> dict[str, list[str]]:
    """The six novels as lists of text lines (as stored in the R package), keyed by R object name."""
    try:
        import rdata  # noqa: F401
    except ImportError as e:  # pragma: no cover
        raise ImportError("reading the Austen corpus needs the PyPI package `rdata` (pip install rdata)") from e
    files = _deb_files(Path(deb_path), _RDATA_DIR)
    if "Rdata.rdx" not in files or "Rdata.rdb" not in files:
        raise ValueError(f"{deb_path}: no R lazy-load database under {_RDATA_DIR}")
    index = _parse_r(_decompress_rds(files["Rdata.rdx"]))
    rdb = files["Rdata.rdb"]
    novels = {}
    for key, (offset, length) in index["variables"].items():
        key = str(key)
        value = _parse_r(_decompress_rdb_object(rdb[int(offset):int(offset) + int(length)]))
        novels[key] = ["" if (line is None or not isinstance(line, str)) else str(line) for line in list(value)]
    return novels


def _paragraphs(lines: list[str]) -> list[str]:
    """Hard-wrapped lines -> paragraphs (blank-line separated, inner whitespace collapsed)."""
    paras, cur = [], []
    for line in lines:
        if line.strip():
            cur.append(line.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return [re.sub(r"\s+", " ", p) for p in paras]


def austen_text_path(folder: Path | None = None) -> Path:
    return (folder or cache_dir("corpus")) / "austen.txt"


def build_austen_text(folder: str | os.PathLike | None = None, *, fetch: bool = True) -> Path:
    """``austen.txt`` in the cache, built from the .deb once (atomically). One paragraph per line; each novel starts
    with a line ``### <title>``."""
    folder = Path(folder) if folder is not None else cache_dir("corpus")
    out = austen_text_path(folder)
    if out.is_file():
        return out
    deb = fetch_austen(folder) if fetch else _find_deb(folder)
    if deb is None:
        raise FileNotFoundError(_no_apt_message(folder))
    novels = read_austen_deb(deb)
    missing = set(AUSTEN_NOVELS) - set(novels)
    if missing:
        raise ValueError(f"{deb}: novels missing: {sorted(missing)}")
    chunks = []
    for key, title in AUSTEN_NOVELS.items():
        chunks.append(f"### {title}")
        chunks.extend(_paragraphs(novels[key]))
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.write_text("\n".join(chunks) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out


def _read_austen_text(path: Path) -> dict[str, list[str]]:
    novels: dict[str, list[str]] = {}
    cur = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("### "):
            cur = novels.setdefault(line[4:], [])
        elif line and cur is not None:
            cur.append(line)
    return novels


class AustenCorpus:
    """Jane Austen's six novels (public domain), from Debian's ``r-cran-janeaustenr``.

    Documents are runs of consecutive paragraphs of one novel, at least `doc_words` words each (about a Wikipedia
    article; the covariance code cuts each document at the context length anyway), joined by blank lines.
    With ``interleave=True`` (default) the novels' documents are taken round-robin, so the first N documents sample
    all six novels rather than the first one only. Identity: name + parameters + sha256 of the cached text."""

    def __init__(self, doc_words: int = 500, interleave: bool = True, folder: str | os.PathLike | None = None,
                 fetch: bool = True):
        self.doc_words = int(doc_words)
        self.interleave = bool(interleave)
        self.path = build_austen_text(folder, fetch=fetch)
        data = self.path.read_bytes()
        self._novels = _read_austen_text(self.path)
        self.identity = (f"austen:{_TEXT_FORMAT}:{_sha(data)}:{_CHUNKING}:w{self.doc_words}"
                         f":{'rr' if self.interleave else 'seq'}")

    @property
    def novels(self) -> dict[str, list[str]]:
        """Title -> paragraphs."""
        return self._novels

    def _documents(self, paras: list[str]) -> list[str]:
        docs, cur, words = [], [], 0
        for p in paras:
            cur.append(p)
            words += len(p.split())
            if words >= self.doc_words:
                docs.append("\n\n".join(cur))
                cur, words = [], 0
        if cur:
            if docs and words < self.doc_words // 4:  # a short tail ("THE END") joins the previous document
                docs[-1] += "\n\n" + "\n\n".join(cur)
            else:
                docs.append("\n\n".join(cur))
        return docs

    def documents_by_novel(self) -> dict[str, list[str]]:
        return {title: self._documents(paras) for title, paras in self._novels.items()}

    def texts(self) -> Iterator[str]:
        per = list(self.documents_by_novel().values())
        if not self.interleave:
            for docs in per:
                yield from docs
            return
        for i in range(max(len(d) for d in per)):
            for docs in per:
                if i < len(docs):
                    yield docs[i]

    def __len__(self) -> int:
        return sum(len(d) for d in self.documents_by_novel().values())

    def __repr__(self) -> str:
        return f"AustenCorpus({self.identity!r})"


# ----------------------------------------------------------------------------------------------------------------
# Hugging Face datasets (the references' choice; needs `datasets` and the internet)

class HFDatasetCorpus:
    """A Hugging Face dataset's text column. Nothing is imported or downloaded until `texts()` is called.

    Defaults: WikiText-103 (raw) train split; its rows are lines, grouped here into articles at the `` = Title = ``
    headings. ``HFDatasetCorpus("wikipedia", "20200501.en")`` is the official AlphaEdit choice (a script dataset that
    needs ``datasets<3``); ``("wikimedia/wikipedia", "20231101.en")`` is a current snapshot (EasyEdit uses a newer one
    than the official code, so its P differs). Identity: name/config/split@revision -- pin `revision` for a stable key."""

    def __init__(self, name: str = "wikitext", config: str | None = "wikitext-103-raw-v1", split: str = "train",
                 revision: str | None = None, text_field: str = "text", streaming: bool = False):
        self.name, self.config, self.split = name, config, split
        self.revision, self.text_field, self.streaming = revision, text_field, streaming
        self.identity = f"hf:{name}/{config}/{split}@{revision or 'default'}"

    def _load(self):
        try:
            import datasets
        except ImportError as e:
            raise ImportError(
                f"corpus {self.identity} needs the optional dependency `datasets` "
                "(pip install 'alphaedit-core[hub]' or pip install datasets) and internet access; "
                "the offline default is get_corpus('austen')"
            ) from e
        return datasets.load_dataset(self.name, self.config, split=self.split, revision=self.revision,
                                     streaming=self.streaming)

    def texts(self) -> Iterator[str]:
        ds = self._load()
        if self.name.endswith("wikitext"):
            yield from _wikitext_articles(row[self.text_field] for row in ds)
            return
        for row in ds:
            text = row[self.text_field]
            if text and text.strip():
                yield text

    def __repr__(self) -> str:
        return f"HFDatasetCorpus({self.identity!r})"


_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


def _wikitext_articles(lines: Iterable[str]) -> Iterator[str]:
    cur: list[str] = []
    for line in lines:
        if _WIKITEXT_TITLE.match(line.rstrip("\n")) and cur:
            yield "\n".join(cur)
            cur = []
        if line.strip():
            cur.append(line.strip())
    if cur:
        yield "\n".join(cur)


# ----------------------------------------------------------------------------------------------------------------
# the model's own samples

class ModelSampledCorpus:
    """`n_docs` texts sampled from the model itself (seeded; from the BOS token, or from the eos token when the
    tokenizer has no BOS). Generated once, on first use. Identity: model fingerprint + sampling parameters."""

    def __init__(self, model, tok, n_docs: int = 100, seed: int = 0, max_new_tokens: int = 128,
                 temperature: float = 1.0, top_k: int = 0, batch_size: int = 8):
        from .models import model_fingerprint

        self.model, self.tok = model, tok
        self.n_docs, self.seed, self.max_new_tokens = int(n_docs), int(seed), int(max_new_tokens)
        self.temperature, self.top_k, self.batch_size = float(temperature), int(top_k), int(batch_size)
        self.identity = (f"sampled:{model_fingerprint(model)}:n{self.n_docs}:s{self.seed}:t{self.max_new_tokens}"
                         f":T{self.temperature:g}:k{self.top_k}")
        self._texts: list[str] | None = None

    def _generate(self) -> list[str]:
        import torch

        start = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        device = next(self.model.parameters()).device
        out: list[str] = []
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            while len(out) < self.n_docs:
                b = min(self.batch_size, self.n_docs - len(out))
                ids = torch.full((b, 1), start, dtype=torch.long, device=device)
                gen = self.model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                    temperature=self.temperature, top_k=self.top_k or None, top_p=1.0,
                    max_new_tokens=self.max_new_tokens, pad_token_id=self.tok.pad_token_id,
                )
                out.extend(self.tok.batch_decode(gen[:, 1:], skip_special_tokens=True))
        return out

    def texts(self) -> Iterator[str]:
        if self._texts is None:
            self._texts = self._generate()
        return iter(self._texts)

    def __repr__(self) -> str:
        return f"ModelSampledCorpus({self.identity!r})"


# ----------------------------------------------------------------------------------------------------------------

def get_corpus(spec: str | os.PathLike):
    """"austen" (offline default) | "wikitext" | "wikipedia" (official: 20200501.en) | "fortunes" | "wordnet"
    (held-out Debian text, see `capability`) | a .txt/.jsonl file."""
    s = str(spec)
    key = s.lower()
    if key in ("austen", "janeausten", "jane-austen"):
        return AustenCorpus()
    if key in ("wikitext", "wikitext-103"):
        return HFDatasetCorpus("wikitext", "wikitext-103-raw-v1", "train")
    if key == "wikipedia":
        return HFDatasetCorpus("wikipedia", "20200501.en", "train")
    if key in ("fortunes", "fortune", "wordnet", "wordnet-base"):  # held-out text (capability.py: claims P2, P3)
        from .capability import held_out_corpus

        return held_out_corpus(key)
    if key.endswith((".txt", ".jsonl")) or Path(s).is_file():
        return FileCorpus(s)
    raise ValueError(f"unknown corpus {s!r}: use 'austen', 'wikitext', 'wikipedia', 'fortunes', 'wordnet' or a "
                     f"path to a .txt/.jsonl file")
