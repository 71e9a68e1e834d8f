"""The helpers the one-batch benchmarks share (benchmarks/one_batch.py), on a tiny random model: targets kept from
one batch and reused by another editor give that editor the same z (no new optimisation), and the report lands
where asked."""
import sys
from pathlib import Path

import torch

from tiny import REQUESTS, tiny_model, tiny_tokenizer

from alphaedit_core import editor as editor_module
from alphaedit_core.arch import ModelAdapter
from alphaedit_core.editor import Editor
from alphaedit_core.hparams import EditHParams

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from one_batch import keeping_targets, machine_line, reusing_targets, write_report  # noqa: E402


def hp(**kw) -> EditHParams:
    base = dict(layers=[1, 2], v_lr=0.5, v_num_grad_steps=6, context_template_count=2, context_template_length=5,
                targets_chunk=4, L2=1.0, batch_size=3, mom2_update_weight=1.0)
    return EditHParams(**{**base, **kw})


def memit_editor(model, tok, h):
    a = ModelAdapter.from_model(model)
    return Editor(model, tok, h, method="memit", covs={l: torch.eye(a.d_ff) for l in h.layers}, progress=False)


def test_reused_targets_replace_the_optimisation_and_give_the_same_edit():
    tok, h = tiny_tokenizer(), hp()
    model = tiny_model("llama")
    ed = memit_editor(model, tok, h)
    with keeping_targets() as kept:
        ed.edit_batch(REQUESTS[:3])
    first = ed.weight_deltas()
    ed.restore()
    assert len(kept) == 1 and editor_module.compute_targets is not None

    original = editor_module.compute_targets
    with reusing_targets(kept[0]):
        assert editor_module.compute_targets("any", "arguments") is kept[0]  # no optimisation inside the block
        ed2 = memit_editor(model, tok, h)
        ed2.edit_batch(REQUESTS[:3])
    assert editor_module.compute_targets is original  # put back after the block
    for l in h.layers:
        torch.testing.assert_close(ed2.weight_deltas()[l], first[l], rtol=0, atol=1e-6)
    ed2.restore()

    # the reused targets are what the edit is made from: other targets give another edit
    shifted = type(kept[0])(**{**vars(kept[0]), "z": kept[0].z + 1.0})
    with reusing_targets(shifted):
        ed3 = memit_editor(model, tok, h)
        ed3.edit_batch(REQUESTS[:3])
    assert max(float((ed3.weight_deltas()[l] - first[l]).norm()) for l in h.layers) > 1e-3


def test_write_report_names_the_file_after_the_model(tmp_path, capsys):
    path = write_report(["# title", "", "| a |"], str(tmp_path / "sub" / "out-{model}.md"), "m1")
    assert path == tmp_path / "sub" / "out-m1.md" and path.read_text() == "# title\n\n| a |\n"
    assert "| a |" in capsys.readouterr().out
    assert write_report(["x"], None, "m1") is None and capsys.readouterr().out == "x\n\n"


def test_machine_line_states_threads_and_the_extra_note():
    line = machine_line("preset x")
    assert f"threads {torch.get_num_threads()}" in line and line.endswith("; preset x") and " UTC; " in line
