"""Find, by inspecting a causal LM, the parts AlphaEdit touches: decoder layers, the MLP output projection
(the edited matrix), the final norm and the LM head. No branch on model names: LLaMA, Qwen2, Gemma3, GPT-2 and
GPT-J are all found by the same rules.

Convention: an edit `delta` of an MLP output projection always has shape [d_model, d_ff] (value × key), whatever
the module stores (`nn.Linear.weight` is [d_model, d_ff], GPT-2's `Conv1D.weight` is [d_ff, d_model]).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

_MLP_NAMES = ("mlp", "feed_forward", "ffn", "ff")


class ArchitectureError(ValueError):
    """The model does not have the structure AlphaEdit needs."""


def _linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of a Linear-like leaf, or None."""
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        return None
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":  # GPT-2 stores weight as [in, out]
        return w.shape[0], w.shape[1]
    return None


@dataclass
class ModelAdapter:
    """Handles to the modules of one model. Build with `ModelAdapter.from_model(model)`."""

    model: nn.Module
    layers: nn.ModuleList  # the decoder blocks, in order
    layers_path: str  # e.g. "model.layers"
    mlp_out_names: list[str]  # full module name of each layer's MLP output projection
    final_norm: nn.Module
    lm_head: nn.Module
    d_model: int
    d_ff: int

    @classmethod
    def from_model(cls, model: nn.Module) -> "ModelAdapter":
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        d_model = getattr(config, "hidden_size", None) or getattr(config, "n_embd")
        n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer")
        layers_path, layers = _find_layers(model, n_layers)
        names = []
        d_ff = None
        for i, layer in enumerate(layers):
            name, dims = _find_mlp_out(layer, d_model)
            if name is None:
                raise ArchitectureError(
                    f"layer {i} ({type(layer).__name__}) has no MLP output projection: looked for a child named one of "
                    f"{_MLP_NAMES} holding a Linear/Conv1D with out_features={d_model} and in_features > {d_model}"
                )
            names.append(f"{layers_path}.{i}.{name}")
            d_ff = dims[0]
        final_norm = _find_final_norm(model, layers_path)
        lm_head = model.get_output_embeddings()
        if lm_head is None:
            raise ArchitectureError(f"{type(model).__name__} has no output embeddings (LM head)")
        return cls(model, layers, layers_path, names, final_norm, lm_head, d_model, d_ff)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def mlp_out(self, layer: int) -> nn.Module:
        return self.model.get_submodule(self.mlp_out_names[layer])

    def weight_view(self, layer: int) -> torch.Tensor:
        """The edited matrix as [d_model, d_ff] (a view sharing storage with the parameter)."""
        module = self.mlp_out(layer)
        w = module.weight
        return w if isinstance(module, nn.Linear) else w.T

    def layer_device(self, layer: int) -> torch.device:
        """Where layer `layer`'s edited matrix lives: every tensor of the editor that belongs to this layer (keys,
        residuals, projector, second moment, cache_c, the solve) is put here. On a model split by a device map
        (``device_map="auto"``) this differs from layer to layer and from `input_device`."""
        return self.weight_view(layer).device

    @property
    def input_device(self) -> torch.device:
        """Where the input ids go: the input embeddings' device (on a split model, the first device)."""
        return input_device(self.model)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head over already-normed hidden states [..., d_model] -> [..., vocab], with the model's soft-cap."""
        logits = self.lm_head(hidden)
        cap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits


