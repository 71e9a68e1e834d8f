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


PAIR = """# %% [markdown]
# # Title

# %%
x = 1

# %% [markdown]
# Some text.

# %%
print(x)
"""


def _ids(path):
    import json

    return [(c["cell_type"], c["id"]) for c in json.loads(path.read_text())["cells"]]


def test_sync_pair_keeps_the_ids_of_cells_an_edit_leaves_or_only_edits(tmp_path):
    (tmp_path / "nb.py").write_text(PAIR)
    before = _ids(study.sync_pair("nb", tmp_path))
    assert len({i for _, i in before}) == 4

    # an edited markdown cell keeps its id, and so does every other cell
    (tmp_path / "nb.py").write_text(PAIR.replace("Some text.", "Other text."))
    assert _ids(study.sync_pair("nb", tmp_path)) == before

    # a cell inserted before the last, and the markdown cell edited back: the four old cells keep their ids, the
    # new one gets a fresh one
    (tmp_path / "nb.py").write_text(PAIR.replace("# %%\nprint(x)", "# %%\ny = 2\n\n# %%\nprint(x)"))
    after = _ids(study.sync_pair("nb", tmp_path))
    assert len(after) == 5 and after[:3] == before[:3] and after[4] == before[3]
    assert after[3][1] not in {i for _, i in before}

    # a removed cell (from the original pair): the rest keep theirs
    (tmp_path / "nb.py").write_text(PAIR)
    study.sync_pair("nb", tmp_path)
    (tmp_path / "nb.py").write_text(PAIR.replace("# %% [markdown]\n# Some text.\n\n", ""))
    removed = _ids(study.sync_pair("nb", tmp_path))
    assert removed == [before[0], before[1], before[3]]


def test_sync_pair_leaves_an_unchanged_pair_alone(tmp_path):
    """Not rewritten at all (the ids alone would not tell: they are carried over either way): its mtime stays."""
    import os

    (tmp_path / "nb.py").write_text(PAIR)
    path = study.sync_pair("nb", tmp_path)
    text = path.read_text()
    os.utime(path, ns=(10**18, 10**18))
    assert study.sync_pair("nb", tmp_path).read_text() == text
    assert path.stat().st_mtime_ns == 10**18
