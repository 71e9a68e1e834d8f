"""The evaluator: every metric family of the study on one model, from one teacher-forced pass.

`evaluate` collects the distinct (prompt, target) pairs that the requested families need and the prompts the
generation family answers, runs each distinct prompt once (:func:`.scoring.score_and_decode`: the prompt pass
gives every target's first-token scores and the first generated token, its cache serves the targets' other tokens
and the greedy answer), samples the fluency generations, and returns one tidy row per
(record, family, prompt kind, metric): ``value`` is the per-record mean over that record's prompts.

Prompt kinds and targets
  CounterFact: rewrite (the filled-in `requested_rewrite.prompt`), paraphrase (`paraphrase_prompts`),
  neighborhood (`neighborhood_prompts`), generation (`generation_prompts`); the edit target is target_new,
  the neighbourhood prompts' correct answer target_true.
  ZsRE: rewrite (`src`), paraphrase (`rephrase`), loc; the edit target is `answers[0]` (`zsre_target="alt"`:
  `alt`, as EasyEdit); the official locality prompt is `loc` + "?" with answer `loc_ans` (as the official
  loader), EasyEdit's is `loc` as is.

Metrics (family: metric @ prompt kinds)
  official/CounterFact: efficacy @rewrite, generalization @paraphrase, specificity @neighborhood (probability
    comparison of mean per-token NLLs), magnitude @all three, strict_acc @all three (the official
    `*_prompts_correct`), fluency and consistency @generation (only with `fluency=True`).
  official/ZsRE: efficacy @rewrite, generalization @paraphrase, specificity @loc (mean token hits),
    strict_acc @all three (all tokens right).
  easyedit: rewrite_acc @rewrite, rephrase_acc @paraphrase (first paraphrase only), locality @neighborhood/loc
    (needs `baseline`), portability @portability[/name] (only records with a `portability` field).
  generation: exact_match and contains @rewrite, paraphrase, neighborhood/loc (greedy, `answer_max_new_tokens`).

Neighbour contamination
  A neighbourhood prompt about a subject that the evaluated run itself edited measures the edit, not its side
  effects. `evaluate(..., edited=<the run's edited records>)` checks every neighbourhood prompt (ZsRE: `loc`) of the
  evaluated records against the run's edited subjects (:func:`alphaedit_core.data.contamination`: the prompt's
  listed subject, `neighborhood_subjects`, or an edited subject written in it as a whole word) and by default
  refuses, raising a `ValueError` that names the record, the prompt and the subject; it does not drop prompts.
  `on_contamination="report"` (for canonical CounterFact, which cannot be re-split) scores them all and reports
  the contaminated share instead, in a warning and in ``df.attrs["contamination"]``.
"""
from __future__ import annotations

import warnings
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import torch

from . import counterfact as cf
from . import easyedit as ee
from . import zsre as zs
from .consistency import consistency, fit_tfidf, reference_text_of
from .fluency import fluency as fluency_of
from .generation import contains_answer, exact_match, generate, to_generation
from ..data.counterfact import contamination
from .scoring import Probe, can_share_prefix, score_and_decode, score_pairs

FAMILIES = ("official", "easyedit", "generation")
KINDS = ("counterfact", "zsre")
BASELINE_FORMAT = "alphaedit_core.metrics.baseline"
# Bumped whenever a change to the metrics (prompts, scoring, parsing, contamination check) can move a number:
# stored with every score so that scores of different evaluator versions are never mixed unknowingly.
EVALUATOR_VERSION = 2
COLUMNS = ["case_id", "family", "prompt_kind", "metric", "value", "n_prompts"]
ON_CONTAMINATION = ("raise", "report")


