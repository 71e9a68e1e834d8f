"""Dataset loaders, validation, sampling and the offline counterfactual set (fast: no network, no model)."""
from __future__ import annotations

import copy
import io
import json
import re
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from alphaedit_core.data import (
    DatasetDownloadError,
    load_counterfact,
    load_offline_counterfact,
    load_offline_zsre,
    load_zsre,
    to_requests,
)
from alphaedit_core.data import offline
from alphaedit_core.data.counterfact import OFFLINE_COUNTERFACT
from alphaedit_core.data.zsre import OFFLINE_ZSRE
from alphaedit_core.requests import EditRequest


def cf_record(case_id: int, subject: str = "Danielle Darrieux") -> dict:
    """A record in the canonical CounterFact format."""
    return {
        "case_id": case_id,
        "pararel_idx": 2796,
        "requested_rewrite": {
            "prompt": "The mother tongue of {} is",
            "relation_id": "P103",
            "target_new": {"str": "English", "id": "Q1860"},
            "target_true": {"str": "French", "id": "Q150"},
            "subject": subject,
        },
        "paraphrase_prompts": [f"Shayna does this and {subject} is", f"{subject}'s mother tongue is"],
        "neighborhood_prompts": [f"The mother tongue of Person {i} is" for i in range(10)],
        "attribute_prompts": [f"The mother tongue of Other {i} is" for i in range(10)],
        "generation_prompts": [f"{subject}'s mother tongue is"] * 10,
    }


def zsre_record(subject: str = "Watts Humphrey") -> dict:
    """A record in the canonical ZsRE (MEND) format: no case_id."""
    return {
        "subject": subject,
        "src": f"What university did {subject} attend?",
        "pred": "Trinity College",
        "rephrase": f"What university did {subject} take part in?",
        "alt": "University of Michigan",
        "answers": ["Illinois Institute of Technology"],
        "loc": "nq question: who played desmond doss father in hacksaw ridge",
        "loc_ans": "Hugo Weaving",
        "cond": f"Trinity College >> University of Michigan || What university did {subject} attend?",
    }


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shipped():
    return load_offline_counterfact(), load_offline_zsre()


# --- the offline set -------------------------------------------------------------------------------------------


def test_generator_reproduces_shipped_files(tmp_path):
    paths = offline.write(tmp_path, seed=0)
    assert paths["counterfact"].read_bytes() == OFFLINE_COUNTERFACT.read_bytes()
    assert paths["zsre"].read_bytes() == OFFLINE_ZSRE.read_bytes()
    assert OFFLINE_COUNTERFACT.stat().st_size + OFFLINE_ZSRE.stat().st_size < 8_000_000


def _split(prompt: str, filled: str) -> str:
    """The subject that `filled` puts into `prompt`'s "{}"."""
    prefix, suffix = prompt.split("{}")
    assert filled.startswith(prefix) and filled.endswith(suffix), (prompt, filled)
    return filled[len(prefix):len(filled) - len(suffix)]


