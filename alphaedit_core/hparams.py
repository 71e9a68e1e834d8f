"""Hyperparameters of AlphaEdit and MEMIT: one dataclass, presets as JSON files in `presets/`.

Presets for the offline models follow one rule (`scaled_layers`): the reference's edited layer positions,
taken as fractions of the reference model's depth, scaled to the target model's depth and rounded; the loss is
read at the last layer, as in every reference file; the target optimisation's settings (v_lr, clamp, weight
decay) come from the reference configuration of the same family: EasyEdit's Qwen2.5-7B file for Qwen2; for
LLaMA-like models other than LLaMA-3 (SmolLM2, Gemma3) the maintainers' advice for models without an official file,
MEMIT's llama-7b settings (v_lr 0.5, clamp 4, weight decay 1e-3); the threshold and L2 are the official file's for
every model (the maintainers' advice: "threshold and L2 unchanged"). The two sources agree on v_lr, clamp and weight
decay, so every offline preset differs from the others only in its layers. (With the LLaMA-3-8B file's v_lr 0.1 and
clamp 0.75 the target optimisation of SmolLM2-135M ends at a mean loss of 1.90 after 24 steps on 25 offline
requests; with these settings at 0.08.) Each preset file names its source.

The Qwen presets took EasyEdit's L2 1 until the operating-points chapter's C3 run on Qwen2.5-Coder-0.5B (200 edits,
results/qwen2.5-coder-0.5b-instruct-c3/, made with L2 1) found them overshooting; EasyEdit sets L2 1 in every
AlphaEdit file, its LLaMA3-8B one included (the official has 10), so that value is the framework's, not the family's,
and the rule now takes L2 from the official file for every model, as it already did for SmolLM2 and Gemma.

One amendment, for the target optimisation's learning rate (`choose_v_lr`): Adam's step is absolute, so a v_lr
carried over from a model on another hidden-state scale can leave the targets step-limited, far from reached.
Before a model's stream, `benchmarks/target_lr_check.py` optimises the targets of the stream's first 10 requests;
when their mean final loss at the family's v_lr exceeds twice `early_stop_loss`, the preset takes the v_lr of
`V_LR_GRID` with the lowest mean final loss (benchmarks/results/target_lr-<model>.md, read by
tests/test_preset_rule.py). Gemma-3-270M, whose hidden state is ~30 times SmolLM2's, is the one offline model it
changes so far.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

PRESET_DIR = "presets"


@dataclass
class EditHParams:
    """Every knob of the algorithm. Field names follow the reference configuration files."""

    layers: list[int] = field(default_factory=lambda: [4, 5, 6, 7, 8])
    # target vector z (compute_z)
    v_lr: float = 0.1
    v_num_grad_steps: int = 25
    v_loss_layer: int = -1  # negative counts from the end (-1: last layer)
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75
    kl_factor: float = 0.0625
    early_stop_loss: float = 5e-2
    fact_token: str = "subject_last"
    # context templates: (tokens per template, number of templates); "{}" is always the first template
    context_template_length: int = 10
    context_template_count: int = 5
    context_template_seeds: list[str] = field(default_factory=lambda: ["The", "Therefore", "Because", "I", "You"])
    # update
    L2: float = 10.0
    nullspace_threshold: float = 2e-2  # absolute eigenvalue threshold of the official code
    nullspace_mode: str = "threshold"  # "threshold" | "energy" | "identity" (P = I: an ablation)
    nullspace_energy: float = 0.01  # mode "energy": kept directions hold at most this share of the trace
    mom2_update_weight: float = 15000.0  # MEMIT only
    # covariance statistics
    mom2_corpus: str = "austen"
    mom2_n_tokens: int = 300_000
    mom2_seq_len: int = 256
    mom2_dtype: str = "float32"
    # run
    batch_size: int = 100
    seed: int = 0
    targets_chunk: int = 25  # requests optimised together (memory bound)
    source: str = ""  # where the values come from
    # stabilisers for long sequential streams (all off by default: the official algorithm). Fields in
    # `ADDED_FIELDS` are written by `to_dict` only when they differ from their default (see there).
    # ENCORE (Gupta et al. 2025), most-probable early stopping of the target optimisation: "loss" (official: stop
    # when loss < early_stop_loss) or "most_probable" (also stop once the new object's tokens are the argmax at
    # every label position of every rewriting prompt, at `most_probable_count` evaluations; see targets.py)
    target_stop: str = "loss"
    most_probable_count: int = 1
    # ENCORE's Frobenius-norm constraint: weight μ of μ‖Δ‖²_F on each batch's update of each layer (solve.py)
    norm_constraint: float = 0.0
    # Norm-Anchor Scaling (Liu et al. 2026): "off" or "nas" (rescale each solved value vector v* = v0 + δ to a
    # reference norm of the unedited model; editor.py, targets.anchor_values); skip a request whose ‖v*‖ exceeds
    # value_anchor_skip × the reference (0: never skip)
    value_anchor: str = "off"
    value_anchor_skip: float = 2.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"hparams field {name!r}={getattr(self, name)!r}: {why}")

        for name, hint in typing.get_type_hints(type(self)).items():
            problem = type_problem(getattr(self, name), hint)
            if problem:
                raise TypeError(f"hparams field {name!r}={getattr(self, name)!r}: {problem}")
            if hint is float and not math.isfinite(getattr(self, name)):
                raise bad(name, "must be finite")
        if not self.layers or any(not isinstance(l, int) or l < 0 for l in self.layers):
            raise bad("layers", "must be a non-empty list of non-negative layer indices")
        if sorted(set(self.layers)) != list(self.layers):
            raise bad("layers", "must be strictly increasing")
        for name in ("v_lr", "clamp_norm_factor", "nullspace_threshold", "nullspace_energy", "early_stop_loss"):
            if not getattr(self, name) > 0:
                raise bad(name, "must be > 0")
        for name in ("v_weight_decay", "kl_factor", "L2", "mom2_update_weight"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")
        for name in ("v_num_grad_steps", "batch_size", "targets_chunk", "mom2_n_tokens", "mom2_seq_len",
                     "context_template_length"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        if self.context_template_count < 0 or self.context_template_count > 0 and not self.context_template_seeds:
            raise bad("context_template_count", "needs >= 0 and seed words when > 0")
        if self.nullspace_energy >= 1:
            raise bad("nullspace_energy", "must be < 1")
        if self.fact_token != "subject_last":
            raise bad("fact_token", "only 'subject_last' is implemented (the setting of every reference file)")
        if self.nullspace_mode not in ("threshold", "energy", "identity"):
            raise bad("nullspace_mode", "must be 'threshold', 'energy' or 'identity'")
        if self.mom2_dtype not in ("float32", "float64"):
            raise bad("mom2_dtype", "must be 'float32' or 'float64'")
        if self.target_stop not in TARGET_STOPS:
            raise bad("target_stop", f"must be one of {TARGET_STOPS}")
        if not isinstance(self.most_probable_count, int) or self.most_probable_count < 1:
            raise bad("most_probable_count", "must be a positive integer")
        if self.target_stop == "most_probable" and self.most_probable_count > self.v_num_grad_steps:
            raise bad("most_probable_count", f"can never be reached within v_num_grad_steps={self.v_num_grad_steps}")
        if self.norm_constraint < 0:
            raise bad("norm_constraint", "must be >= 0 (0: the plain solve)")
        if self.value_anchor not in VALUE_ANCHORS:
            raise bad("value_anchor", f"must be one of {VALUE_ANCHORS}")
        if self.value_anchor_skip != 0 and self.value_anchor_skip <= 1:
            raise bad("value_anchor_skip", "must be 0 (never skip) or > 1 (a multiple of the reference norm)")

    def check_model(self, n_layers: int) -> None:
        """Raise if a layer index does not exist in a model of `n_layers` layers."""
        if max(self.layers) >= n_layers:
            raise ValueError(f"hparams field 'layers'={self.layers}: model has only {n_layers} layers")
        if not -n_layers <= self.v_loss_layer < n_layers:
            raise ValueError(f"hparams field 'v_loss_layer'={self.v_loss_layer}: model has {n_layers} layers")
        if self.loss_layer(n_layers) < max(self.layers):
            raise ValueError(f"hparams field 'v_loss_layer'={self.v_loss_layer}: below the last edited layer")

    def loss_layer(self, n_layers: int) -> int:
        return self.v_loss_layer % n_layers

    # --- (de)serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every field, except those of `ADDED_FIELDS` left at their default: the dict (a checkpoint's identity,
        a run's digest) of a run that does not use them is the one it had before they existed, so earlier
        checkpoints and cached runs stay valid. `from_dict` fills the missing fields with their defaults."""
        out = dataclasses.asdict(self)
        defaults = _defaults()
        for name in ADDED_FIELDS:
            if out[name] == defaults[name]:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EditHParams":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown hparams field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def replace(self, **overrides: Any) -> "EditHParams":
        return self.from_dict({**self.to_dict(), **overrides})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, name_or_path: str | Path, alternative: str | None = None, **overrides: Any) -> "EditHParams":
        """A preset name (see `list_presets()`) or a JSON file, with field overrides. `alternative` names one of the
        file's documented `alternatives` (see `preset_alternatives`), applied before the overrides, e.g.
        `EditHParams.load("smollm2-135m-instruct", alternative="calibrated")` for the calibrated projector rule."""
        data = _read_preset(name_or_path)
        alternatives = _alternatives(data.pop(ALTERNATIVES, {}), name_or_path)
        chosen: dict[str, Any] = {}
        if alternative is not None:
            if alternative not in alternatives:
                raise ValueError(f"hparams {str(name_or_path)!r} has no alternative {alternative!r}; it documents "
                                 f"{sorted(alternatives) or 'none'}")
            chosen = {k: v for k, v in alternatives[alternative].items() if k != "note"}
        return cls.from_dict({**data, **chosen, **overrides})


