"""Held-out corpora (Debian fortunes, wordnet-base), perplexity, hidden states and representation drift
(alphaedit_core.capability), on tiny random models and synthetic archives; no network."""
from __future__ import annotations

import io
import itertools
import math
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alphaedit_core.arch import ModelAdapter
from alphaedit_core.capability import (FortunesCorpus, WordNetCorpus, build_fortunes_text, hidden_states,
                                       paired_bootstrap, paired_nll, parse_fortunes, parse_wordnet,
                                       perplexity, representation_drift)
from alphaedit_core.corpus import TextCorpus
from alphaedit_core.paths import cache_dir
from alphaedit_core.stats import token_windows
from tiny import TEXT, tiny_model, tiny_tokenizer

SENTENCES = [s.strip() + "." for s in TEXT.replace("\n", " ").split(".") if s.strip()]


# ---------------------------------------------------------------------------------------------------------------
# parsing and corpora

def test_parse_fortunes_splits_on_percent_lines_and_skips_indexes_offensive_and_art():
    files = {
        "wisdom": b"First fortune,\n  on two lines.   \n%\nSecond one.\n\t\t-- Someone\n%\n%\n   \n%\nLast, no final %\n",
        "wisdom.dat": b"\x00\x01binary index",
        "off/rude": b"Not this one.\n%\n",
        "ascii-art": b"  /\\_/\\\n ( o.o )\n%\n",
        "art": b"Art is long.\n% \nLife is short.\n",  # "% " with a trailing space still separates
    }
    items = parse_fortunes(files)
    assert items == [
        {"source": "art", "text": "Art is long."},
        {"source": "art", "text": "Life is short."},
        {"source": "wisdom", "text": "First fortune,\n  on two lines."},
        {"source": "wisdom", "text": "Second one.\n\t\t-- Someone"},
        {"source": "wisdom", "text": "Last, no final %"},
    ]


WN_NOUN = (b"  1 This software and database is being provided to you, the LICENSEE, by  \n"
           b"  2 Princeton University under the following license. | not a gloss  \n"
           b"00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived to exist  \n"
           b"02084071 05 n 0b dog 0 domestic_dog 0 Canis_familiaris 0 000 | a member of the genus Canis; "
           b"\"the dog barked all night\"  \n")
WN_ADJ = b"00001740 00 a 01 able(p) 0 000 | (usually followed by `to') having the means to do something  \n"


def test_parse_wordnet_takes_the_gloss_after_the_bar_with_its_first_lemma():
    items = parse_wordnet({"data.adj": WN_ADJ, "data.noun": WN_NOUN, "index.noun": b"ignored"})
    assert items == [  # order: noun, verb, adj, adv
        {"source": "noun.Tops", "text": "entity: that which is perceived to exist"},
        {"source": "noun.animal", "text": 'dog: a member of the genus Canis; "the dog barked all night"'},
        {"source": "adj.all", "text": "able: (usually followed by `to') having the means to do something"},
    ]