def test_shipped_counterfact_set(shipped):
    records, _ = shipped
    assert len(records) >= 2500
    assert [r["case_id"] for r in records] == list(range(len(records)))
    by_relation = defaultdict(list)
    for r in records:
        by_relation[r["requested_rewrite"]["relation_id"]].append(r)
    assert sum(len(rs) >= 100 for rs in by_relation.values()) >= 4
    # each country is in one pool (edit or neighbour), so a relation of country facts keeps about half of them:
    # official_language, with 139 single-language countries, keeps 74
    assert all(len(rs) >= 50 for rs in by_relation.values())
    truth = {(rel, r["requested_rewrite"]["subject"]): r["requested_rewrite"]["target_true"]["str"]
             for rel, rs in by_relation.items() for r in rs}
    assert len(truth) == len(records)  # a subject appears once per relation
    edited = {subject for _, subject in truth}  # the edit pool: every record's subject
    keys = ["case_id", "requested_rewrite", "paraphrase_prompts", "neighborhood_prompts", "neighborhood_subjects",
            "attribute_prompts", "attribute_subjects", "generation_prompts", "reference_text",
            "neighborhood_same_object", "attribute_same_object"]
    for r in records:
        assert list(r) == keys
        rw = r["requested_rewrite"]
        assert set(rw) == {"prompt", "relation_id", "target_new", "target_true", "subject"}
        prompt, subject, rel = rw["prompt"], rw["subject"], rw["relation_id"]
        new, true = rw["target_new"]["str"], rw["target_true"]["str"]
        assert new != true and rw["target_new"]["id"] != rw["target_true"]["id"]
        assert new == new.strip() and true == true.strip() and new and true
        filled = prompt.format(subject)
        assert not filled.endswith((" ", ".", "?"))
        for text in [filled, *r["paraphrase_prompts"]]:
            assert subject in text
            assert true.lower() not in text.lower() and new.lower() not in text.lower()
        assert len(r["paraphrase_prompts"]) == 2 and len(set(r["paraphrase_prompts"] + [filled])) == 3
        assert len(r["generation_prompts"]) == 10 and all(subject in g for g in r["generation_prompts"])
        assert new in r["reference_text"]
        for field, count_field in (("neighborhood", "neighborhood_same_object"),
                                   ("attribute", "attribute_same_object")):
            prompts, subjects = r[f"{field}_prompts"], r[f"{field}_subjects"]
            assert len(prompts) == 10 and len(set(prompts)) == 10 and len(subjects) == 10
            assert 0 <= r[count_field] <= 10
            for p, listed in zip(prompts, subjects):
                other_subject = _split(prompt, p)
                assert other_subject == listed and other_subject.strip()
                assert other_subject not in edited  # neighbours come from the neighbour pool: no record edits them
    # South America has fewer than 10 neighbour-pool countries; Japan, say, more than 10 neighbour-pool cities
    assert all(r["neighborhood_same_object"] >= 9 for r in by_relation["continent"])
    assert sum(r["neighborhood_same_object"] == 10 for r in by_relation["city_country"]) > 0.95 * len(
        by_relation["city_country"])
    assert all(r["neighborhood_same_object"] == 0 for r in by_relation["capital"])  # a capital has one country


def _whole_word(subjects):
    """The quality hook's pattern: any of `subjects` as a whole word, longest first."""
    subjects = sorted(set(subjects), key=lambda s: (-len(s), s))
    return re.compile(r"(?<![\w])(" + "|".join(map(re.escape, subjects)) + r")(?![\w])")


def test_no_locality_prompt_names_a_record_subject(shipped):
    """Disjoint pools: no neighbourhood or attribute prompt, nor ZsRE loc question, names the subject of any record
    of the set (any relation) as a whole word."""
    records, zsre = shipped
    pattern = _whole_word(r["requested_rewrite"]["subject"] for r in records)
    rw = records[0]["requested_rewrite"]
    assert pattern.search(rw["prompt"].format(rw["subject"])).group(1) == rw["subject"]  # the pattern works
    for field in ("neighborhood_prompts", "attribute_prompts"):
        named = [(r["case_id"], p) for r in records for p in r[field] if pattern.search(p)]
        assert named == [], (field, len(named), named[:3])
    assert [z["loc"] for z in zsre if pattern.search(z["loc"])] == []
    assert offline.contaminated_prompts(records, zsre) == []
    planted = copy.deepcopy(records[:2])
    planted[0]["neighborhood_prompts"][3] = planted[0]["requested_rewrite"]["prompt"].format(
        planted[1]["requested_rewrite"]["subject"])
    assert [(c, f) for c, f, _, _ in offline.contaminated_prompts(planted)] == [(planted[0]["case_id"],
                                                                                 "neighborhood_prompts")]


