"""The NAS premise check (alphaedit_core/value_norms.py): the value vectors of fixed probe requests on a stream's
snapshots. Expectations from a second implementation: v0 read by a forward hook on the last edited layer's down
projection at the subject's last token, z − h0 from the per-request reference target optimisation."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from tiny import REQUESTS, tiny_model, tiny_tokenizer

from alphaedit_core.arch import ModelAdapter
from alphaedit_core.editor import Editor
from alphaedit_core.hparams import EditHParams
from alphaedit_core.projection import projector_from_cov
from alphaedit_core.targets import compute_targets_reference
from alphaedit_core.value_norms import probe_records, value_norm_summary, value_norms


def small_hp(**kw) -> EditHParams:
    base = dict(layers=[1, 2], v_lr=0.5, v_num_grad_steps=6, context_template_count=2, context_template_length=5,
                targets_chunk=4, L2=1.0, batch_size=3)
    return EditHParams(**{**base, **kw})


def identity_projectors(d_ff: int, layers):
    return {l: projector_from_cov(torch.zeros(d_ff, d_ff), threshold=1.0, allow_degenerate=True) for l in layers}


def hooked_v0(model, tok, requests, layer: int) -> torch.Tensor:
    """[n, d]: the down projection's output at the subject's last token of the bare prompt, one request at a time."""
    rows = []
    for r in requests:
        prefix = r.prompt[: r.prompt.index("{}")] + r.subject
        last = len(tok(prefix).input_ids) - 1
        got = {}
        handle = model.model.layers[layer].mlp.down_proj.register_forward_hook(
            lambda _m, _i, o: got.setdefault("out", o.detach()))
        with torch.no_grad():
            model(**tok(r.prompt.format(r.subject), return_tensors="pt"))
        handle.remove()
        rows.append(got["out"][0, last])
    return torch.stack(rows)


def record(case_id, subjects):
    rewrites = [{"subject": s, "prompt": "{} is", "target_new": {"str": "x"}, "target_true": {"str": "y"}}
                for s in subjects]
    return {"case_id": case_id, "requested_rewrite": rewrites[0] if len(rewrites) == 1 else rewrites}


def test_probe_records_are_neither_edited_nor_about_an_edited_subject():
    """Hand-made records: a probe is dropped for its case id, for its subject in any case, and for any rewrite of a
    multi-rewrite record; too few left is an error."""
    edited = [record(1, ["Paris"]), record(2, ["Rome", "Oslo"])]
    candidates = [record(1, ["Lima"]), record(3, ["paris"]), record(4, ["Quito"]), record(5, ["Bern", "OSLO"]),
                  record(6, ["Kyiv"]), record(7, ["Riga"])]
    assert [r["case_id"] for r in probe_records(candidates, edited, 2)] == [4, 6]
    assert [r["case_id"] for r in probe_records(candidates, edited, 3)] == [4, 6, 7]
    with pytest.raises(ValueError, match="only 3 candidate"):
        probe_records(candidates, edited, 4)


def test_value_norms_are_the_value_vectors_of_the_probes_on_each_snapshot(tmp_path):
    """Bugs pinned: v0 read at another layer or token, the shift taken before the target optimisation, the
    snapshot not applied (or applied to the unedited milestone), the model left edited afterwards."""
    model, tok = tiny_model("llama"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    h = small_hp()
    ed = Editor(model, tok, h, projectors=identity_projectors(a.d_ff, h.layers), progress=False)
    assert ed.templates[0] == "{}"
    original = {l: a.weight_view(l).detach().clone() for l in h.layers}
    ed.run(REQUESTS[:3], batch_size=3)
    snapshot = ed.save_snapshot(tmp_path / "snap")
    edited = {l: a.weight_view(l).detach().clone() for l in h.layers}
    assert any(not torch.equal(edited[l], original[l]) for l in h.layers)
    probes = REQUESTS[3:]
    rows = value_norms(ed, probes, {3: snapshot, 0: None}, progress=False)
    assert list(rows.edits) == [0, 0, 0, 3, 3, 3] and list(rows.case_id) == [3, 4, 5, 3, 4, 5]
    assert all(torch.equal(a.weight_view(l), original[l]) for l in h.layers)  # left unedited
    for edits, weights in ((0, original), (3, edited)):
        with torch.no_grad():
            for l, w in weights.items():
                a.weight_view(l).copy_(w)
        ref = compute_targets_reference(model, tok, a, probes, ed.templates, h)
        v0 = hooked_v0(model, tok, probes, h.layers[-1])
        got = rows[rows.edits == edits]
        torch.testing.assert_close(torch.tensor(got.v0_norm.values), v0.norm(dim=-1).double(), rtol=1e-5, atol=0)
        shift = ref.z - ref.h0
        torch.testing.assert_close(torch.tensor(got.shift_norm.values), shift.norm(dim=-1).double(), rtol=1e-3,
                                   atol=1e-5)
        torch.testing.assert_close(torch.tensor(got.value_norm.values), (v0 + shift).norm(dim=-1).double(),
                                   rtol=1e-3, atol=1e-5)
    assert (rows[rows.edits == 3].v0_norm.values != rows[rows.edits == 0].v0_norm.values).all()
    with pytest.raises(ValueError, match="milestone 5"):
        value_norms(ed, probes, {5: None}, progress=False)


def test_value_norms_refuse_a_model_that_normalises_the_mlp_output():
    model, tok = tiny_model("gemma3"), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    h = small_hp()
    ed = Editor(model, tok, h, projectors=identity_projectors(a.d_ff, h.layers), progress=False)
    with pytest.raises(ValueError, match="normalise the MLP output"):
        value_norms(ed, REQUESTS[:2], {0: None}, progress=False)


def test_value_norm_summary_by_hand():
    """Two probes: ‖v*‖ 2 and 4 unedited, 3 and 2 after 10 edits: means 3 and 2.5, ratios 1.5 and 0.5 (mean 1)."""
    rows = pd.DataFrame(dict(edits=[0, 0, 10, 10], case_id=[1, 2, 1, 2], v0_norm=[1.0, 1.0, 2.0, 4.0],
                             shift_norm=[1.0, 3.0, 1.0, 1.0], value_norm=[2.0, 4.0, 3.0, 2.0],
                             target_steps=[5, 7, 6, 6], target_loss=[0.1] * 4))
    s = value_norm_summary(rows).set_index("edits")
    assert s.loc[0, "value_norm"] == 3.0 and s.loc[10, "value_norm"] == 2.5
    assert s.loc[0, "value_ratio"] == 1.0 and s.loc[10, "value_ratio"] == pytest.approx(1.0)
    assert s.loc[10, "v0_norm"] == 3.0 and s.loc[0, "shift_norm"] == 2.0 and s.loc[0, "probes"] == 2
