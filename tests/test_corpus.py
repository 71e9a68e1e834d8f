"""alphaedit_core.corpus: identities, dispatch, file formats, and the real Austen text when it is cached."""
from __future__ import annotations

import json
import shutil
import sys

import pytest

from alphaedit_core import corpus as C
from alphaedit_core.paths import cache_dir


def test_text_corpus_identity_stable_and_content_sensitive():
    a = C.TextCorpus(["one doc", "two docs"], name="t")
    assert a.identity == C.TextCorpus(["one doc", "two docs"], name="t").identity
    assert a.identity != C.TextCorpus(["one doc", "two docs!"], name="t").identity
    assert a.identity != C.TextCorpus(["two docs", "one doc"], name="t").identity  # order matters
    assert a.identity != C.TextCorpus(["one doc", "two docs"], name="u").identity
    assert C.TextCorpus(["ab", "c"]).identity != C.TextCorpus(["a", "bc"]).identity
    assert list(a.texts()) == ["one doc", "two docs"] == list(a.texts())
    assert isinstance(a, C.Corpus)


def test_get_corpus_dispatch(tmp_path, monkeypatch):
    sys_modules_before = "datasets" in sys.modules
    w = C.get_corpus("wikitext")
    assert isinstance(w, C.HFDatasetCorpus) and w.identity == "hf:wikitext/wikitext-103-raw-v1/train@default"
    wp = C.get_corpus("wikipedia")
    assert isinstance(wp, C.HFDatasetCorpus) and wp.config == "20200501.en"
    assert ("datasets" in sys.modules) == sys_modules_before  # constructed lazily

    class Stub:
        identity = "stub"

        def texts(self):
            return iter(["x"])

    monkeypatch.setattr(C, "AustenCorpus", Stub)
    assert isinstance(C.get_corpus("austen"), Stub)

    txt = tmp_path / "mine.txt"
    txt.write_text("First doc\nstill first.\n\n\nSecond doc.\n")
    fc = C.get_corpus(str(txt))
    assert isinstance(fc, C.FileCorpus) and list(fc.texts()) == ["First doc\nstill first.", "Second doc."]
    jl = tmp_path / "mine.jsonl"
    jl.write_text(json.dumps({"text": "a"}) + "\n\n" + json.dumps("b") + "\n")
    assert list(C.get_corpus(jl).texts()) == ["a", "b"]
    ident = C.get_corpus(jl).identity
    jl.write_text(json.dumps({"text": "a!"}) + "\n")
    assert C.get_corpus(jl).identity != ident
    with pytest.raises(ValueError, match="austen"):
        C.get_corpus("no-such-corpus")
    with pytest.raises(FileNotFoundError):
        C.get_corpus(tmp_path / "missing.txt")


def test_hf_corpus_without_datasets_raises_clearly(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    c = C.HFDatasetCorpus()
    with pytest.raises(ImportError, match="pip install datasets"):
        next(c.texts())


def test_wikitext_rows_grouped_into_articles():
    rows = ["", " = Alpha = \n", "", " Alpha is a letter . \n", " = = History = = \n", " Old . \n",
            " = Beta = \n", " Beta too . \n"]
    arts = list(C._wikitext_articles(rows))
    assert len(arts) == 2 and arts[0].startswith("= Alpha =") and "= = History = =" in arts[0]
    assert arts[1] == "= Beta =\nBeta too ."


def test_fetch_austen_is_idempotent_and_explains_missing_apt(tmp_path, monkeypatch):
    deb = tmp_path / "r-cran-janeaustenr_1.0.0-1_all.deb"
    deb.write_bytes(b"cached")
    monkeypatch.setattr(C.subprocess, "run", lambda *a, **k: pytest.fail("no apt call when the .deb is cached"))
    assert C.fetch_austen(tmp_path) == deb
    empty = tmp_path / "empty"
    monkeypatch.setattr(C.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get download r-cran-janeaustenr"):
        C.fetch_austen(empty)


def test_paragraphs_and_documents(tmp_path):
    lines = ["Title", "", "It is a truth", "universally acknowledged.", "", "", "Second  para here.", ""]
    assert C._paragraphs(lines) == ["Title", "It is a truth universally acknowledged.", "Second para here."]


# ---------------------------------------------------------------------------------------------- real Austen text

def _cached_austen_folder():
    folder = cache_dir("corpus")
    if C.austen_text_path(folder).is_file() or C._find_deb(folder) is not None:
        return folder
    return None


@pytest.fixture(scope="module")
def austen():
    folder = _cached_austen_folder()
    if folder is None:
        pytest.skip("Austen corpus not cached: run scripts/fetch_corpus.sh (needs apt-get)")
    return C.AustenCorpus(folder=folder, fetch=False)


def test_austen_six_novels(austen):
    assert list(austen.novels) == list(C.AUSTEN_NOVELS.values())
    words = {t: sum(len(p.split()) for p in ps) for t, ps in austen.novels.items()}
    total = sum(words.values())
    assert 650_000 < total < 800_000, words
    assert all(w > 50_000 for w in words.values()), words
    pp = austen.novels["Pride and Prejudice"]
    assert any(p.startswith("It is a truth universally acknowledged") for p in pp[:10])


def test_austen_documents_deterministic_and_interleaved(austen):
    docs = list(austen.texts())
    assert docs == list(austen.texts())
    assert 1000 < len(docs) < 1600
    assert docs[0].startswith("SENSE AND SENSIBILITY") and docs[1].startswith("PRIDE AND PREJUDICE")
    assert all(len(d.split()) >= 100 for d in docs)
    seq = C.AustenCorpus(folder=austen.path.parent, fetch=False, interleave=False)
    assert sorted(seq.texts()) == sorted(docs) and seq.identity != austen.identity
    assert C.AustenCorpus(folder=austen.path.parent, fetch=False).identity == austen.identity
    assert C.AustenCorpus(folder=austen.path.parent, fetch=False, doc_words=200).identity != austen.identity


def test_austen_text_rebuilt_from_the_deb_matches(austen, tmp_path):
    deb = C._find_deb(austen.path.parent)
    if deb is None:
        pytest.skip("only austen.txt is cached, not the .deb")
    shutil.copy(deb, tmp_path / deb.name)
    rebuilt = C.build_austen_text(tmp_path, fetch=False)
    assert rebuilt.read_bytes() == austen.path.read_bytes()