def test_subject_pools_are_disjoint():
    countries = offline._countries()
    pools = offline._country_facts(countries)
    pools["city_country"] = offline._city_facts(countries)
    for rel in offline.RELATIONS:
        pools[rel].sort(key=lambda f: (-f.weight, f.subject))
    split = offline.split_pools(pools)
    assert not split.edit & split.neighbour and not (split.edit | split.neighbour) & set(split.dropped)
    records = load_offline_counterfact()
    assert {r["requested_rewrite"]["subject"] for r in records} == split.edit
    assert {s for r in records for s in r["neighborhood_subjects"] + r["attribute_subjects"]} <= split.neighbour
    # clashing names never straddle the pools: "El Salvador" is edited, so the city "Salvador" is no neighbour
    assert "El Salvador" in split.edit and "Salvador" in split.dropped
    assert "Jersey City" not in split.neighbour or "Jersey" not in split.edit


def test_shipped_zsre_set(shipped):
    records, zsre = shipped
    assert len(zsre) == len(records)
    for r, z in zip(records, zsre):
        rw = r["requested_rewrite"]
        assert z["case_id"] == r["case_id"] and z["subject"] == rw["subject"]
        assert z["subject"] in z["src"] and z["subject"] in z["rephrase"] and z["src"] != z["rephrase"]
        assert z["src"].endswith("?") and z["rephrase"].endswith("?")
        assert z["pred"] == z["answers"][0] == rw["target_true"]["str"] and len(z["answers"]) == 1
        assert z["alt"] == rw["target_new"]["str"] != z["pred"]
        assert z["loc"].startswith("nq question: ") and z["subject"] not in z["loc"] and z["loc_ans"]
        assert z["cond"] == f"{z['pred']} >> {z['alt']} || {z['src']}"


def test_shipped_records_become_requests(shipped):
    records, zsre = shipped
    requests = to_requests(records)
    assert len(requests) == len(records)
    assert requests[0] == EditRequest.from_counterfact(records[0])
    assert requests[0].target_new == records[0]["requested_rewrite"]["target_new"]["str"]
    official = to_requests(zsre, kind="zsre")
    easyedit = to_requests(zsre, kind="zsre", zsre_target="alt")
    assert official[0].target_new == zsre[0]["answers"][0] and easyedit[0].target_new == zsre[0]["alt"]
    assert official[0].prompt.format(official[0].subject) == zsre[0]["src"]
    with pytest.raises(ValueError, match="kind"):
        to_requests(records, kind="wiki")


def test_to_requests_expands_multi_rewrites():
    record = cf_record(7)
    second = dict(record["requested_rewrite"], subject="Edwin of Northumbria")
    record["requested_rewrite"] = [record["requested_rewrite"], second]
    requests = to_requests([record])
    assert [q.subject for q in requests] == ["Danielle Darrieux", "Edwin of Northumbria"]
    assert {q.case_id for q in requests} == {7}


# --- sampling --------------------------------------------------------------------------------------------------


def test_seeded_sampling():
    a = load_offline_counterfact(50, seed=1)
    assert a == load_offline_counterfact(50, seed=1)
    assert [r["case_id"] for r in a] != [r["case_id"] for r in load_offline_counterfact(50, seed=2)]
    assert len({r["case_id"] for r in a}) == 50
    assert [r["case_id"] for r in load_offline_counterfact(30, sample="first")] == list(range(30))
    assert len(load_offline_counterfact()) == len(json.loads(OFFLINE_COUNTERFACT.read_text(encoding="utf-8")))
    assert [z["case_id"] for z in load_offline_zsre(20, seed=1)] == [r["case_id"] for r in
                                                                     load_offline_counterfact(20, seed=1)]


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"n": -3}, {"n": 10**6}, {"n": 5, "sample": "last"}])
def test_bad_selection_raises(kwargs):
    with pytest.raises(ValueError):
        load_offline_zsre(**kwargs)


# --- canonical files -------------------------------------------------------------------------------------------


