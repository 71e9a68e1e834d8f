"""A small edit stream on a tiny random model, shared by the checkpoint tests and the subprocesses they kill.

    python tests/stream_job.py CASES_JSON    # a 'zygote': imports once, forks one child per case, reports exits

Each case is {"dir": checkpoint folder, "save": k, "step": name} (kill the child with SIGKILL when the k-th save
reaches that step of `checkpoint.write_version`), {"dir": ..., "batch": b} (kill it in the middle of batch b,
after the first edited layer's weights changed in memory) or {"dir": ..., "chunk": k} (kill it right after the k-th
chunk of targets was saved to the target journal); "hp" (optional) changes the editor's hparams. The zygote runs
single-threaded and never runs a parallel region before forking, so the children are safe to fork.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import REQUESTS, tiny_model, tiny_tokenizer  # noqa: E402

from alphaedit_core import checkpoint as ckpt  # noqa: E402
from alphaedit_core import editor as editor_module  # noqa: E402
from alphaedit_core.arch import ModelAdapter  # noqa: E402
from alphaedit_core.editor import Editor  # noqa: E402
from alphaedit_core.hparams import EditHParams  # noqa: E402
from alphaedit_core.projection import projector_from_cov  # noqa: E402

BATCH = 2
LAYERS = [1, 2]


def hparams(**kw) -> EditHParams:
    base = dict(layers=LAYERS, v_lr=0.5, v_num_grad_steps=6, context_template_count=2, context_template_length=5,
                targets_chunk=4, L2=1.0, batch_size=BATCH)
    return EditHParams(**{**base, **kw})


def build_editor(seed: int = 0, method: str = "alphaedit", **hp) -> Editor:
    """An editor on a fresh tiny LLaMA (`seed`) with projectors from a fixed random low-rank covariance."""
    model, tok = tiny_model("llama", seed=seed), tiny_tokenizer()
    a = ModelAdapter.from_model(model)
    g = torch.Generator().manual_seed(123)
    covs = {}
    for l in LAYERS:
        basis = torch.randn(a.d_ff, 20, generator=g, dtype=torch.float64)
        covs[l] = (basis @ basis.T / 20).float()
    projectors = {l: projector_from_cov(c, threshold=1e-6) for l, c in covs.items()}
    return Editor(model, tok, hparams(**hp), method=method, projectors=projectors, covs=covs, progress=False)


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _child(case: dict) -> None:
    editor = build_editor(**case.get("hp", {}))
    if "chunk" in case:
        saves = {"n": 0}
        original_save = ckpt.TargetJournal.save

        def save_then_kill(self, *args, **kwargs):
            path = original_save(self, *args, **kwargs)
            saves["n"] += 1
            if saves["n"] == case["chunk"]:
                _kill()
            return path

        ckpt.TargetJournal.save = save_then_kill
    elif "step" in case:
        saves = {"n": 0}
        original_write = ckpt.write_version

        def counting_write(*args, **kwargs):
            saves["n"] += 1
            return original_write(*args, **kwargs)

        ckpt.write_version = counting_write
        ckpt._step = lambda name: _kill() if saves["n"] == case["save"] and name == case["step"] else None
    else:
        original_delta = editor_module.alphaedit_delta
        calls = {"n": 0}

        def delta_then_kill(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == (case["batch"] - 1) * len(LAYERS) + 2:  # second layer of that batch: first one edited
                _kill()
            return original_delta(*args, **kwargs)

        editor_module.alphaedit_delta = delta_then_kill
    editor.run(REQUESTS, checkpoint=case["dir"])


def main(cases_json: str) -> None:
    torch.set_num_threads(1)
    results = []
    for case in json.loads(cases_json):
        pid = os.fork()
        if pid == 0:
            try:
                _child(case)
            finally:
                os._exit(0)  # not killed: the case's kill point was never reached
        _, status = os.waitpid(pid, 0)
        results.append({**case, "killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL})
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
