"""The decision rules behind the C7, C11 and P1–P3 verdicts of the edit_count notebook."""
import pytest

from alphaedit_core.verdicts import edit_count_claims


def stream(alpha: list[float], memit: list[float], edits=(100, 500, 1000, 1500, 2000)) -> dict:
    return {"alphaedit": dict(zip(edits, alpha)), "memit": dict(zip(edits, memit))}


def verdicts(eff: dict, n_planned: int = 2000, **kw) -> tuple[str, str]:
    claims = edit_count_claims(eff, eff, n_planned=n_planned, **kw)
    return claims["C7"]["verdict"], claims["C11"]["verdict"]


def test_drop_and_collapse_reproduce_c7_but_c11_only_partly():
    """A stable first milestone that the long run leaves behind: the check passed, the forecast failed."""
    eff = stream([1.0, 0.97, 0.85, 0.8, 0.75], [0.9, 0.8, 0.6, 0.4, 0.3])
    assert verdicts(eff) == ("reproduced", "partly reproduced")
    evidence = edit_count_claims(eff, eff, n_planned=2000)["C11"]["evidence"]
    assert "passed sanity check" in evidence and "does not forecast" in evidence


def test_no_drop_is_not_reproduced():
    eff = stream([1.0, 0.99, 0.98, 0.97, 0.96], [0.95, 0.95, 0.94, 0.93, 0.92])
    assert verdicts(eff) == ("not reproduced", "reproduced")  # the 100-edit run forecasts the long one


def test_drop_without_collapse_is_partly_reproduced():
    eff = stream([1.0, 0.95, 0.85, 0.8, 0.8], [0.9, 0.9, 0.88, 0.85, 0.85])
    assert verdicts(eff)[0] == "partly reproduced"


def test_unstable_start_never_reproduces_c7():
    eff = stream([0.6, 0.5, 0.3, 0.2, 0.1], [0.6, 0.5, 0.3, 0.2, 0.1])
    assert verdicts(eff) == ("not reproduced", "partly reproduced")


def test_a_drop_before_1000_edits_is_not_a_drop_beyond_1000():
    eff = stream([1.0, 0.5, 0.95, 0.95, 0.95], [1.0, 0.5, 0.95, 0.95, 0.95])
    assert verdicts(eff)[0] == "not reproduced"


def test_stream_in_progress_or_too_short_is_not_testable():
    eff = stream([1.0, 0.9, 0.4], [1.0, 0.9, 0.4], edits=(100, 500, 1000))
    claims = edit_count_claims(eff, eff, n_planned=2000, checkpointed={"alphaedit": 1300, "memit": 1200})
    assert {c["verdict"] for c in claims.values()} == {"not testable here"}
    assert "alphaedit 1300, memit 1200" in claims["C7"]["evidence"]
    short = stream([1.0, 0.2], [1.0, 0.2], edits=(2, 4))
    assert verdicts(short, n_planned=4) == ("not testable here", "not testable here")


def test_unedited_rows_are_ignored_and_nothing_evaluated_is_an_error():
    eff = stream([1.0, 0.97, 0.85, 0.8, 0.75], [0.9, 0.8, 0.6, 0.4, 0.3])
    with_zero = {m: {0: 0.1, **e} for m, e in eff.items()}
    assert edit_count_claims(with_zero, with_zero, 2000) == edit_count_claims(eff, eff, 2000)
    with pytest.raises(ValueError, match="no milestone"):
        edit_count_claims({"alphaedit": {0: 0.1}}, {}, 2000)


def test_a_collapse_of_rewrite_acc_counts_when_efficacy_only_drops():
    eff = stream([1.0, 0.97, 0.95, 0.90, 0.85], [0.9, 0.85, 0.78, 0.6, 0.55])
    acc = stream([0.95, 0.88, 0.7, 0.47, 0.4], [0.78, 0.6, 0.34, 0.15, 0.1])
    claims = edit_count_claims(eff, acc, n_planned=2000)
    assert claims["C7"]["verdict"] == "reproduced"
    assert "collapse" in claims["C7"]["evidence"] and "memit rewrite_acc" in claims["C7"]["evidence"]
    assert "memit efficacy" not in claims["C7"]["evidence"].split("collapse")[1]
    assert edit_count_claims(eff, eff, n_planned=2000)["C7"]["verdict"] == "partly reproduced"


