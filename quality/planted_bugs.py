"""Plant each bug of the issue "Trustworthy long runs" (part 4) in a scratch copy of the package, one at a time,
and record which tests fail. The repository is never modified: the copy lives in PLANT_WORKDIR (default
/tmp/pins_copy) and is imported through PYTHONPATH (each run prints the alphaedit_core it imported).

usage: .venv/bin/python quality/planted_bugs.py [BUG_ID ...]     (all bugs without arguments)
writes quality/results/planted_bugs.json; quality/planted_bugs.md is the table made from it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("PLANT_WORKDIR", "/tmp/pins_copy"))
TESTS = ["tests/test_algorithm_pins.py", "tests/test_core.py", "tests/test_stats.py"]

# id: (description, file, old text, new text); the old text must occur exactly once
BUGS = {
    "baseline": ("no bug planted (the failures every run shares)", "solve.py", "", ""),
    "weight_decay_dropped": ("weight-decay term dropped from the target loss", "targets.py",
                             "return nll + hp.kl_factor * kl + hp.v_weight_decay * wd, kl_init",
                             "return nll + hp.kl_factor * kl, kl_init"),
    "subject_pos_minus1_prompts": ("subject's last-token position one too early (prompts.py, shared)", "prompts.py",
                                   'if b > a and a < end)\n', 'if b > a and a < end) - 1\n'),
    "subject_pos_plus1_prompts": ("subject's last-token position one too late (prompts.py, shared)", "prompts.py",
                                  'if b > a and a < end)\n', 'if b > a and a < end) + 1\n'),
    "second_moments_n_plus_1": ("second moments divided by n + 1", "stats.py",
                                "validate_second_moment((s / counted)", "validate_second_moment((s / (counted + 1))"),
    "restore_keeps_cache_c": ("restore() does not reset cache_c", "editor.py",
                              "        for c in self.cache_c.values():\n            c.zero_()\n",
                              "        for c in self.cache_c.values():\n            pass\n"),
    "cache_c_pre_edit_keys": ("cache_c built from keys taken before the edit", "editor.py",
                              "        zs = tr.z.double()\n",
                              "        zs = tr.z.double()\n        pre_keys, _ = keys_and_outputs(self.model, self.tok, a, "
                              "requests, self.templates, layers, out_layer=L)\n"),
    "layer_check_accepts_n": ("layer-range check off by one (accepts layer n_layers)", "hparams.py",
                              "if max(self.layers) >= n_layers:", "if max(self.layers) > n_layers:"),
    "layer_check_rejects_last": ("layer-range check off by one (rejects the last layer)", "hparams.py",
                                 "if max(self.layers) >= n_layers:", "if max(self.layers) >= n_layers - 1:"),
    "heldout_not_skipped": ("held-out keys not skipped", "stats.py",
                            "    windows = token_windows(tok, corpus, seq_len)\n    skipped = 0\n",
                            "    windows = token_windows(tok, corpus, seq_len)\n    skipped = 0\n    skip_tokens = 0\n"),
    "residual_split_by_all_layers": ("residual split: every layer takes 1/len(layers)", "editor.py",
                                     "R = (zs - cur.double()).T / (len(layers) - i)",
                                     "R = (zs - cur.double()).T / len(layers)"),
    "residual_split_off_by_one": ("residual split: divided by the layers left + 1", "editor.py",
                                  "R = (zs - cur.double()).T / (len(layers) - i)",
                                  "R = (zs - cur.double()).T / (len(layers) - i + 1)"),
    "targets_label_pos_minus1": ("targets.py only: label positions one too early", "targets.py",
                                 "start = t.lengths[b] - len(tgt)\n", "start = t.lengths[b] - len(tgt) - 1\n"),
    "targets_delta_pos_batched": ("targets.py only: δ / h0 one token early in the batched optimiser", "targets.py",
                                  "        lookup = torch.tensor(rows.tok.subject_last, device=device)\n"
                                  "        lengths = torch.tensor(rows.tok.lengths, device=device)\n",
                                  "        lookup = torch.tensor(rows.tok.subject_last, device=device) - 1\n"
                                  "        lengths = torch.tensor(rows.tok.lengths, device=device)\n"),
    "targets_delta_pos_reference": ("targets.py only: δ / h0 one token early in the per-request optimiser",
                                    "targets.py",
                                    "        lookup = torch.tensor(rows.tok.subject_last, device=device)\n"
                                    "        all_rows = ",
                                    "        lookup = torch.tensor(rows.tok.subject_last, device=device) - 1\n"
                                    "        all_rows = "),
}
# the pre-edit-keys bug needs a second replacement: the cache update reads the keys taken before the loop
EXTRA = {"cache_c_pre_edit_keys": ("editor.py", "                K = keys[l].T\n                self.cache_c[l] += K @ K.T",
                                   "                K = pre_keys[l].T\n                self.cache_c[l] += K @ K.T")}


def plant(bug: str) -> None:
    shutil.rmtree(WORK / "alphaedit_core", ignore_errors=True)
    shutil.copytree(ROOT / "alphaedit_core", WORK / "alphaedit_core", ignore=shutil.ignore_patterns("__pycache__"))
    edits = [BUGS[bug][1:]] + ([EXTRA[bug]] if bug in EXTRA else [])
    for name, old, new in edits:
        if not old:
            continue
        path = WORK / "alphaedit_core" / name
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"{bug}: the text to replace occurs {text.count(old)} times in {name}; update BUGS")
        path.write_text(text.replace(old, new))


def run_tests() -> tuple[list[str], str]:
    env = dict(os.environ, PYTHONPATH=str(WORK), OMP_NUM_THREADS="1")
    probe = subprocess.run([sys.executable, "-c", "import alphaedit_core; print(alphaedit_core.__file__)"],
                           cwd=WORK, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert probe.startswith(str(WORK)), f"imported {probe}, not the copy"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *TESTS],
                         cwd=WORK, env=env, capture_output=True, text=True)
    failed = sorted(set(re.findall(r"^FAILED (.+?)(?: - .*)?$", out.stdout, re.M)))
    return failed, out.stdout.strip().splitlines()[-1] + f"  [imported {probe}]"


def main(ids: list[str]) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(WORK / "tests", ignore_errors=True)
    shutil.copytree(ROOT / "tests", WORK / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", WORK / "pyproject.toml")
    results_path = ROOT / "quality" / "results" / "planted_bugs.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for bug in ids or list(BUGS):
        t0 = time.time()
        plant(bug)
        failed, last = run_tests()
        results[bug] = {"bug": BUGS[bug][0], "file": BUGS[bug][1], "failed": failed, "summary": last}
        print(f"{bug}: {len(failed)} failed ({time.time() - t0:.0f} s) {last}", flush=True)
        for f in failed:
            print("    ", f, flush=True)
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    shutil.rmtree(WORK / "alphaedit_core", ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