def test_canonical_files_from_path(tmp_path):
    path = write_json(tmp_path / "counterfact.json", [cf_record(i, f"Subject {i}") for i in range(5)])
    records = load_counterfact(path, sample="first", n=3)
    assert [r["case_id"] for r in records] == [0, 1, 2] and records[0]["pararel_idx"] == 2796
    assert to_requests(records)[1].text == "The mother tongue of Subject 1 is"
    assert len(load_counterfact(str(path), n=5, seed=3)) == 5

    multi = cf_record(0)
    multi["requested_rewrite"] = [multi["requested_rewrite"]]
    assert load_counterfact(write_json(tmp_path / "multi.json", [multi]), multi=True)[0]["case_id"] == 0

    zpath = write_json(tmp_path / "zsre.json", [zsre_record(f"Person {i}") for i in range(4)])
    zsre = load_zsre(zpath, sample="first")
    assert [z["case_id"] for z in zsre] == [0, 1, 2, 3]  # the index stands in for the missing case_id
    assert to_requests(zsre, kind="zsre")[2].target_new == "Illinois Institute of Technology"


def _break(record: dict, path: str, value) -> dict:
    """A copy of `record` with the field at dotted `path` set to `value` (or deleted if value is DELETE)."""
    record = copy.deepcopy(record)
    *parents, last = path.split(".")
    obj = record
    for key in parents:
        obj = obj[key]
    if value is DELETE:
        del obj[last]
    else:
        obj[last] = value
    return record


DELETE = object()

CF_BREAKS = [
    ("paraphrase_prompts", DELETE, "paraphrase_prompts"),
    ("requested_rewrite", DELETE, "requested_rewrite"),
    ("requested_rewrite.subject", DELETE, "requested_rewrite.subject"),
    ("requested_rewrite.subject", "  ", "requested_rewrite.subject"),
    ("requested_rewrite.prompt", "The mother tongue of Danielle is", "requested_rewrite.prompt"),
    ("requested_rewrite.prompt", "{} and {} speak", "requested_rewrite.prompt"),
    ("requested_rewrite.prompt", "The {0} tongue of {} is", "requested_rewrite.prompt"),
    ("requested_rewrite.relation_id", DELETE, "requested_rewrite.relation_id"),
    ("requested_rewrite.target_new.str", "", "requested_rewrite.target_new.str"),
    ("requested_rewrite.target_new.str", "French", "requested_rewrite.target_new"),
    ("requested_rewrite.target_true", "French", "requested_rewrite.target_true"),
    ("requested_rewrite.target_true.str", DELETE, "requested_rewrite.target_true.str"),
    ("paraphrase_prompts", ["only one"], "paraphrase_prompts"),
    ("paraphrase_prompts", ["a", "b", "c"], "paraphrase_prompts"),
    ("paraphrase_prompts", ["a", 3], "paraphrase_prompts[1]"),
    ("paraphrase_prompts", "The native language of X is", "paraphrase_prompts"),
    ("neighborhood_prompts", ["x"] * 9, "neighborhood_prompts"),
    ("neighborhood_prompts", ["x"] * 9 + [None], "neighborhood_prompts[9]"),
    ("neighborhood_prompts", ["x"] * 9 + [""], "neighborhood_prompts[9]"),
    ("attribute_prompts", "x", "attribute_prompts"),
    ("generation_prompts", DELETE, "generation_prompts"),
    ("case_id", [4], "case_id"),
]


@pytest.mark.parametrize("field_path,value,named", CF_BREAKS)
def test_malformed_counterfact_record_raises(tmp_path, field_path, value, named):
    good = [cf_record(i, f"Subject {i}") for i in range(3)]
    bad = good[:2] + [_break(cf_record(42), field_path, value)]
    path = write_json(tmp_path / "bad.json", bad)
    with pytest.raises(ValueError) as err:
        load_counterfact(path, n=1)  # every record is validated, not just the sampled ones
    message = str(err.value)
    assert f"'{named}'" in message
    assert ("case_id=42" in message) if field_path != "case_id" else ("index 2" in message)