TARGET_STOPS = ("loss", "most_probable")
VALUE_ANCHORS = ("off", "nas")
# fields added after runs were recorded (the stabilisers of issue 16): omitted from `to_dict` at their default
ADDED_FIELDS = ("target_stop", "most_probable_count", "norm_constraint", "value_anchor", "value_anchor_skip")


def _defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(EditHParams) if f.default is not dataclasses.MISSING}


def type_problem(value: Any, hint: Any) -> str | None:
    """Why `value` does not fit the field type `hint` (int, float, str, list[int], list[str]); None when it does.
    bool is not an int; an int is a float."""
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            return f"must be a list of {item.__name__}, got {type(value).__name__}"
        for i, v in enumerate(value):
            problem = type_problem(v, item)
            if problem:
                return f"item [{i}]={v!r} {problem}"
        return None
    if hint is float:
        return f"must be a number (float), got {type(value).__name__}" \
            if isinstance(value, bool) or not isinstance(value, (int, float)) else None
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else \
            f"must be an integer (int), got {type(value).__name__}"
    if hint is str:
        return None if isinstance(value, str) else f"must be a string (str), got {type(value).__name__}"
    raise TypeError(f"no type check for field type {hint!r}")  # a new field of another type: extend this


ALTERNATIVES = "alternatives"  # preset key: {name: {field: value, ..., "note": why}}, not a field of EditHParams