def test_stability_needs_every_family():
    eff = stream([1.0, 0.97, 0.85, 0.8, 0.75], [0.9, 0.8, 0.6, 0.4, 0.3])
    acc = stream([0.7, 0.6, 0.5, 0.3, 0.2], [0.6, 0.5, 0.3, 0.2, 0.1])
    assert edit_count_claims(eff, acc, n_planned=2000)["C7"]["verdict"] == "not reproduced"


def test_onsets_name_the_first_milestone_past_each_threshold():
    from alphaedit_core.verdicts import onsets
    assert onsets({0: 0.1, 100: 0.95, 500: 0.9, 1000: 0.8, 1500: 0.47, 2000: 0.3}) == dict(
        first=100, drop=1000, collapse=1500, last=2000)
    assert onsets({100: 1.0, 200: 0.95}) == dict(first=100, drop=None, collapse=None, last=200)
    with pytest.raises(ValueError):
        onsets({0: 0.5})


def test_a_run_without_the_reference_method_gives_no_verdict():
    eff = {"memit": {100: 0.9, 1000: 0.6, 2000: 0.3}}
    claims = edit_count_claims(eff, eff, n_planned=2000)
    assert {c["verdict"] for c in claims.values()} == {"not testable here"}
    assert "no alphaedit stream" in claims["C7"]["evidence"]


# ------------------------------------------------------------------------------------------------ P1–P3
from alphaedit_core.verdicts import direction, p1_preservation, p2_capability, p3_representations  # noqa: E402


def row(diff, lo, hi, a=0.5, b=0.5):
    return dict(diff=diff, ci_low=lo, ci_high=hi, mean_a=a, mean_b=b)


UP, FLAT, DOWN = row(0.2, 0.1, 0.3), row(0.0, -0.05, 0.05), row(-0.2, -0.3, -0.1)


def test_direction_reads_the_whole_interval():
    assert direction(UP) == "better" and direction(DOWN) == "worse" and direction(FLAT) == "no difference"
    assert direction(DOWN, higher_is_better=False) == "better"
    assert direction(row(0.1, 0.0, 0.2)) == "no difference"  # touching 0 is not a difference


def test_p1_needs_edits_specificity_and_fluency():
    good = dict(efficacy=UP, generalization=UP, specificity=UP, fluency=FLAT)
    assert p1_preservation(good, 2000)["verdict"] == "reproduced"
    assert p1_preservation({**good, "fluency": DOWN}, 2000)["verdict"] == "partly reproduced"
    assert p1_preservation({**good, "specificity": DOWN}, 2000)["verdict"] == "partly reproduced"
    assert p1_preservation({**good, "efficacy": FLAT, "specificity": DOWN}, 2000)["verdict"] == "not reproduced"
    assert p1_preservation(good, 1500)["verdict"] == "not testable here"
    assert "efficacy +20.0 points [+10.0, +30.0]" in p1_preservation(good, 2000)["evidence"]


def test_p2_near_the_unedited_model_and_better_than_memit():
    near, far = row(0.01, 0.0, 0.02), row(0.2, 0.15, 0.25)
    lower, same = row(-0.1, -0.15, -0.05), row(0.0, -0.01, 0.01)
    two = lambda r: {"fortunes": r, "wordnet": r}
    assert p2_capability(two(near), two(lower), 2000)["verdict"] == "reproduced"
    assert p2_capability(two(near), two(same), 2000)["verdict"] == "partly reproduced"
    assert p2_capability(two(far), two(lower), 2000)["verdict"] == "partly reproduced"
    assert p2_capability(two(far), two(same), 2000)["verdict"] == "not reproduced"
    mixed = {"fortunes": near, "wordnet": row(0.04, 0.03, 0.06)}  # upper bound past ln(1.05) = 0.0488
    assert p2_capability(mixed, two(same), 2000)["verdict"] == "not reproduced"
    assert "×1.010 of the unedited model's" in p2_capability(two(near), two(lower), 2000)["evidence"]
    with pytest.raises(ValueError, match="same text sources"):
        p2_capability({"fortunes": near}, two(lower), 2000)


def test_p3_closer_at_every_layer():
    closer, farther = row(-0.1, -0.2, -0.05, 0.1, 0.2), row(0.1, 0.05, 0.2, 0.3, 0.2)
    assert p3_representations({"layer 8": closer, "layer 29": closer}, 2000)["verdict"] == "reproduced"
    assert p3_representations({"layer 8": closer, "layer 29": farther}, 2000)["verdict"] == "partly reproduced"
    assert p3_representations({"layer 8": farther}, 2000)["verdict"] == "not reproduced"
    assert p3_representations({"layer 8": closer}, 100)["verdict"] == "not testable here"


# ---------------------------------------------------------------- the calibrated projector's question (issue 12)