def check_contamination(records: Sequence[Mapping[str, Any]], edited: Any, *, kind: str = "counterfact",
                        on_contamination: str = "raise") -> dict[str, Any]:
    """The contamination report of `records` against the run's `edited` records (see
    :func:`alphaedit_core.data.contamination`), without its per-prompt list. `on_contamination="raise"`: a
    `ValueError` naming the first contaminated record (case_id), prompt and subject, and how many there are;
    "report": a warning with the share when there are any."""
    if on_contamination not in ON_CONTAMINATION:
        raise ValueError(f"on_contamination must be one of {ON_CONTAMINATION}, not {on_contamination!r}")
    report = contamination(records, edited, kind=kind)
    found = report.pop("prompts")
    if found:
        first = found[0]
        where = "neighbourhood prompt" if kind == "counterfact" else "loc question"
        message = (f"case_id={first['case_id']!r}: {where} {first['prompt']!r} is about {first['subject']!r}, "
                   f"which this run edited ({first['match']} match); {report['n_contaminated']} of "
                   f"{report['n_prompts']} locality prompts ({report['share']:.1%}) in "
                   f"{report['n_records_contaminated']} records are contaminated")
        if on_contamination == "raise":
            raise ValueError(f"evaluate: {message}. Evaluate on records whose neighbours the run did not edit, or "
                             "pass on_contamination='report' for data that cannot be re-split (canonical "
                             "CounterFact)")
        warnings.warn(f"evaluate: {message}; scored anyway (on_contamination='report')", stacklevel=3)
    return report


def _check(records: Any, kind: str) -> list[Mapping[str, Any]]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if records is None:
        raise ValueError("no records to evaluate")
    records = list(records)
    if not records:
        raise ValueError("no records to evaluate (an empty list has no rate, not 0%)")
    return records


def _case_id(record: Mapping[str, Any], i: int) -> Any:
    """`case_id` of the record; its position in the list when it has none (ZsRE files often lack one)."""
    return record.get("case_id", i)


def _info(record: Mapping[str, Any], kind: str, zsre_target: str) -> dict[str, Any]:
    return cf.prompts_of(record) if kind == "counterfact" else zs.prompts_of(record, target=zsre_target)


def _locality_probes(record: Mapping[str, Any], kind: str) -> list[Probe]:
    """EasyEdit's locality probes: CounterFact neighbourhood prompts with target_true; ZsRE `loc` with `loc_ans`."""
    if kind == "counterfact":
        info = cf.prompts_of(record)
        return [Probe(p, info["target_true"]) for p in info["neighborhood"]]
    loc, ans = record.get("loc"), (record.get("loc_ans") or "").strip()
    return [Probe(loc, ans)] if loc and ans else []


