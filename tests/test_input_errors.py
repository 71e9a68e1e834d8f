"""Bad inputs fail at the public entry points with an error that names the field and the value (issue
"Trustworthy long runs", parts 2 and 3): statistics, projector, requests, hyperparameters, model names, data."""
import math
import re
import warnings

import pytest
import torch

from tiny import TEXT, tiny_model, tiny_tokenizer

from alphaedit_core.arch import ModelAdapter
from alphaedit_core.corpus import TextCorpus
from alphaedit_core.hparams import EditHParams
from alphaedit_core.projection import ProjectorWarning, projector_from_cov
from alphaedit_core.requests import EditRequest, check_batch
from alphaedit_core.stats import (CorruptStatsError, InvalidStatsError, StatsKey, compute_second_moments,
                                  corpus_keys, layer_stats, save_stats, validate_second_moment)

DOCS = [line for line in TEXT.split("\n") if line]
CORPUS_TOKENS = 189  # tokens of DOCS with the tiny tokenizer, windows of 64 or more


def spd(d: int, ev: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """A symmetric matrix U diag(ev) Uᵀ [d, d] (positive definite by default)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=g))[0]
    ev = torch.logspace(-3, 1, d, dtype=torch.float64) if ev is None else ev.double()
    return ((u * ev) @ u.T).float()


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    return model, tok, ModelAdapter.from_model(model)


# --- second-moment statistics ---------------------------------------------------------------------------------

def test_valid_second_moments_pass_including_singular_ones():
    validate_second_moment(spd(16), 3)
    validate_second_moment(spd(16, torch.cat([torch.zeros(8), torch.ones(8)])), 3)  # PSD, rank 8
    validate_second_moment(torch.zeros(4, 4), 3)


def test_nan_second_moment_is_refused():
    cov = spd(8)
    cov[2, 5] = cov[5, 2] = float("nan")
    with pytest.raises(InvalidStatsError, match=r"layer 3 .*not finite: 2 NaN and 0 infinite entries of 8x8"):
        validate_second_moment(cov, 3, source="test")


def test_asymmetric_second_moment_is_refused():
    cov = spd(8)
    cov[0, 1] += 0.5
    with pytest.raises(InvalidStatsError, match=r"layer 2: not symmetric: max \|C - C\^T\| = 0\.5"):
        validate_second_moment(cov, 2)


def test_indefinite_second_moment_is_refused():
    ev = torch.linspace(0.1, 1.0, 8)
    ev[0] = -0.2  # far beyond rounding
    with pytest.raises(InvalidStatsError, match=r"layer 1: not positive semi-definite: smallest eigenvalue -0\.2"
                                                r"\d*, largest 1"):
        validate_second_moment(spd(8, ev), 1)
    ev[0] = -1e-7  # rounding noise of float32 statistics: accepted
    validate_second_moment(spd(8, ev), 1)


def test_wrong_shape_second_moment_is_refused():
    with pytest.raises(InvalidStatsError, match=r"layer 0: shape \[8, 8\], expected \[64, 64\]"):
        validate_second_moment(spd(8), 0, d=64)


def test_nan_activations_fail_the_statistics_not_the_edit(tiny, tmp_path):
    _, tok, _ = tiny
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    a = ModelAdapter.from_model(model)
    with pytest.raises(InvalidStatsError, match=r"layer 1 \(computed on 100 tokens of corpus 't:5docs:.*'\): not "
                                                r"finite"):
        layer_stats(model, tok, a, [1], TextCorpus(DOCS, "t"), fingerprint="nan", n_tokens=100, seq_len=64,
                    root=tmp_path, progress=False)
    assert not list(tmp_path.rglob("*.safetensors"))  # nothing invalid is cached


def test_token_budget_larger_than_the_corpus_names_both_counts(tiny):
    model, tok, a = tiny
    corpus = TextCorpus(DOCS, "t")
    with pytest.raises(ValueError, match=rf"corpus '{re.escape(corpus.identity)}' ran out of tokens: "
                                         rf"{CORPUS_TOKENS} tokens available \(windows of 64\), 1,000,000 asked "
                                         r"\(n_tokens, hparams field 'mom2_n_tokens'\); ask for at most"):
        compute_second_moments(model, tok, a, [1], corpus, n_tokens=1_000_000, seq_len=64, progress=False)
    _, counted = compute_second_moments(model, tok, a, [1], corpus, n_tokens=None, seq_len=64, progress=False)
    assert counted == CORPUS_TOKENS  # None: the whole corpus, by request
    with pytest.raises(ValueError, match=r"150 tokens available after skipping 39 \(windows of 64\), 500 asked "
                                         r"\(n_tokens\); ask for at most 150"):
        corpus_keys(model, tok, a, [1], corpus, skip_tokens=39, n_tokens=500, seq_len=64)


@pytest.mark.parametrize("n_tokens", [0, -5, 1.5, True, "300000"])
def test_token_budget_must_be_a_positive_int(tiny, n_tokens):
    model, tok, a = tiny
    with pytest.raises(ValueError, match=re.escape(f"n_tokens={n_tokens!r}: must be a positive integer")):
        compute_second_moments(model, tok, a, [1], TextCorpus(DOCS, "t"), n_tokens=n_tokens, seq_len=64,
                               progress=False)


@pytest.mark.parametrize("layers", [[4], [1, 7], [-1]])
def test_out_of_range_layer_is_a_value_error_naming_the_field(tiny, tmp_path, layers):
    model, tok, a = tiny
    pattern = rf"hparams field 'layers'={re.escape(repr(layers))}: .*the model has 4 layers"
    with pytest.raises(ValueError, match=pattern):
        layer_stats(model, tok, a, layers, TextCorpus(DOCS, "t"), fingerprint="f", n_tokens=50, seq_len=64,
                    root=tmp_path, progress=False)
    with pytest.raises(ValueError, match=pattern):
        compute_second_moments(model, tok, a, layers, TextCorpus(DOCS, "t"), n_tokens=50, seq_len=64,
                               progress=False)


def _cached_stats(tiny, root):
    model, tok, a = tiny
    kw = dict(fingerprint="f0", n_tokens=120, seq_len=64, root=root, progress=False)
    layer_stats(model, tok, a, [2], TextCorpus(DOCS, "t"), **kw)
    (path,) = root.rglob("*.safetensors")
    return path, kw


def test_truncated_stats_file_names_its_path(tiny, tmp_path):
    model, tok, a = tiny
    path, kw = _cached_stats(tiny, tmp_path)
    data = path.read_bytes()
    for cut in (len(data) // 2, 20, 3):
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptStatsError, match=re.escape(str(path))):
            layer_stats(model, tok, a, [2], TextCorpus(DOCS, "t"), **kw)


def test_invalid_matrix_in_the_cache_names_its_path(tiny, tmp_path):
    model, tok, a = tiny
    path, kw = _cached_stats(tiny, tmp_path)
    key = StatsKey("f0", a.mlp_out_names[2], TextCorpus(DOCS, "t").identity, 120, 64, "float32")
    assert key.path(tmp_path) == path
    save_stats(key, tmp_path, torch.full((a.d_ff, a.d_ff), float("nan")), 120)
    with pytest.raises(CorruptStatsError, match=rf"layer 2 \(cached file {re.escape(str(path))}\): not finite"):
        layer_stats(model, tok, a, [2], TextCorpus(DOCS, "t"), **kw)
    save_stats(key, tmp_path, spd(a.d_ff), 100)  # a file that records a smaller token count than its key
    with pytest.raises(CorruptStatsError, match=rf"{re.escape(str(path))} .*records 100 tokens counted, the key "
                                                r"asks for 120"):
        layer_stats(model, tok, a, [2], TextCorpus(DOCS, "t"), **kw)


# --- projector ------------------------------------------------------------------------------------------------

def test_projector_refuses_a_non_finite_covariance():
    cov = spd(8)
    cov[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"C \(8x8\) is not finite: 0 NaN and 1 infinite"):
        projector_from_cov(cov)


def test_degenerate_projector_is_an_error_unless_asked_for():
    cov = spd(16)  # eigenvalues 1e-3 .. 10
    with pytest.raises(ValueError, match=r"keeps 0 of 16 directions .*threshold=1e-05.*no direction"):
        projector_from_cov(cov, threshold=1e-5)
    with pytest.raises(ValueError, match=r"keeps 16 of 16 directions \(100\.00%\), 100\.00% of tr C.*"
                                         r"threshold=100.*every direction"):
        projector_from_cov(cov, threshold=100.0)
    with pytest.raises(ValueError, match=r"keeps 0 of 16 directions .*energy=1e-09"):
        projector_from_cov(cov, mode="energy", energy=1e-9)
    with pytest.raises(ValueError, match=r"^projector of layer 5 keeps 16 of 16 directions"):
        projector_from_cov(cov, threshold=100.0, layer=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        identity = projector_from_cov(torch.zeros(16, 16), threshold=1.0, allow_degenerate=True)
    assert identity.n_kept == 16 and torch.equal(identity.dense(), torch.eye(16))


def test_near_degenerate_projector_warns_with_the_numbers():
    d = 200
    ev = torch.cat([torch.tensor([1e-4]), torch.linspace(1.0, 2.0, d - 1)])
    with pytest.warns(ProjectorWarning, match=r"keeps 1 of 200 directions \(0\.50%\), 0\.00% of tr C; eigenvalues "
                                              r"of C from 0\.0001 to 2, threshold=0\.02: almost nothing"):
        p = projector_from_cov(spd(d, ev), threshold=2e-2)
    assert p.n_kept == 1
    ev = torch.cat([torch.linspace(1e-3, 1e-2, d - 1), torch.tensor([5.0])])
    with pytest.warns(ProjectorWarning, match=r"keeps 199 of 200 directions \(99\.50%\).*almost everything"):
        projector_from_cov(spd(d, ev), threshold=2e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        projector_from_cov(spd(d), threshold=2e-2)  # a sensible share: silent


# --- requests -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("prompt", 3), ("subject", None), ("subject", 42), ("target_new", 1.5),
                                          ("target_new", ["Rome"]), ("target_true", 7)])
def test_non_string_request_field_is_named(field, value):
    kw = dict(prompt="The capital of {} is", subject="France", target_new="Rome", target_true="Paris", case_id=5)
    with pytest.raises(TypeError, match=re.escape(f"request 5: field {field!r}={value!r}: must be")):
        EditRequest(**{**kw, field: value})


@pytest.mark.parametrize("case_id", [True, 1.0, [1]])
def test_bad_case_id_is_named(case_id):
    with pytest.raises(TypeError, match=re.escape(f"request field 'case_id'={case_id!r}")):
        EditRequest("{} is", "X", "Y", case_id=case_id)


@pytest.mark.parametrize("prompt", ["The {x} of {} is", "The {0} of {} is", "{} is {", "{} is }", "{{}} is",
                                    "The capital of France is", "{} and {} speak"])
def test_prompt_with_another_brace_field_is_refused(prompt):
    with pytest.raises(ValueError, match=re.escape(f"request 'c9': field 'prompt'={prompt!r}: ")):
        EditRequest(prompt, "France", "Rome", case_id="c9")


def test_counterfact_record_with_a_non_string_target_is_named():
    rw = {"prompt": "{} is in", "subject": "Paris", "target_new": {"str": 5}, "target_true": {"str": "France"}}
    with pytest.raises(TypeError, match=r"request 3: field 'target_new'=5: must be a string, got int"):
        EditRequest.from_counterfact({"case_id": 3, "requested_rewrite": rw})


def test_counterfact_loader_refuses_a_brace_field():
    from alphaedit_core.data.counterfact import validate_counterfact_record

    record = {"case_id": 11, "requested_rewrite": {"prompt": "The {x} of {} is", "subject": "Paris",
                                                   "relation_id": "P1", "target_new": {"str": "Rome"},
                                                   "target_true": {"str": "France"}}}
    with pytest.raises(ValueError, match=r"record case_id=11 .*field 'requested_rewrite\.prompt' has a brace "
                                         r"besides the subject's '\{\}'"):
        validate_counterfact_record(record, 0)


def R(case_id, subject="France", target="Rome", prompt="The capital of {} is"):
    return EditRequest(prompt, subject, target, case_id=case_id)


def test_check_batch_refuses_duplicate_case_ids():
    with pytest.raises(ValueError, match=r"case_id=7 \(index 0\) and case_id=7 \(index 2\): duplicate case id"):
        check_batch([R(7), R(8, "Spain"), R(7, "Italy")])
    with pytest.raises(ValueError, match=r"case_id=7 \(index 0\) and case_id=7 \(index 1\): duplicate case id"):
        check_batch([R(7), R(7)])


def test_check_batch_refuses_two_targets_for_one_fact():
    with pytest.raises(ValueError, match=r"case_id=1 \(index 0\) and case_id='b' \(index 2\) edit the fact "
                                         r"'The capital of France is' to two different targets: 'Rome' and 'Oslo'"):
        check_batch([R(1), R(2, "Spain"), R("b", target="Oslo")])


def test_check_batch_accepts_multi_rewrite_records_and_unnamed_requests():
    check_batch([R(1), R(2, "Spain"), R(2, "Spain", prompt="{} is located in"), R(3, "Italy")])
    check_batch([R(None), R(None, "Spain")])
    check_batch([R(1), R(2)])  # the same rewrite under two case ids
    check_batch([])


# --- hyperparameters ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, expected", [
    ("layers", "4", "must be a list of int, got str"),
    ("layers", [4, "5"], "item [1]='5' must be an integer (int), got str"),
    ("layers", [True], "item [0]=True must be an integer (int), got bool"),
    ("layers", 4, "must be a list of int, got int"),
    ("v_lr", "0.1", "must be a number (float), got str"),
    ("L2", None, "must be a number (float), got NoneType"),
    ("nullspace_threshold", True, "must be a number (float), got bool"),
    ("v_num_grad_steps", True, "must be an integer (int), got bool"),
    ("batch_size", 10.0, "must be an integer (int), got float"),
    ("mom2_n_tokens", "300000", "must be an integer (int), got str"),
    ("mom2_corpus", None, "must be a string (str), got NoneType"),
    ("context_template_seeds", "The", "must be a list of str, got str"),
])
def test_wrong_typed_hparam_names_field_value_and_type(field, value, expected):
    with pytest.raises(TypeError, match=re.escape(f"hparams field {field!r}={value!r}: {expected}")):
        EditHParams(**{field: value})
    with pytest.raises(TypeError, match=re.escape(f"hparams field {field!r}")):
        EditHParams.load("smollm2-135m-instruct", **{field: value})


@pytest.mark.parametrize("field", ["L2", "v_weight_decay", "mom2_update_weight", "v_lr"])
def test_non_finite_hparam_is_refused(field):
    with pytest.raises(ValueError, match=re.escape(f"hparams field {field!r}=nan: must be finite")):
        EditHParams(**{field: math.nan})


def test_ints_are_accepted_where_floats_are_expected():
    assert EditHParams(L2=10, v_lr=1).L2 == 10


# --- model names ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["smollm2-135", "SmolLM2-135M-Instruct", "./no/such/folder", "missing.gguf"])
def test_unknown_model_name_fails_fast_without_the_network(monkeypatch, name):
    import transformers

    from alphaedit_core import models as M

    def offline(*a, **kw):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", offline)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    monkeypatch.setattr(M, "locate_gguf", offline)
    with pytest.raises(ValueError, match=rf"unknown model {re.escape(repr(name))}: not a registered short name "
                                         r"\(known: .*smollm2-135m-instruct"):
        M.load_model(name)


def test_model_name_of_the_wrong_type_is_named():
    from alphaedit_core.models import load_model

    with pytest.raises(TypeError, match=r"name_or_path=135 must be a string or a path, got int"):
        load_model(135)


@pytest.mark.parametrize("damaged", ["model.safetensors", "tokenizer.json"])
def test_truncated_file_in_a_model_folder_names_the_folder_and_the_file(tmp_path, damaged):
    from alphaedit_core.models import CorruptModelError, load_model

    folder = tmp_path / "tiny"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    data = (folder / damaged).read_bytes()
    (folder / damaged).write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptModelError, match=rf"model folder {re.escape(str(folder))} cannot be loaded .*"
                                                rf"unreadable file\(s\): {re.escape(damaged)} \("):
        load_model(str(folder))