def _read_preset(name_or_path: str | Path) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        return json.loads(path.read_text())
    preset = resources.files("alphaedit_core") / PRESET_DIR / f"{name_or_path}.json"
    if not preset.is_file():
        raise ValueError(f"unknown hparams preset {str(name_or_path)!r}; presets: {list_presets()}")
    return json.loads(preset.read_text())


def _alternatives(raw: Any, where: str | Path) -> dict[str, dict[str, Any]]:
    """A preset's `alternatives`, checked: each names known fields with values of the right type (and a `note`)."""
    if not isinstance(raw, dict):
        raise ValueError(f"hparams {str(where)!r}: {ALTERNATIVES!r} must map names to field values")
    hints = typing.get_type_hints(EditHParams)
    for name, fields in raw.items():
        if not isinstance(fields, dict) or not fields:
            raise ValueError(f"hparams {str(where)!r}: alternative {name!r} must be a non-empty object")
        for key, value in fields.items():
            if key == "note":
                continue
            if key not in hints:
                raise ValueError(f"hparams {str(where)!r}: alternative {name!r} sets unknown field {key!r}")
            problem = type_problem(value, hints[key])
            if problem:
                raise ValueError(f"hparams {str(where)!r}: alternative {name!r}: {key}={value!r} {problem}")
    return raw


def preset_alternatives(name_or_path: str | Path) -> dict[str, dict[str, Any]]:
    """The alternatives a preset documents beside its official values, {name: {field: value, "note": why}}: for
    example "calibrated", the scale-free projector rule chosen by the operating-points chapter. Not applied unless
    named (`EditHParams.load(..., alternative=name)`), so they change no run's identity."""
    return _alternatives(_read_preset(name_or_path).get(ALTERNATIVES, {}), name_or_path)


def list_presets() -> list[str]:
    files = resources.files("alphaedit_core") / PRESET_DIR
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".json"))


V_LR_GRID = (0.5, 1.0, 2.0, 5.0, 10.0)  # the Adam learning rates the v_lr amendment chooses from (1-2-5 steps)


def choose_v_lr(final_loss: typing.Mapping[float, float], family_lr: float, early_stop_loss: float,
                grid: typing.Sequence[float] = V_LR_GRID, slack: float = 2.0) -> float:
    """The v_lr amendment of the preset rule. `final_loss`: v_lr -> mean final loss of the targets of the stream's
    first requests (benchmarks/target_lr_check.py). Keep `family_lr` unless its loss exceeds slack ×
    `early_stop_loss`; then the value of `grid` with the lowest loss (every grid value must be measured; values off
    the grid are ignored)."""
    if family_lr not in final_loss:
        raise ValueError(f"the family's v_lr {family_lr} was not measured (have {sorted(final_loss)})")
    if final_loss[family_lr] <= slack * early_stop_loss:
        return family_lr
    missing = [lr for lr in grid if lr not in final_loss]
    if missing:
        raise ValueError(f"the family's v_lr {family_lr} leaves the targets at loss {final_loss[family_lr]:.3g} > "
                         f"{slack:g} x {early_stop_loss:g}: measure the whole grid (missing {missing})")
    return min(grid, key=lambda lr: (final_loss[lr], lr))


def scaled_layers(reference_layers: list[int], reference_depth: int, depth: int) -> list[int]:
    """The rule for new models: same relative depth, rounded, kept distinct and increasing."""
    out: list[int] = []
    for layer in reference_layers:
        l = int(round(layer * depth / reference_depth))
        out.append(max(l, out[-1] + 1) if out else l)
    return out
