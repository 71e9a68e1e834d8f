"""The offline models' presets follow the one rule of alphaedit_core/hparams.py: the target optimisation's settings
from the family's reference file, the projector threshold and L2 from the official AlphaEdit file, layers scaled to
depth, and v_lr amended where the family's leaves the targets unreached (`choose_v_lr`, read against the measured
tables of benchmarks/results/target_lr-<model>.md). Expectations are written out from shared/REFERENCE.md, not read
from the code that makes the presets."""
import re
from pathlib import Path

import pytest

from alphaedit_core.hparams import EditHParams, choose_v_lr, scaled_layers

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"

OFFLINE = {  # model -> (family's reference file, its depth, the model's depth)
    "smollm2-135m-instruct": ("memit-llama-7b", 32, 30),
    "gemma3-270m": ("memit-llama-7b", 32, 18),
    "qwen2.5-coder-0.5b-instruct": ("easyedit-qwen2.5-7b", 28, 24),
    "qwen2.5-coder-1.5b-instruct": ("easyedit-qwen2.5-7b", 28, 28),
}
OWN = {"layers", "v_loss_layer", "source"}  # what the rule sets per model
FAMILY_LR = 0.5  # MEMIT's llama-7b file and EasyEdit's Qwen2.5-7B file (REFERENCE.md)
AMENDED = {"gemma3-270m": 5.0}  # the v_lr amendment's choice, from its table (checked below)


@pytest.mark.parametrize("model", sorted(OFFLINE))
def test_threshold_and_l2_are_the_official_files_and_the_optimisation_the_familys(model):
    family, ref_depth, depth = OFFLINE[model]
    hp = EditHParams.load(model)
    # the official AlphaEdit file (REFERENCE.md: nullspace_threshold 2e-2, L2 10); EasyEdit's L2 1 is not taken
    assert (hp.nullspace_threshold, hp.L2) == (0.02, 10.0)
    # MEMIT's llama-7b settings and EasyEdit's Qwen2.5-7B file agree: v_lr 0.5, clamp 4, weight decay 1e-3
    assert (hp.v_lr, hp.clamp_norm_factor, hp.v_weight_decay) == (AMENDED.get(model, FAMILY_LR), 4.0, 1e-3)
    ref = EditHParams.load(family)
    assert (ref.v_lr, hp.clamp_norm_factor, hp.v_weight_decay) == (FAMILY_LR, ref.clamp_norm_factor,
                                                                   ref.v_weight_decay)
    assert hp.layers == scaled_layers(ref.layers, ref_depth, depth) and hp.v_loss_layer == -1


def test_the_offline_presets_differ_only_in_their_layers_and_an_amended_v_lr():
    """C10 compares families: a knob that differs between two models' presets would be read as a family effect;
    the one exception is the v_lr the amendment sets, so that each model's targets are reached."""
    dicts = {m: {k: v for k, v in EditHParams.load(m).to_dict().items() if k not in OWN | {"v_lr"}}
             for m in OFFLINE}
    first = dicts["smollm2-135m-instruct"]
    for m, d in dicts.items():
        assert {k: (v, first.get(k)) for k, v in d.items() if v != first.get(k)} == {}, m


def measured_losses(model: str) -> dict[float, float]:
    """v_lr -> mean final loss of `model`'s rows in benchmarks/results/target_lr-<model>.md (every table there;
    rows of another model, as the reference rows of Gemma's file, are skipped)."""
    text = (RESULTS / f"target_lr-{model}.md").read_text()
    assert "first 10 requests" in text.splitlines()[0], "the rule reads the stream's first 10 requests"
    out: dict[float, float] = {}
    header: list[str] = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if "v_lr" in cells:
            header = cells
        elif cells and header and not set(cells[0]) <= set("-: "):
            row = dict(zip(header, cells))
            if row.get("model", model) == model:
                lr = float(row["v_lr"].split()[0])
                loss = float(re.split(r"[,\s]+", row["final loss (mean, max)"])[0])
                assert out.get(lr, loss) == loss, f"two tables disagree at v_lr {lr}"
                out[lr] = loss
    return out


@pytest.mark.parametrize("model", sorted(OFFLINE))
def test_each_presets_v_lr_is_the_amendments_choice_on_its_measured_table(model):
    if not (RESULTS / f"target_lr-{model}.md").exists():
        pytest.skip(f"no target_lr check of {model} yet: run benchmarks/target_lr_check.py before its stream")
    hp = EditHParams.load(model)
    assert choose_v_lr(measured_losses(model), FAMILY_LR, hp.early_stop_loss) == hp.v_lr


def test_choose_v_lr_keeps_the_familys_value_below_the_slack_and_else_takes_the_grids_lowest_loss():
    grid = (0.5, 1.0, 2.0)
    assert choose_v_lr({0.5: 0.099}, 0.5, 0.05, grid) == 0.5  # 0.099 <= 2 x 0.05: kept, nothing else needed
    assert choose_v_lr({0.5: 0.101, 1.0: 0.08, 2.0: 0.09, 3.0: 0.01}, 0.5, 0.05, grid) == 1.0  # 3 is off the grid
    assert choose_v_lr({0.5: 0.5, 1.0: 0.2, 2.0: 0.2}, 0.5, 0.05, grid) == 1.0  # a tie goes to the smaller step
    assert choose_v_lr({0.5: 0.3, 1.0: 0.2, 2.0: 0.2}, 0.5, 0.1, grid, slack=3.0) == 0.5  # 0.3 <= 3 x 0.1
    with pytest.raises(ValueError, match="measure the whole grid"):
        choose_v_lr({0.5: 0.2, 2.0: 0.1}, 0.5, 0.05, grid)
    with pytest.raises(ValueError, match="was not measured"):
        choose_v_lr({1.0: 0.01}, 0.5, 0.05, grid)
