"""The statistics journal: an interrupted second-moment computation resumes after the tokens it counted and ends
with the matrices of an uninterrupted one, to the bit.

The interruption is planted: a corpus whose document stream raises after a number of documents, as a stop of the
process would end it. Expectations come from an uninterrupted run and from hand-written windows, not from the
journal's code."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from tiny import TEXT, tiny_model, tiny_tokenizer

from alphaedit_core.arch import ModelAdapter
from alphaedit_core.corpus import TextCorpus
from alphaedit_core.stats import CorruptStatsError, _skip_tokens, compute_second_moments, layer_stats

DOCS = [line for line in TEXT.split("\n") if line]


class Stopped(RuntimeError):
    pass


class StoppingCorpus:
    """The documents of `docs`, under the same identity as an uninterrupted corpus, but the stream stops (raises)
    after `stop_after` documents, as a killed process would."""

    def __init__(self, docs: list[str], stop_after: int, name: str = "t"):
        self._docs, self.stop_after = docs, stop_after
        self.identity = TextCorpus(docs, name).identity

    def texts(self):
        for i, d in enumerate(self._docs):
            if i == self.stop_after:
                raise Stopped(f"stopped after {i} documents")
            yield d


class CountForwards:
    """Counts the forward passes of a model (the first decoder layer's calls)."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.model.layers[0].register_forward_pre_hook(self._count)

    def _count(self, *_):
        self.n += 1


@pytest.mark.parametrize("windows,skip,expected", [
    ([[1, 2, 3], [4, 5], [6]], 0, [[1, 2, 3], [4, 5], [6]]),
    ([[1, 2, 3], [4, 5], [6]], 2, [[3], [4, 5], [6]]),
    ([[1, 2, 3], [4, 5], [6]], 3, [[4, 5], [6]]),
    ([[1, 2, 3], [4, 5], [6]], 4, [[5], [6]]),
    ([[1, 2, 3], [4, 5], [6]], 6, []),
    ([[1, 2, 3], [4, 5], [6]], 10, []),
])
def test_skip_tokens_drops_exactly_the_first_tokens(windows, skip, expected):
    """Hand-written windows: the tokens after the first `skip`, in their windows (the cut one continued)."""
    assert list(_skip_tokens(iter(windows), skip)) == expected


@pytest.mark.parametrize("budget", [None, 150])
def test_an_interrupted_computation_resumes_to_the_same_matrices(tmp_path, budget):
    """Bugs pinned: a resume that recounts the journaled tokens, skips the wrong ones, forgets the count, or runs
    the model again over what the journal holds. The resumed matrices equal the uninterrupted ones exactly, the
    resumed call runs only the forward passes the journal does not cover, and the count is the budget."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    kw = dict(n_tokens=budget, seq_len=12, batch_windows=2, progress=False)
    counter = CountForwards(model)
    whole, n_whole = compute_second_moments(model, tok, a, [1, 2], TextCorpus(DOCS, "t"), **kw)
    all_passes = counter.n
    journal = tmp_path / "partial.safetensors"
    stop_after = 3  # documents read before the stop
    with pytest.raises(Stopped):
        compute_second_moments(model, tok, a, [1, 2], StoppingCorpus(DOCS, stop_after), journal=journal,
                               journal_every_s=0.0, journal_id="run", **kw)
    with safe_open(str(journal), framework="pt") as f:
        journaled = int(f.metadata()["tokens_counted"])
    assert 0 < journaled < n_whole
    counter.n = 0
    resumed, n_resumed = compute_second_moments(model, tok, a, [1, 2], TextCorpus(DOCS, "t"), journal=journal,
                                                journal_id="run", **kw)
    assert n_resumed == n_whole and (budget is None or n_whole == budget)
    for l in (1, 2):
        assert torch.equal(resumed[l], whole[l])
    journaled_passes = all_passes - counter.n
    assert 0 < journaled_passes < all_passes  # the resume did not run the journaled windows again
    # a resume that ignored the journal's sums but kept its count would be off by the journaled share
    assert not torch.allclose(whole[1], whole[1] * (n_whole - journaled) / n_whole)


def test_layer_stats_resumes_from_its_journal_and_removes_it(tmp_path):
    """Through the cache: a stopped `layer_stats` leaves a journal beside the cache files; the same call finishes
    from it with the uninterrupted matrices, caches them, and removes the journal."""
    model, tok = tiny_model("qwen2"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    kw = dict(fingerprint="f" * 16, n_tokens=120, seq_len=10, progress=False)
    whole = layer_stats(model, tok, a, [1, 2], TextCorpus(DOCS, "t"), root=tmp_path / "whole", **kw)
    root = tmp_path / "stopped"
    with pytest.raises(Stopped):
        layer_stats(model, tok, a, [1, 2], StoppingCorpus(DOCS, 2), root=root, journal_every_s=0.0, **kw)
    journals = list(root.rglob("partial-*.safetensors"))
    assert len(journals) == 1 and not list(root.rglob("*.mlp.*"))  # a journal, no cache file yet
    resumed = layer_stats(model, tok, a, [1, 2], TextCorpus(DOCS, "t"), root=root, **kw)
    for l in (1, 2):
        assert torch.equal(resumed[l], whole[l])
    assert not journals[0].exists() and len(list(root.rglob("*.safetensors"))) == 2


def test_a_journal_of_another_computation_is_refused(tmp_path):
    """A journal written under another id, or for other layers, is an error naming the file, never summed in."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    kw = dict(n_tokens=60, seq_len=12, batch_windows=2, progress=False)
    journal = tmp_path / "partial.safetensors"
    with pytest.raises(Stopped):
        compute_second_moments(model, tok, a, [1], StoppingCorpus(DOCS, 1), journal=journal, journal_every_s=0.0,
                               journal_id="first", **kw)
    with pytest.raises(CorruptStatsError, match="another computation") as err:
        compute_second_moments(model, tok, a, [1], TextCorpus(DOCS, "t"), journal=journal, journal_id="second", **kw)
    assert str(journal) in str(err.value)
    with pytest.raises(CorruptStatsError, match="another computation"):
        compute_second_moments(model, tok, a, [1, 2], TextCorpus(DOCS, "t"), journal=journal, journal_id="first",
                               **kw)
    journal.write_bytes(b"not a safetensors file")
    with pytest.raises(CorruptStatsError, match="unreadable"):
        compute_second_moments(model, tok, a, [1], TextCorpus(DOCS, "t"), journal=journal, journal_id="first", **kw)
