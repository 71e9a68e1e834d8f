"""The study runner's command line: notebook parameters set with --param are checked before anything runs."""
import pytest

from alphaedit_core import study


@pytest.mark.parametrize("arg, message", [
    ("thresholds", "expected NAME=JSON"),
    ("thresholds=[0.1", "the value is not JSON"),
    ("thresholdz=[]", "['thresholdz']: not parameters of operating_points"),
])
def test_bad_params_are_refused_before_any_run(arg, message, capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(study, "run_notebook", lambda *a, **k: ran.append(a))
    with pytest.raises(SystemExit):
        study.main(["--only", "operating_points", "--param", arg, "--no-book"])
    assert message in capsys.readouterr().err and not ran


def test_params_reach_every_notebook_run(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(study, "run_notebook", lambda name, params, *a, **k: ran.append((name, params)))
    study.main(["--only", "operating_points", "--param", "thresholds=[]", "--param", 'corpora=["wordnet"]',
                "--results", str(tmp_path), "--no-book"])
    (name, params), (ledger, _) = ran
    assert name == "operating_points" and ledger == study.LEDGER
    assert params["thresholds"] == [] and params["corpora"] == ["wordnet"] and params["model"] == "smollm2-135m-instruct"


def test_a_labelled_run_writes_its_executed_notebook_beside_its_tables_and_leaves_the_ledger(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(study, "run_notebook", lambda name, params, out, *a, **k: ran.append((name, params, out)))
    study.main(["--model", "qwen2.5-coder-0.5b-instruct", "--only", "operating_points", "--param",
                'label="qwen2.5-coder-0.5b-instruct-c3"', "--results", str(tmp_path), "--no-book"])
    (name, params, out), = ran  # no ledger run under the side model's folder
    assert name == "operating_points" and params["label"] == "qwen2.5-coder-0.5b-instruct-c3"
    assert out == tmp_path / "qwen2.5-coder-0.5b-instruct-c3" / "operating_points"
