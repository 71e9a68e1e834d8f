"""Keys k (inputs of the MLP output projection at the subject's last token) and current values of the residual
stream, read in one forward pass that stops at the deepest layer it needs."""
from __future__ import annotations

import torch

from .arch import ModelAdapter, at_positions, capture_inputs, layer_output, run_until
from .prompts import template_groups, tokenize
from .requests import EditRequest


@torch.no_grad()
def keys_and_outputs(
    model: torch.nn.Module,
    tok,
    adapter: ModelAdapter,
    requests: list[EditRequest],
    templates: list[str],
    layers: list[int],
    out_layer: int | None = None,
    rows_per_pass: int = 256,
) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
    """Keys {layer: [n_requests, d_ff]}, averaged over the templates as the reference does (mean within the
    groups ["{}"] and [sampled...], then mean of the group means), and, when `out_layer` is given, the output
    of decoder layer `out_layer` at the subject's last token of the bare prompt: [n_requests, d_model].
    Each layer's keys are on that layer's device (`ModelAdapter.layer_device`), the values on `out_layer`'s."""
    device = adapter.input_device
    n_t = len(templates)
    texts = [t.format(r.prompt) for r in requests for t in templates]
    subjects = [r.subject for r in requests for _ in templates]
    per_row: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    outs: list[torch.Tensor] = []
    store: dict[int, torch.Tensor] = {}
    handles = capture_inputs({l: adapter.mlp_out(l) for l in layers}, store)
    if out_layer is not None:
        handles.append(adapter.layers[out_layer].register_forward_hook(
            lambda _m, _a, out: store.__setitem__(-1, layer_output(out))))
        stop = adapter.layers[out_layer] if out_layer >= max(layers) else adapter.mlp_out(max(layers))
    else:
        stop = adapter.mlp_out(max(layers))
    try:
        for start in range(0, len(texts), rows_per_pass):
            t = tokenize(tok, texts[start : start + rows_per_pass], subjects[start : start + rows_per_pass])
            run_until(model, stop, input_ids=t.input_ids.to(device), attention_mask=t.attention_mask.to(device))
            rows = torch.arange(len(t.lengths), device=device)
            idx = torch.tensor(t.subject_last, device=device)
            for l in layers:
                per_row[l].append(at_positions(store[l], rows, idx).float())
            if out_layer is not None:
                outs.append(at_positions(store[-1], rows, idx).float())
    finally:
        for h in handles:
            h.remove()
    groups = template_groups(templates)
    keys = {}
    for l in layers:
        k = torch.cat(per_row[l]).view(len(requests), n_t, -1)  # [n, templates, d_ff]
        keys[l] = torch.stack([k[:, g].mean(1) for g in groups], 1).mean(1).to(adapter.layer_device(l))
    values = torch.cat(outs).view(len(requests), n_t, -1)[:, 0] if out_layer is not None else None
    if values is not None:
        values = values.to(adapter.layer_device(out_layer))
    return keys, values