def input_device(model: nn.Module) -> torch.device:
    """The device of `model`'s input embeddings (the first parameter's, when it has none)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    w = getattr(emb, "weight", None)
    return w.device if isinstance(w, torch.Tensor) else next(model.parameters()).device


def layerwise_device_map(model: nn.Module, devices: list) -> dict[str, object]:
    """A device map (for accelerate's `dispatch_model` or ``from_pretrained(device_map=...)``) that splits the decoder
    layers into contiguous blocks, one per device in `devices` (the first blocks one larger when they do not divide
    evenly); the embeddings and the other modules next to the layers go on the first device, the final norm on the
    last, the LM head on the last too unless it is tied to the input embeddings (then on the first). What
    ``device_map="auto"`` does for a model too large for one device, chosen by hand so that tests and checks can
    place the edited layers on different devices."""
    a = ModelAdapter.from_model(model)
    if not devices:
        raise ValueError("layerwise_device_map needs at least one device")
    n, k = a.n_layers, len(devices)
    block = [devices[min(i * k // n, k - 1)] for i in range(n)]
    base = a.layers_path.rsplit(".", 1)[0] if "." in a.layers_path else ""
    parent = model.get_submodule(base) if base else model
    final = next((nm for nm, m in parent.named_children() if m is a.final_norm), None)
    device_map: dict[str, object] = {}
    for name, _ in parent.named_children():
        full = f"{base}.{name}" if base else name
        if full == a.layers_path:
            device_map |= {f"{full}.{i}": block[i] for i in range(n)}
        else:
            device_map[full] = devices[-1] if name == final else devices[0]
    head = next(nm for nm, m in model.named_modules() if m is a.lm_head)
    if head not in device_map:
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        tied = emb is not None and a.lm_head.weight is getattr(emb, "weight", None)
        device_map[head] = devices[0] if tied else devices[-1]
    return device_map


def at_positions(h: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """h[rows, cols] with the index tensors moved to h's device first (a no-op when they are there already): an
    activation captured by a hook lives on the device of the layer that produced it, not on the input device."""
    return h[rows.to(h.device), cols.to(h.device)]


def layer_output(output) -> torch.Tensor:
    """Decoder layers return a tensor (transformers 5) or a tuple whose first item is the hidden states."""
    return output[0] if isinstance(output, (tuple, list)) else output


def replace_layer_output(output, hidden: torch.Tensor):
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    if isinstance(output, list):
        return [hidden, *output[1:]]
    return hidden


def _find_layers(model: nn.Module, n_layers: int) -> tuple[str, nn.ModuleList]:
    best = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            kinds = {type(m) for m in module}
            if len(kinds) == 1 and (best is None or name.count(".") < best[0].count(".")):
                best = (name, module)
    if best is None:
        raise ArchitectureError(
            f"no ModuleList of {n_layers} identical blocks found in {type(model).__name__}; "
            "is this a decoder-only causal LM?"
        )
    return best


def _find_mlp_out(layer: nn.Module, d_model: int) -> tuple[str | None, tuple[int, int] | None]:
    for child_name, child in layer.named_children():
        if child_name.lower() not in _MLP_NAMES:
            continue
        found = []
        for name, leaf in child.named_modules():
            dims = _linear_dims(leaf)
            if dims and dims[1] == d_model and dims[0] > d_model:
                found.append((f"{child_name}.{name}", dims))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ArchitectureError(f"ambiguous MLP output projection in {type(layer).__name__}: {[f[0] for f in found]}")
    return None, None


def _find_final_norm(model: nn.Module, layers_path: str) -> nn.Module:
    parent = model.get_submodule(layers_path.rsplit(".", 1)[0]) if "." in layers_path else model
    norms = [(n, m) for n, m in parent.named_children() if "norm" in type(m).__name__.lower() or n in ("ln_f", "norm")]
    if not norms:
        raise ArchitectureError(f"no final norm found next to {layers_path} in {type(parent).__name__}")
    return norms[-1][1]


class StopForward(Exception):
    """Raised by a hook to end a forward pass once the needed activations are captured."""


def stop_hook(_module, _args, _output):
    """Forward hook that ends the forward pass (see `StopForward`)."""
    raise StopForward


def run_until(model: nn.Module, stop_module: nn.Module, **inputs) -> None:
    """Run `model(**inputs)` and stop right after `stop_module` has run (its hooks fired)."""
    handle = stop_module.register_forward_hook(stop_hook)
    try:
        model(**inputs, use_cache=False)
    except StopForward:
        pass
    finally:
        handle.remove()


def capture_inputs(modules: dict[int, nn.Module], store: dict[int, torch.Tensor]) -> list[torch.utils.hooks.RemovableHandle]:
    """Pre-hooks storing each module's first positional input in `store[key]`: [batch, seq, d_in]."""

    def make(key: int) -> Callable:
        def hook(_module, args):
            store[key] = args[0]

        return hook

    return [m.register_forward_pre_hook(make(k)) for k, m in modules.items()]