def test_counterfact_record_problems_named_by_index(tmp_path):
    record = cf_record(0)
    del record["case_id"]
    with pytest.raises(ValueError, match=r"index 1: field 'case_id' is missing"):
        load_counterfact(write_json(tmp_path / "a.json", [cf_record(5), record]))
    with pytest.raises(ValueError, match=r"case_id=5 \(index 1\): field 'case_id' duplicates"):
        load_counterfact(write_json(tmp_path / "b.json", [cf_record(5), cf_record(5)]))
    with pytest.raises(ValueError, match=r"index 0: must be a JSON object"):
        load_counterfact(write_json(tmp_path / "c.json", ["not a record"]))
    multi = cf_record(3)
    multi["requested_rewrite"] = [multi["requested_rewrite"], {"prompt": "{} is", "subject": "X"}]
    with pytest.raises(ValueError, match=r"case_id=3 .*'requested_rewrite\[1\]\.relation_id' is missing"):
        load_counterfact(write_json(tmp_path / "d.json", [multi]), multi=True)


ZSRE_BREAKS = [
    ("subject", DELETE, "subject"),
    ("src", "What university did he attend?", "subject"),
    ("src", "What university did {} Watts Humphrey attend?", "src"),
    ("answers", [], "answers"),
    ("answers", "Illinois", "answers"),
    ("answers", [""], "answers[0]"),
    ("alt", "", "alt"),
    ("rephrase", 5, "rephrase"),
    ("loc", "who played desmond doss father", "loc"),
    ("loc_ans", DELETE, "loc_ans"),
    ("cond", DELETE, "cond"),
]


@pytest.mark.parametrize("field_path,value,named", ZSRE_BREAKS)
def test_malformed_zsre_record_raises(tmp_path, field_path, value, named):
    records = [zsre_record(), zsre_record("Ann"), _break(zsre_record(), field_path, value)]
    with pytest.raises(ValueError) as err:
        load_zsre(write_json(tmp_path / "bad.json", records))
    assert "index 2" in str(err.value) and f"'{named}'" in str(err.value)


@pytest.mark.parametrize("content", ["[]", "{}", "[", '{"case_id": 1}'])
def test_empty_or_broken_file_raises(tmp_path, content):
    path = tmp_path / "data.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError):
        load_counterfact(path)
    with pytest.raises(ValueError):
        load_zsre(path)


# --- download --------------------------------------------------------------------------------------------------


def test_no_internet_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path))
    urls = []

    def unreachable(url, *args, **kwargs):
        urls.append(url)
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with pytest.raises(DatasetDownloadError, match=r"pass path=\.\.\. to load_counterfact\(\)"):
        load_counterfact(n=10)
    with pytest.raises(DatasetDownloadError, match=r"multi_counterfact\.json"):
        load_counterfact(multi=True)
    with pytest.raises(DatasetDownloadError, match=r"pass path=\.\.\. to load_zsre\(\)"):
        load_zsre()
    assert urls == ["https://memit.baulab.info/data/dsets/counterfact.json",
                    "https://memit.baulab.info/data/dsets/multi_counterfact.json",
                    "https://memit.baulab.info/data/dsets/zsre_mend_eval.json"]
    assert not list((tmp_path / "data").iterdir())  # no partial file left behind


def test_download_once_into_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHAEDIT_CACHE", str(tmp_path))
    payload = json.dumps([zsre_record(), zsre_record("Ann")]).encode()
    calls = []

    def fake_urlopen(url, *args, **kwargs):
        calls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    assert len(load_zsre()) == 2
    assert (tmp_path / "data" / "zsre_mend_eval.json").read_bytes() == payload
    assert len(load_zsre(n=1, seed=4)) == 1
    assert len(calls) == 1  # the second load reads the cache
