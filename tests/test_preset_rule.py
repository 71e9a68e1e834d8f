"""The offline models' presets follow the one rule of alphaedit_core/hparams.py: the target optimisation's settings
from the family's reference file, the projector threshold and L2 from the official AlphaEdit file, layers scaled to
depth. Expectations are written out from shared/REFERENCE.md, not read from the code that makes the presets."""
import pytest

from alphaedit_core.hparams import EditHParams, scaled_layers

OFFLINE = {  # model -> (family's reference file, its depth, the model's depth)
    "smollm2-135m-instruct": ("memit-llama-7b", 32, 30),
    "gemma3-270m": ("memit-llama-7b", 32, 18),
    "qwen2.5-coder-0.5b-instruct": ("easyedit-qwen2.5-7b", 28, 24),
    "qwen2.5-coder-1.5b-instruct": ("easyedit-qwen2.5-7b", 28, 28),
}
OWN = {"layers", "v_loss_layer", "source"}  # what the rule sets per model


@pytest.mark.parametrize("model", sorted(OFFLINE))
def test_threshold_and_l2_are_the_official_files_and_the_optimisation_the_familys(model):
    family, ref_depth, depth = OFFLINE[model]
    hp = EditHParams.load(model)
    # the official AlphaEdit file (REFERENCE.md: nullspace_threshold 2e-2, L2 10); EasyEdit's L2 1 is not taken
    assert (hp.nullspace_threshold, hp.L2) == (0.02, 10.0)
    # MEMIT's llama-7b settings and EasyEdit's Qwen2.5-7B file agree: v_lr 0.5, clamp 4, weight decay 1e-3
    assert (hp.v_lr, hp.clamp_norm_factor, hp.v_weight_decay) == (0.5, 4.0, 1e-3)
    ref = EditHParams.load(family)
    assert (hp.v_lr, hp.clamp_norm_factor, hp.v_weight_decay) == (ref.v_lr, ref.clamp_norm_factor,
                                                                  ref.v_weight_decay)
    assert hp.layers == scaled_layers(ref.layers, ref_depth, depth) and hp.v_loss_layer == -1


def test_the_offline_presets_differ_only_in_their_layers():
    """C10 compares families: a knob that differs between two models' presets would be read as a family effect."""
    dicts = {m: {k: v for k, v in EditHParams.load(m).to_dict().items() if k not in OWN} for m in OFFLINE}
    first = dicts["smollm2-135m-instruct"]
    for m, d in dicts.items():
        assert {k: (v, first.get(k)) for k, v in d.items() if v != first.get(k)} == {}, m