def compute_baseline(
    model: torch.nn.Module,
    tok: Any,
    records: Iterable[Mapping[str, Any]],
    *,
    kind: str = "counterfact",
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """The unedited model's argmax tokens for EasyEdit's locality probes, to pass to `evaluate(baseline=...)`.

    Returns a JSON-serialisable dict: {"format", "version", "kind", "locality": [{"case_id", "prompt", "target",
    "target_ids", "argmax"}, ...]}; entries are looked up by (prompt, target), so a baseline computed on the full
    record set serves any subset.
    """
    records = _check(records, kind)
    probes: dict[Probe, Any] = {}
    for i, r in enumerate(records):
        for p in _locality_probes(r, kind):
            probes.setdefault(p, _case_id(r, i))
    scores = score_pairs(model, tok, list(probes), batch_size=batch_size, progress=progress, desc="baseline")
    return {
        "format": BASELINE_FORMAT,
        "version": 1,
        "kind": kind,
        "locality": [
            {"case_id": cid, "prompt": p.prompt, "target": p.target,
             "target_ids": list(scores[p].target_ids), "argmax": list(scores[p].argmax)}
            for p, cid in probes.items()
        ],
    }


def _baseline_lookup(baseline: Mapping[str, Any], kind: str) -> dict[Probe, dict[str, Any]]:
    if baseline.get("format") != BASELINE_FORMAT:
        raise ValueError("baseline is not a compute_baseline() result")
    if baseline.get("kind") != kind:
        raise ValueError(f"baseline was computed for kind={baseline.get('kind')!r}, evaluating kind={kind!r}")
    return {Probe(e["prompt"], e["target"]): e for e in baseline["locality"]}


def evaluate(
    model: torch.nn.Module,
    tok: Any,
    records: Iterable[Mapping[str, Any]],
    *,
    kind: str = "counterfact",
    baseline: Mapping[str, Any] | None = None,
    families: Sequence[str] = FAMILIES,
    batch_size: int = 64,
    max_new_tokens: int = 100,
    answer_max_new_tokens: int = 20,
    generation_kinds: Sequence[str] = ("rewrite", "paraphrase", "neighborhood", "loc"),
    fluency: bool = False,
    fluency_include_prompt: bool = True,
    sample: bool = False,
    top_k: int | None = None,
    seed: int | None = 0,
    tfidf_vectorizer: Any = None,
    zsre_target: str = "answers",
    extra_columns: Mapping[str, Any] | None = None,
    shared_prefix: bool | None = None,
    edited: Iterable[Any] | None = None,
    on_contamination: str = "raise",
    progress: bool = True,
) -> pd.DataFrame:
    """Evaluate `model` on `records`; a tidy DataFrame, one row per (case_id, family, prompt_kind, metric).

    Columns: case_id, family, prompt_kind, metric, value (per-record mean over its prompts), n_prompts (how many
    prompts that mean is over), then one column per `extra_columns` item (same value on every row, e.g.
    {"timing": "after_batch", "method": "alphaedit"}).

    * `baseline`: :func:`compute_baseline` of the unedited model (needed for EasyEdit locality; without it the
      locality rows are left out with a warning).
    * `fluency=True` (CounterFact, official family): generate `max_new_tokens` tokens after each generation prompt
      (greedy, or top-k sampling with `sample=True, top_k=..., seed=...`; the official code samples with top_k=5
      and stops at 100 tokens *including* the prompt) and add fluency and, for records with `reference_text`,
      consistency. Fluency texts include the prompt, as the official code (`fluency_include_prompt`).
      The TF-IDF vectorizer is fitted on the evaluated records' reference texts unless `tfidf_vectorizer` is given.
    * generation family: greedy, `answer_max_new_tokens` new tokens per prompt of `generation_kinds`, decoded
      from the same prompt pass as the teacher-forced scores when `shared_prefix` (default: when the model takes
      a key/value cache); `shared_prefix=False` scores one sequence per pair and generates separately (same
      numbers, slower: kept for models without a cache and for benchmarks).
    * `edited`: the records (or requests, or subjects) that the evaluated run edited; every neighbourhood prompt
      (ZsRE: `loc`) is checked against their subjects before anything runs (see the module docstring). With
      `on_contamination="raise"` (default) a contaminated prompt raises a `ValueError` naming the record, prompt
      and subject; with "report" it is scored, a warning gives the share, and ``df.attrs["contamination"]`` holds
      {"share", "n_prompts", "n_contaminated", "n_records", "n_records_contaminated", "by_record"} (attrs do not
      survive `pd.concat`: use :func:`alphaedit_core.data.contaminated_share` for a table). `edited=None`: no check.
    """
    records = _check(records, kind)
    if on_contamination not in ON_CONTAMINATION:
        raise ValueError(f"on_contamination must be one of {ON_CONTAMINATION}, not {on_contamination!r}")
    report = None
    if edited is not None:
        report = check_contamination(records, edited, kind=kind, on_contamination=on_contamination)
    families = tuple(families)
    bad = set(families) - set(FAMILIES)
    if bad or not families:
        raise ValueError(f"families must be a non-empty subset of {FAMILIES}, got {families}")
    extra = dict(extra_columns or {})
    clash = set(extra) & set(COLUMNS)
    if clash:
        raise ValueError(f"extra_columns may not overwrite {sorted(clash)}")

    infos = [(_case_id(r, i), r, _info(r, kind, zsre_target)) for i, r in enumerate(records)]

    # 1. every teacher-forced pair any family needs, deduplicated, scored in one pass
    pairs: dict[Probe, None] = {}

    def want(*ps: Probe) -> None:
        for p in ps:
            pairs[p] = None

    lookup = None
    if "easyedit" in families:
        if baseline is None:
            warnings.warn("evaluate: no baseline given, EasyEdit locality is left out", stacklevel=2)
        else:
            lookup = _baseline_lookup(baseline, kind)
    for cid, r, info in infos:
        new = info["target_new"]
        if "official" in families:
            if kind == "counterfact":
                true = info["target_true"]
                for p in info["rewrite"] + info["paraphrase"] + info["neighborhood"]:
                    want(Probe(p, new), Probe(p, true))
            else:
                want(*(Probe(p, new) for p in info["rewrite"] + info["paraphrase"]))
                if info["loc"] and info["loc_ans"]:
                    want(Probe(zs.loc_prompt(info["loc"]), info["loc_ans"]))
        if "easyedit" in families:
            want(Probe(info["rewrite"][0], new))
            if info["paraphrase"]:
                want(Probe(info["paraphrase"][0], new))
            if lookup is not None:
                want(*_locality_probes(r, kind))
            for group in ee.portability_probes(r).values():
                want(*group)
    gen_probes: list[tuple[Any, str, Probe]] = []
    if "generation" in families:
        kinds = set(generation_kinds)
        for cid, r, info in infos:
            new = info["target_new"]
            if "rewrite" in kinds:
                gen_probes += [(cid, "rewrite", Probe(p, new)) for p in info["rewrite"]]
            if "paraphrase" in kinds:
                gen_probes += [(cid, "paraphrase", Probe(p, new)) for p in info["paraphrase"]]
            if kind == "counterfact" and "neighborhood" in kinds:
                gen_probes += [(cid, "neighborhood", Probe(p, info["target_true"])) for p in info["neighborhood"]]
            elif kind == "zsre" and "loc" in kinds and info["loc"] and info["loc_ans"]:
                gen_probes.append((cid, "loc", Probe(zs.loc_prompt(info["loc"]), info["loc_ans"])))
    gen_prompts = list(dict.fromkeys(p.prompt for _, _, p in gen_probes))
    if shared_prefix is None:
        shared_prefix = can_share_prefix(model)
    if shared_prefix:  # one prompt pass serves the scoring and the first generated token
        scores, decoded = score_and_decode(model, tok, list(pairs), gen_prompts, max_new_tokens=answer_max_new_tokens,
                                           batch_size=batch_size, progress=progress, desc="scoring + answers")
        answers = {p: to_generation(tok, p, *decoded[p]).continuation for p in gen_prompts}
    else:
        scores = score_pairs(model, tok, list(pairs), batch_size=batch_size, shared_prefix=False, progress=progress,
                             desc="scoring")
        answers = {g.prompt: g.continuation for g in generate(
            model, tok, gen_prompts, max_new_tokens=answer_max_new_tokens, batch_size=batch_size, progress=progress,
            desc="answers")}

    rows: list[dict[str, Any]] = []

    def add(cid: Any, family: str, prompt_kind: str, metric: str, value: float, n: int) -> None:
        rows.append({"case_id": cid, "family": family, "prompt_kind": prompt_kind, "metric": metric,
                     "value": float(value), "n_prompts": int(n)})

    # 2. teacher-forced families
    missing = []
    for cid, r, info in infos:
        new = info["target_new"]
        if "official" in families:
            if kind == "counterfact":
                true = info["target_true"]
                pp = {k: [(scores[Probe(p, new)], scores[Probe(p, true)]) for p in info[k]]
                      for k in ("rewrite", "paraphrase", "neighborhood")}
                for k, metric, fn in (("rewrite", "efficacy", cf.efficacy),
                                      ("paraphrase", "generalization", cf.generalization),
                                      ("neighborhood", "specificity", cf.specificity)):
                    if pp[k]:
                        add(cid, "official", k, metric, fn(pp[k]), len(pp[k]))
                        toward = "true" if k == "neighborhood" else "new"
                        add(cid, "official", k, "magnitude", cf.magnitude(pp[k], toward=toward), len(pp[k]))
                        right = [t if k == "neighborhood" else n for n, t in pp[k]]
                        add(cid, "official", k, "strict_acc", cf.strict_accuracy(right), len(right))
            else:
                groups = [("rewrite", "efficacy", [scores[Probe(p, new)] for p in info["rewrite"]]),
                          ("paraphrase", "generalization", [scores[Probe(p, new)] for p in info["paraphrase"]])]
                if info["loc"] and info["loc_ans"]:
                    groups.append(("loc", "specificity", [scores[Probe(zs.loc_prompt(info["loc"]), info["loc_ans"])]]))
                for k, metric, ss in groups:
                    if ss:
                        add(cid, "official", k, metric, zs.token_accuracy(ss), len(ss))
                        add(cid, "official", k, "strict_acc", zs.strict_accuracy(ss), len(ss))
        if "easyedit" in families:
            add(cid, "easyedit", "rewrite", "rewrite_acc", ee.rewrite_acc(scores[Probe(info["rewrite"][0], new)]), 1)
            if info["paraphrase"]:
                add(cid, "easyedit", "paraphrase", "rephrase_acc",
                    ee.rephrase_acc(scores[Probe(info["paraphrase"][0], new)]), 1)
            if lookup is not None:
                probes = _locality_probes(r, kind)
                if probes:
                    pre, post = [], []
                    for p in probes:
                        e = lookup.get(p)
                        if e is None:
                            missing.append(cid)
                            break
                        s = scores[p]
                        if list(e["target_ids"]) != list(s.target_ids):
                            raise ValueError(f"baseline tokenization of {p.target!r} differs: another tokenizer?")
                        pre.append(e["argmax"])
                        post.append(s.argmax)
                    else:
                        add(cid, "easyedit", "neighborhood" if kind == "counterfact" else "loc", "locality",
                            ee.locality(pre, post), len(probes))
            for name, group in ee.portability_probes(r).items():
                add(cid, "easyedit", f"portability/{name}" if name else "portability", "portability",
                    ee.portability([scores[p] for p in group]), len(group))
    if missing:
        raise ValueError(f"baseline has no locality entry for case_id(s) {sorted(set(map(str, missing)))[:10]} "
                         "(computed on other records?)")

    # 3. generation-based answers (generated above, with the scoring pass)
    acc: dict[tuple[Any, str], list[tuple[bool, bool]]] = {}
    for cid, k, p in gen_probes:
        c = answers[p.prompt]
        acc.setdefault((cid, k), []).append((exact_match(c, p.target), contains_answer(c, p.target)))
    for (cid, k), v in acc.items():
        add(cid, "generation", k, "exact_match", sum(a for a, _ in v) / len(v), len(v))
        add(cid, "generation", k, "contains", sum(b for _, b in v) / len(v), len(v))

    # 4. fluency and consistency (official CounterFact)
    if fluency and "official" in families and kind == "counterfact":
        gp = [(cid, r, info["generation"]) for cid, r, info in infos if info["generation"]]
        if gp:
            prompts = list(dict.fromkeys(p for _, _, ps in gp for p in ps))
            outs = generate(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            do_sample=sample, top_k=top_k, seed=seed, progress=progress, desc="fluency")
            text = {g.prompt: (g.text if fluency_include_prompt else g.continuation) for g in outs}
            vec = tfidf_vectorizer
            if vec is None and any(reference_text_of(r) for _, r, _ in gp):
                vec = fit_tfidf([r for _, r, _ in gp])
            for cid, r, ps in gp:
                texts = [text[p] for p in ps]
                add(cid, "official", "generation", "fluency", fluency_of(texts), len(texts))
                ref = reference_text_of(r)
                if ref is not None and vec is not None:
                    add(cid, "official", "generation", "consistency", consistency(texts, ref, vec), len(texts))

    df = pd.DataFrame(rows, columns=COLUMNS)
    for k, v in extra.items():
        df[k] = v
    if report is not None:
        df.attrs["contamination"] = report
    return df
