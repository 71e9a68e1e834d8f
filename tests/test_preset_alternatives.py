"""Presets document alternatives beside their official values (the calibrated projector rule of the operating-points
chapter): applied only when named, checked when read, and never part of a run's identity."""
import json
from pathlib import Path

import pandas as pd
import pytest

from alphaedit_core.hparams import EditHParams, list_presets, preset_alternatives
from alphaedit_core.sweeps import hparams_digest

REPO = Path(__file__).resolve().parents[1]
OPERATING = REPO / "results" / "smollm2-135m-instruct" / "operating_points"


def test_documented_alternatives_change_no_run_identity():
    """The default points of the committed sweep were recorded with the presets as they were before alternatives
    existed: loading the preset still gives the very digests of settings.csv (a loader that let `alternatives` into
    the fields, or applied one by default, would change them and orphan every checkpoint)."""
    settings = OPERATING / "settings.csv"
    if not settings.is_file():
        pytest.skip("no committed operating_points/settings.csv")
    recorded = pd.read_csv(settings).set_index("setting")["hparams_digest"]
    hp = EditHParams.load("smollm2-135m-instruct")
    assert "alternatives" not in hp.to_dict()
    for method in ("alphaedit", "memit"):
        assert hparams_digest(method, hp.to_dict()) == recorded[f"{method}-default"]


def test_every_preset_documents_the_calibrated_rule_and_applies_it_only_when_named():
    for name in list_presets():
        alt = preset_alternatives(name)
        assert set(alt["calibrated"]) == {"nullspace_mode", "nullspace_energy", "note"}, name
        official = EditHParams.load(name)
        assert official.nullspace_mode == "threshold", name  # the official rule stays the default
        cal = EditHParams.load(name, alternative="calibrated")
        assert cal.nullspace_mode == "energy" and cal.nullspace_energy == alt["calibrated"]["nullspace_energy"]
        # every other field is the preset's; explicit overrides still win over the alternative
        assert {k: v for k, v in cal.to_dict().items() if k not in ("nullspace_mode", "nullspace_energy")} == \
            {k: v for k, v in official.to_dict().items() if k not in ("nullspace_mode", "nullspace_energy")}
        assert EditHParams.load(name, alternative="calibrated", nullspace_energy=0.2).nullspace_energy == 0.2


def test_the_presets_carry_the_rule_the_operating_points_chapter_chose():
    path = OPERATING / "calibrated.json"
    if not path.is_file():
        pytest.skip("no operating_points/calibrated.json")
    rule = json.loads(path.read_text())["rule"]
    for name in list_presets():
        alt = {k: v for k, v in preset_alternatives(name)["calibrated"].items() if k != "note"}
        assert alt == rule, name


def test_bad_alternatives_are_refused_with_their_name(tmp_path):
    base = json.loads((REPO / "alphaedit_core" / "presets" / "smollm2-135m-instruct.json").read_text())
    with pytest.raises(ValueError, match=r"no alternative 'bogus'.*calibrated"):
        EditHParams.load("smollm2-135m-instruct", alternative="bogus")
    for alternatives, message in (({"x": {"nullspace_energie": 0.03}}, "unknown field 'nullspace_energie'"),
                                  ({"x": {"nullspace_energy": "3%"}}, r"nullspace_energy='3%' must be a number"),
                                  ({"x": {}}, "non-empty"), ([0.03], "must map names")):
        path = tmp_path / "preset.json"
        path.write_text(json.dumps({**base, "alternatives": alternatives}))
        with pytest.raises(ValueError, match=message):
            EditHParams.load(path)