def _fake_deb(path, files: dict[str, bytes]):
    """A minimal .deb: an ar archive with debian-binary and a gzip data.tar holding `files`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    members = {"debian-binary": b"2.0\n", "data.tar.gz": buf.getvalue()}
    out = b"!<arch>\n"
    for name, data in members.items():
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        if len(data) % 2:
            out += b"\n"
    path.write_bytes(out)


def test_fortunes_corpus_from_a_deb_groups_interleaves_and_keys_identity(tmp_path):
    d1, d2 = tmp_path / "a", tmp_path / "b"
    d1.mkdir(), d2.mkdir()
    files = {"usr/share/games/fortunes/alpha": b"one two three\n%\nfour five\n%\nsix\n",
             "usr/share/games/fortunes/beta": b"seven eight\n%\n",
             "usr/share/games/fortunes/alpha.dat": b"\x00"}
    _fake_deb(d1 / "fortunes_1%3a1.0_all.deb", files)
    c = FortunesCorpus(doc_words=4, folder=d1, fetch=False)
    assert (d1 / "fortunes.jsonl").is_file()
    assert c.n_items == 4 and c.n_words == 8
    assert list(c.texts()) == ["one two three\n\nfour five", "seven eight", "six"]  # round-robin over files
    assert list(FortunesCorpus(doc_words=4, interleave=False, folder=d1, fetch=False).texts()) == \
        ["one two three\n\nfour five", "six", "seven eight"]
    assert FortunesCorpus(doc_words=4, folder=d1, fetch=False).identity == c.identity  # stable
    assert FortunesCorpus(doc_words=5, folder=d1, fetch=False).identity != c.identity
    _fake_deb(d2 / "fortunes_1%3a1.0_all.deb", files | {"usr/share/games/fortunes/beta": b"seven nine\n%\n"})
    assert FortunesCorpus(doc_words=4, folder=d2, fetch=False).identity != c.identity  # text changed
    # the .jsonl is built once: a later .deb does not rebuild it silently
    assert build_fortunes_text(d1, fetch=False).read_bytes() == (d1 / "fortunes.jsonl").read_bytes()


def test_wordnet_corpus_from_a_deb(tmp_path):
    _fake_deb(tmp_path / "wordnet-base_1%3a3.0-37_all.deb",
              {"usr/share/wordnet/data.noun": WN_NOUN, "usr/share/wordnet/data.adj": WN_ADJ})
    c = WordNetCorpus(doc_words=1000, folder=tmp_path, fetch=False)
    assert list(c.texts()) == ["entity: that which is perceived to exist",
                               'dog: a member of the genus Canis; "the dog barked all night"',
                               "able: (usually followed by `to') having the means to do something"]


def test_missing_deb_without_fetch_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get download fortunes"):
        FortunesCorpus(folder=tmp_path, fetch=False)


def _cached(package: str) -> bool:
    return any(cache_dir("corpus").glob(f"{package}_*.deb"))


@pytest.mark.skipif(not _cached("fortunes") or not _cached("wordnet-base"),
                    reason="Debian fortunes / wordnet-base .deb not cached (run scripts/fetch_corpus.sh as root)")
def test_real_held_out_corpora():
    from alphaedit_core.corpus import get_corpus

    f, w = get_corpus("fortunes"), get_corpus("wordnet")
    assert isinstance(f, FortunesCorpus) and isinstance(w, WordNetCorpus)
    assert f.n_items > 10_000 and f.n_words > 300_000
    assert w.n_items == 117_659  # WordNet 3.0 synsets (82115 n + 13767 v + 18156 a + 3621 r)
    assert next(w.texts()).startswith("entity: that which is perceived or known")
    assert all("\n%\n" not in t for t in itertools.islice(f.texts(), 50))


# ---------------------------------------------------------------------------------------------------------------
# perplexity

@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama"), tiny_tokenizer()


def test_perplexity_equals_a_hand_computation_on_one_window(tiny):
    model, tok = tiny
    corpus = TextCorpus([TEXT])
    ids = tok(TEXT).input_ids  # BOS + text: exactly the one window of seq_len 1000
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    nll = F.cross_entropy(logits[:-1].double(), torch.tensor(ids[1:]), reduction="sum").item()
    r = perplexity(model, tok, corpus, n_tokens=len(ids), seq_len=1000)
    assert r["n_tokens"] == len(ids) and r["n_scored"] == len(ids) - 1 and r["n_windows"] == 1
    assert r["windows"][0][0] == 0 and r["windows"][0][2] == len(ids) - 1
    assert r["windows"][0][1] == pytest.approx(nll, rel=1e-5)
    assert r["mean_nll"] == pytest.approx(nll / (len(ids) - 1), rel=1e-5)
    assert r["perplexity"] == pytest.approx(math.exp(nll / (len(ids) - 1)), rel=1e-5)
    assert perplexity(model, tok, corpus, n_tokens=len(ids), seq_len=1000) == r  # deterministic


def test_perplexity_batches_padding_and_budget_match_window_by_window(tiny):
    model, tok = tiny
    corpus = TextCorpus(SENTENCES)
    windows = list(token_windows(tok, corpus, 12))
    n_tokens = sum(map(len, windows[:7])) - 3  # the 7th window is cut to 3 tokens short
    r = perplexity(model, tok, corpus, n_tokens=n_tokens, seq_len=12, batch_windows=3)
    assert r["n_windows"] == 7 and r["n_tokens"] == n_tokens
    for (i, s, c), w in zip(r["windows"], windows[:6] + [windows[6][:-3]]):
        with torch.no_grad():
            logits = model(torch.tensor([w])).logits[0]
        want = F.cross_entropy(logits[:-1].double(), torch.tensor(w[1:]), reduction="sum").item()
        assert c == len(w) - 1 and s == pytest.approx(want, rel=1e-4)


def test_skip_tokens_skips(tiny):
    model, tok = tiny
    corpus = TextCorpus(SENTENCES)
    windows = list(token_windows(tok, corpus, 12))
    full = perplexity(model, tok, corpus, n_tokens=sum(map(len, windows[:5])), seq_len=12)
    skipped = perplexity(model, tok, corpus, n_tokens=sum(map(len, windows[2:5])), seq_len=12,
                         skip_tokens=sum(map(len, windows[:2])))
    assert [c for _, _, c in skipped["windows"]] == [c for _, _, c in full["windows"][2:]]
    assert [s for _, s, _ in skipped["windows"]] == pytest.approx([s for _, s, _ in full["windows"][2:]], rel=1e-5)
    # a skip inside a window starts from the rest of it (no BOS added)
    cut = perplexity(model, tok, corpus, n_tokens=len(windows[0]) - 4, seq_len=12, skip_tokens=4)
    assert cut["n_windows"] == 1 and cut["windows"][0][2] == len(windows[0]) - 5


def test_perplexity_short_corpus_and_bad_arguments(tiny):
    model, tok = tiny
    corpus = TextCorpus(SENTENCES[:2])
    with pytest.raises(ValueError, match="ran out of tokens"):
        perplexity(model, tok, corpus, n_tokens=10_000, seq_len=12)
    with pytest.raises(ValueError, match="n_tokens"):
        perplexity(model, tok, corpus, n_tokens=0, seq_len=12)


def test_paired_bootstrap(tiny):
    model, tok = tiny
    corpus = TextCorpus(SENTENCES)
    a = perplexity(model, tok, corpus, n_tokens=120, seq_len=12)
    same = paired_bootstrap(a, a, n_boot=200)
    assert same["delta_nll"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0
    b = perplexity(tiny_model("llama", seed=1), tok, corpus, n_tokens=120, seq_len=12)
    d = paired_bootstrap(a, b, n_boot=500)
    assert d["delta_nll"] == pytest.approx(b["mean_nll"] - a["mean_nll"], rel=1e-9)
    assert d["ci_low"] <= d["delta_nll"] <= d["ci_high"]
    with pytest.raises(ValueError, match="same corpus windows"):
        paired_bootstrap(a, perplexity(model, tok, corpus, n_tokens=60, seq_len=12))


def test_paired_nll_weights_windows_by_tokens_as_the_pooled_perplexity_does():
    """A 2-token window where A is much worse and a 200-token window where A is slightly better: the unweighted mean
    of per-window NLLs says A is worse (+3.45 nats), the pooled perplexities say A is better. paired_nll must agree
    with the pooled perplexities: diff = (Σ nll_a − Σ nll_b) / Σ tokens, by hand (20 − 6 + 380 − 400) / 202."""
    import pandas as pd

    rows = [dict(method="a", corpus="text", window=0, nll_sum=20.0, tokens=2),
            dict(method="b", corpus="text", window=0, nll_sum=6.0, tokens=2),
            dict(method="a", corpus="text", window=1, nll_sum=380.0, tokens=200),
            dict(method="b", corpus="text", window=1, nll_sum=400.0, tokens=200),
            dict(method="b", corpus="text", window=2, nll_sum=9.0, tokens=3)]  # scored for b only: not paired
    t = paired_nll(pd.DataFrame(rows), "a", "b", n_boot=400)
    (r,) = t.to_dict("records")
    assert r["diff"] == pytest.approx(-6.0 / 202, abs=1e-12)
    assert r["mean_a"] == pytest.approx(400 / 202) and r["mean_b"] == pytest.approx(406 / 202)
    assert math.exp(r["mean_a"] - r["mean_b"]) == pytest.approx(math.exp(400 / 202) / math.exp(406 / 202))
    assert (r["prompt_kind"], r["n"], r["n_only_a"], r["n_only_b"], r["tokens"]) == ("text", 2, 0, 1, 202)
    unweighted = ((20 / 2 - 6 / 2) + (380 / 200 - 400 / 200)) / 2
    assert unweighted > 0 > r["diff"]
    assert r["ci_low"] <= r["diff"] <= r["ci_high"]
    with pytest.raises(ValueError, match="different token counts"):
        paired_nll(pd.DataFrame(rows[:1] + [dict(rows[1], tokens=3)]), "a", "b")
    with pytest.raises(ValueError, match="no rows for method 'c'"):
        paired_nll(pd.DataFrame(rows), "a", "c")


def test_paired_nll_equals_paired_bootstrap_on_real_perplexity_results(tiny):
    """The table form gives paired_bootstrap's numbers on two `perplexity` results of the same windows."""
    import pandas as pd

    model, tok = tiny
    corpus = TextCorpus(SENTENCES)
    ra = perplexity(model, tok, corpus, n_tokens=120, seq_len=12)
    rb = perplexity(tiny_model("llama", seed=1), tok, corpus, n_tokens=120, seq_len=12)
    frame = pd.DataFrame([dict(method=m, corpus="s", window=i, nll_sum=n, tokens=c)
                          for m, res in (("a", ra), ("b", rb)) for i, n, c in res["windows"]])
    (r,) = paired_nll(frame, "a", "b", n_boot=300, seed=3).to_dict("records")
    ref = paired_bootstrap(rb, ra, n_boot=300, seed=3)
    assert (r["diff"], r["ci_low"], r["ci_high"]) == pytest.approx((ref["delta_nll"], ref["ci_low"], ref["ci_high"]))
    assert r["diff"] == pytest.approx(ra["mean_nll"] - rb["mean_nll"], rel=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# hidden states and drift

def test_hidden_states_equal_output_hidden_states_at_non_padding_positions(tiny):
    model, tok = tiny
    corpus = TextCorpus(SENTENCES)
    windows = list(token_windows(tok, corpus, 12))[:5]  # of different lengths: padded in batches of 2
    n = sum(map(len, windows))
    got = hidden_states(model, tok, corpus, layers=[0, 2, 3], n_tokens=n, seq_len=12, batch_windows=2)
    assert sorted(got) == [0, 2, 3] and all(v.shape == (n, 32) for v in got.values())
    norm = ModelAdapter.from_model(model).final_norm
    with torch.no_grad():
        want = {l: [] for l in (0, 2, 3)}
        for w in windows:
            hs = model(torch.tensor([w]), output_hidden_states=True).hidden_states
            want[0].append(hs[1][0])
            want[2].append(hs[3][0])
            want[3].append(hs[4][0])  # the model's last entry is after the final norm
    for l in (0, 2):
        torch.testing.assert_close(got[l], torch.cat(want[l]), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(norm(got[3]), torch.cat(want[3]), rtol=1e-4, atol=1e-5)
    # same tokens as perplexity: skip and budget
    part = hidden_states(model, tok, corpus, layers=[2], n_tokens=n - len(windows[0]), seq_len=12,
                         skip_tokens=len(windows[0]))
    torch.testing.assert_close(part[2], got[2][len(windows[0]):], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="layers"):
        hidden_states(model, tok, corpus, layers=[4], n_tokens=10, seq_len=12)


def test_drift_is_zero_for_identical_states():
    g = torch.Generator().manual_seed(0)
    h = {1: torch.randn(300, 8, generator=g), 5: torch.randn(300, 8, generator=g) + 3}
    df = representation_drift(h, {l: v.clone() for l, v in h.items()})
    assert list(df["layer"]) == [1, 5]
    assert np.allclose(df["rel_l2"], 0) and np.allclose(df["cos"], 1) and np.allclose(df["mean_shift"], 0)
    assert np.allclose(df["spread_ratio"], 1)


def test_drift_matches_a_hand_computation_on_a_planted_shift():
    rng = np.random.default_rng(0)
    n, d, c = 4000, 16, 2.0
    h0 = rng.standard_normal((n, d))
    h = h0.copy()
    h[:, 0] += c  # every token moved by c along e1
    row = representation_drift({0: torch.tensor(h0)}, {0: torch.tensor(h)}).iloc[0]
    norms = np.sqrt((h0 ** 2).sum(1))
    assert row["rel_l2"] == pytest.approx(np.mean(c / norms), rel=1e-9)
    assert row["cos"] == pytest.approx(np.mean((h * h0).sum(1) / (np.sqrt((h ** 2).sum(1)) * norms)), rel=1e-9)
    s0 = np.sqrt(((h0 - h0.mean(0)) ** 2).sum(1).mean())
    assert row["mean_shift"] == pytest.approx(c / s0, rel=1e-9)  # the means differ by exactly c·e1
    assert row["spread_ratio"] == pytest.approx(1.0, rel=1e-9)  # a translation keeps the spread
    assert row["mean_shift"] == pytest.approx(c / math.sqrt(d), rel=0.05)  # s0 ≈ sqrt(d) for N(0, I)


def test_drift_distribution_distance_on_independent_gaussians():
    rng = np.random.default_rng(1)
    n, d = 20_000, 8
    delta = np.zeros(d)
    delta[:2] = [3.0, 4.0]  # ‖δ‖ = 5
    h0 = rng.standard_normal((n, d))
    h = delta + 2.0 * rng.standard_normal((n, d))  # unpaired draws: N(δ, 4I)
    row = representation_drift({3: torch.tensor(h0)}, {3: torch.tensor(h)}).iloc[0]
    assert row["mean_shift"] == pytest.approx(5 / math.sqrt(d), rel=0.03)
    assert row["spread_ratio"] == pytest.approx(2.0, rel=0.03)
    same = representation_drift({3: torch.tensor(h0)}, {3: torch.tensor(rng.standard_normal((n, d)))}).iloc[0]
    assert same["mean_shift"] < 0.05 and same["spread_ratio"] == pytest.approx(1.0, abs=0.03)


def test_drift_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="layers differ"):
        representation_drift({0: torch.zeros(2, 3)}, {1: torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="shapes"):
        representation_drift({0: torch.zeros(2, 3)}, {0: torch.zeros(3, 3)})
