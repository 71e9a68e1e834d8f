"""Neighbour contamination: the offline set's streams never edit a neighbourhood subject, and the evaluator refuses
to score a neighbourhood prompt about a subject edited in the run it scores (or reports the share, on request)."""
from __future__ import annotations

import copy
import random
import warnings

import pytest
from test_metrics import CF_RECORD, ZSRE_RECORD, cf_model, make_tok, val, zsre_model

from alphaedit_core.data import contaminated_share, contamination, edited_subjects, load_offline_counterfact
from alphaedit_core.data.offline import whole_word_pattern
from alphaedit_core.metrics import evaluate
from alphaedit_core.requests import EditRequest

MILESTONES = (100, 500, 1000, 2000)


@pytest.fixture(scope="module")
def stream():
    """The edit-count stream as notebooks/edit_count.py draws it: 2,000 records, seed 0, edited in this order."""
    return load_offline_counterfact(n=2000, seed=0)


def eval_sample(records, n_done, seed=0, cap=200):
    """The evaluation set at a milestone, as notebooks/edit_count.py draws it (a capped sample of the edited)."""
    done = records[:n_done]
    return done if n_done <= cap else random.Random(seed + n_done).sample(done, cap)


@pytest.mark.parametrize("n_done", MILESTONES)
def test_stream_never_edits_a_neighbourhood_subject(stream, n_done):
    edited = stream[:n_done]
    subjects = {r["requested_rewrite"]["subject"] for r in edited}
    assert len(subjects) > 0.6 * n_done  # country subjects are edited in up to four relations
    pattern = whole_word_pattern(sorted(subjects))
    for records in (eval_sample(stream, n_done), edited):
        listed = {s for r in records for s in r["neighborhood_subjects"]}
        assert not listed & subjects
        assert not [p for r in records for p in r["neighborhood_prompts"] if pattern.search(p)]
        report = contamination(records, edited)
        assert report["n_contaminated"] == 0 and report["share"] == 0.0
        assert report["n_prompts"] == 10 * len(records)


def test_whole_set_edited_leaves_neighbours_clean():
    records = load_offline_counterfact()
    assert contaminated_share(records, records) == 0.0


def test_contamination_finds_planted_neighbours(stream):
    edited = stream[:50]
    record = copy.deepcopy(stream[60])
    victim = next(r for r in edited if r["requested_rewrite"]["relation_id"] == record["requested_rewrite"][
        "relation_id"])
    subject = victim["requested_rewrite"]["subject"]
    record["neighborhood_prompts"][2] = record["requested_rewrite"]["prompt"].format(subject)
    record["neighborhood_subjects"][2] = subject
    report = contamination([record, stream[61]], edited)
    assert report["n_contaminated"] == 1 and report["share"] == pytest.approx(1 / 20)
    assert report["prompts"] == [{"case_id": record["case_id"], "index": 2,
                                  "prompt": record["neighborhood_prompts"][2], "subject": subject,
                                  "match": "subject"}]
    assert report["by_record"] == {record["case_id"]: 1} and report["n_records_contaminated"] == 1
    # canonical CounterFact lists no neighbour subjects: the whole-word search finds it
    del record["neighborhood_subjects"]
    assert contamination([record], edited)["prompts"][0]["match"] == "whole word"
    # a subject inside a longer word is no match; as a whole word next to punctuation it is
    assert contaminated_share([{**CF_RECORD, "neighborhood_prompts": ["Parisian food is", "Paris, France is"]}],
                              ["Paris"]) == 0.5


def test_edited_subjects_from_records_requests_and_strings():
    multi = {"case_id": 1, "requested_rewrite": [{"subject": "A b"}, {"subject": "C"}]}
    assert edited_subjects([CF_RECORD, multi, ZSRE_RECORD, EditRequest("{} is", "Eiffel", "x"), "Rome"]) == {
        "Danielle Darrieux", "A b", "C", "Anna", "Eiffel", "Rome"}
    with pytest.raises(TypeError):
        edited_subjects("Paris")  # a string is not a list of subjects
    with pytest.raises(TypeError):
        edited_subjects([3])


def test_mismatched_neighbour_subjects_raise():
    bad = {**CF_RECORD, "neighborhood_subjects": ["Eiffel"]}  # two prompts, one subject
    with pytest.raises(ValueError, match=r"case_id=7.*neighborhood_subjects"):
        contamination([bad], ["Rome"])
    with pytest.raises(ValueError, match="neighborhood_subjects"):
        contamination([{**CF_RECORD, "neighborhood_subjects": ["Rome", "Eiffel"]}], ["Rome"])  # not in its prompt


# --- the evaluator ---------------------------------------------------------------------------------------------

PLANTED = {**CF_RECORD, "neighborhood_subjects": ["Eiffel", "Eiffel"]}  # "Eiffel is located", "Eiffel is the"
EIFFEL = {"case_id": 3, "requested_rewrite": {"prompt": "{} is located", "subject": "Eiffel", "relation_id": "P1",
                                              "target_new": {"str": "New York"}, "target_true": {"str": "Paris"}}}


def test_evaluator_raises_on_a_planted_contaminated_neighbour():
    tok = make_tok()
    m = cf_model(tok)
    m.calls.clear()
    for record in (PLANTED, CF_RECORD):  # listed subject, or whole-word search where none is listed
        with pytest.raises(ValueError) as err:
            evaluate(m, tok, [record], edited=[EIFFEL, CF_RECORD], progress=False)
        message = str(err.value)
        assert "case_id=7" in message and "'Eiffel is located'" in message and "'Eiffel'" in message
        assert "2 of 2" in message and "on_contamination='report'" in message
    assert m.calls == []  # refused before any forward pass
    with pytest.raises(ValueError, match="case_id=7"):
        evaluate(m, tok, [PLANTED], edited=["Eiffel"], progress=False)
    with pytest.raises(ValueError, match="on_contamination"):
        evaluate(m, tok, [CF_RECORD], edited=[], on_contamination="drop", progress=False)


def test_evaluator_scores_clean_records_and_reports_on_request():
    tok = make_tok()
    m = cf_model(tok)
    plain = evaluate(m, tok, [PLANTED], families=("official",), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # clean: no warning
        clean = evaluate(m, tok, [PLANTED], families=("official",), edited=[CF_RECORD, "Rome"], progress=False)
    assert clean.equals(plain) and clean.attrs["contamination"]["share"] == 0.0
    assert "contamination" not in plain.attrs  # no edited run given: no check
    with pytest.warns(UserWarning, match=r"2 of 2 .*100\.0%"):
        reported = evaluate(m, tok, [PLANTED], families=("official",), edited=[EIFFEL],
                            on_contamination="report", progress=False)
    assert reported.equals(plain)  # scored, not filtered
    assert val(reported, "official", "specificity") == 0.5
    info = reported.attrs["contamination"]
    assert info["n_contaminated"] == 2 and info["share"] == 1.0 and info["by_record"] == {7: 2}


def test_evaluator_checks_zsre_loc():
    tok = make_tok()
    m = zsre_model(tok)
    with pytest.raises(ValueError, match=r"case_id=0: loc question 'nq question: where is Eiffel'"):
        evaluate(m, tok, [ZSRE_RECORD], kind="zsre", families=("official",), edited=["Eiffel"], progress=False)
    df = evaluate(m, tok, [ZSRE_RECORD], kind="zsre", families=("official",), edited=[ZSRE_RECORD], progress=False)
    assert df.attrs["contamination"]["n_prompts"] == 1 and df.attrs["contamination"]["n_contaminated"] == 0