def _row(lo: float, hi: float) -> dict:
    return dict(diff=(lo + hi) / 2, ci_low=lo, ci_high=hi)


C_UP, C_DOWN, C_FLAT = _row(0.02, 0.06), _row(-0.06, -0.02), _row(-0.02, 0.02)


@pytest.mark.parametrize("eff, spec, loc, answer", [
    (C_FLAT, C_UP, C_FLAT, "yes"),                          # better specificity, locality not worse, efficacy kept
    (C_UP, C_UP, C_UP, "yes"),
    (C_DOWN, C_UP, C_FLAT, "yes, at a cost in efficacy"),   # the advantage bought with efficacy
    (C_FLAT, C_UP, C_DOWN, "partly"),                       # specificity better, locality worse: half an advantage
    (C_FLAT, C_FLAT, C_UP, "partly"),                       # locality better alone
    (C_FLAT, C_FLAT, C_FLAT, "no"),
    (C_UP, C_DOWN, C_DOWN, "no"),                           # edits better, preservation worse: not the paper's advantage
])
def test_calibrated_preservation_answers(eff, spec, loc, answer):
    from alphaedit_core.verdicts import calibrated_preservation
    out = calibrated_preservation(dict(efficacy=eff, specificity=spec, locality=loc), dict(efficacy=C_DOWN), 2000, 2000)
    assert out["answer"] == answer
    assert "Calibrated − plain AlphaEdit: efficacy -4.0 points [-6.0, -2.0] (worse)" in out["evidence"]


def test_calibrated_preservation_waits_for_the_planned_stream_and_needs_its_rows():
    from alphaedit_core.verdicts import calibrated_preservation
    rows = dict(efficacy=C_UP, specificity=C_UP, locality=C_UP)
    early = calibrated_preservation(rows, dict(efficacy=C_FLAT), 1000, 2000)
    assert early["answer"] == "not testable here" and "1000 of 2000" in early["evidence"]
    with pytest.raises(ValueError, match="locality"):
        calibrated_preservation(dict(efficacy=C_UP, specificity=C_UP), dict(efficacy=C_FLAT), 2000, 2000)
    with pytest.raises(ValueError, match="efficacy"):
        calibrated_preservation(rows, {}, 2000, 2000)


@pytest.mark.parametrize("no_cache, p_identity, answer", [
    (C_DOWN, C_DOWN, "cache_c and P"),
    (C_DOWN, C_FLAT, "cache_c, not P"),
    (C_FLAT, C_DOWN, "P, not cache_c"),
    (C_FLAT, C_UP, "neither alone"),  # an ablation that edits better does not make its part needed
])
def test_stability_source_names_the_parts_whose_removal_hurts_the_edits(no_cache, p_identity, answer):
    from alphaedit_core.verdicts import stability_source
    rows = {"no-cache": dict(efficacy=C_FLAT, rewrite_acc=no_cache, locality=C_UP),
            "p-identity": dict(efficacy=p_identity, rewrite_acc=C_FLAT)}
    out = stability_source(rows, {"no-cache": 1000, "p-identity": 1000}, {"no-cache": 1000, "p-identity": 1000})
    assert out["answer"] == answer and answer in out["answers"]
    assert "locality +4.0 points [+2.0, +6.0] (better)" in out["evidence"]  # shown, not judged


def test_stability_source_counts_an_ablation_only_at_its_planned_edits():
    from alphaedit_core.verdicts import stability_source
    rows = {"no-cache": dict(efficacy=C_DOWN, rewrite_acc=C_DOWN), "p-identity": dict(efficacy=C_FLAT,
                                                                                      rewrite_acc=C_FLAT)}
    planned = {"no-cache": 1000, "p-identity": 1000}
    one = stability_source(rows, {"no-cache": 1000, "p-identity": 500}, planned)
    assert one["answer"] == "cache_c is needed; P not tested yet"
    assert "evaluated to 500 of its 1000 edits" in one["evidence"]
    other = stability_source({"p-identity": rows["p-identity"]}, {"p-identity": 1000}, planned)
    assert other["answer"] == "P is not needed; cache_c not tested yet" and "no-cache" in other["evidence"]
    assert stability_source(rows, {"no-cache": 900, "p-identity": 0}, planned)["answer"] == "not testable here"
    assert stability_source({}, {}, {})["answer"] == "not testable here"
    with pytest.raises(ValueError, match="rewrite_acc"):
        stability_source({"no-cache": dict(efficacy=C_DOWN)}, {"no-cache": 1000}, planned)
