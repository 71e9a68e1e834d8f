#!/usr/bin/env bash
# The across-models runs (notebooks/model_compare, notebooks/instruct_vs_base; issue "across models"), in the order
# that reaches the comparison soonest. Every step resumes from its checkpoints, so the same command continues after
# an interruption (the statistics and a milestone's evaluation too), and a finished step only re-renders:
#   1. each offline model with the official threshold, AlphaEdit and MEMIT in two one-thread processes (--jobs 2;
#      the unedited model's scores are computed once and shared), smallest model first: its statistics, P check and
#      stream are the cheapest evidence. Gemma-3-270M stops at 500 edits here (--stop-after 500), the milestone it
#      shares with Qwen-0.5B's whole run, and goes on to its 1,000 in step 4;
#   2. the calibrated P of two models in two one-thread lanes (AlphaEdit only: MEMIT has no P), which reuses the
#      official run's statistics and unedited scores;
#   3. Qwen2.5-Coder-1.5B (the slowest) the same way, with the default model's calibrated P check beside it (its
#      calibrated stream is the collapse chapter's);
#   4. Gemma-3-270M on to 1,000 edits (the same runs, resumed);
#   5. the L2 point of C3 on Qwen2.5-Coder-0.5B (one setting, ~1 h): the committed C3 run edited
#      with EasyEdit's L2 1, which the Qwen presets no longer take; the same run (its preset as it was, so every
#      cached setting is reused) plus AlphaEdit at L2 10, the preset the across-models runs use;
#   6. the two comparison chapters.
# `python -m alphaedit_core.compare plan` prints where each run stands and what it is estimated to cost.
# Usage: scripts/queue_models.sh   (log: $QUEUE_LOG, default queue_models.log; PY: the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
LOG="${QUEUE_LOG:-queue_models.log}"
source scripts/step.sh  # step NAME COMMAND...: run, time and report one step
run() {  # run MODEL RULE [--jobs 2]: one (model, P rule) run of alphaedit_core.compare
  local model="$1" rule="$2"; shift 2
  "$PY" -m alphaedit_core.compare run --model "$model" --rule "$rule" "$@"
}
one_thread() { env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$@"; }

step "gemma3-270m, official P, to 500 edits" run gemma3-270m official --jobs 2 --stop-after 500
step "qwen2.5-coder-0.5b-instruct, official P" run qwen2.5-coder-0.5b-instruct official --jobs 2
( step "gemma3-270m, calibrated P, to 500 edits" one_thread run gemma3-270m calibrated --stop-after 500 ) &
( step "qwen2.5-coder-0.5b-instruct, calibrated P" one_thread run qwen2.5-coder-0.5b-instruct calibrated ) &
wait
# memory: each Qwen-1.5B process holds the fp32 model (6.2 GB) and, per edited layer, [8960, 8960] float32
# matrices (0.32 GB each): AlphaEdit's cache_c and P's basis, MEMIT's C (an editor keeps only what its solve reads);
# estimated peak ~10 GB a process, ~20 GB for the two jobs: run nothing beside them on a 24 GiB machine (or pass
# --jobs 1 there, at about twice the wall time)
step "qwen2.5-coder-1.5b-instruct, official P" run qwen2.5-coder-1.5b-instruct official --jobs 2
( step "qwen2.5-coder-1.5b-instruct, calibrated P" one_thread run qwen2.5-coder-1.5b-instruct calibrated ) &
( step "smollm2-135m-instruct, calibrated P check" one_thread run smollm2-135m-instruct calibrated ) &
wait
step "gemma3-270m, official P, to 1,000 edits" run gemma3-270m official --jobs 2
step "gemma3-270m, calibrated P, to 1,000 edits" run gemma3-270m calibrated
C3_BASE='{"L2": 1.0, "source": "rule: EasyEdit qwen2.5-7b file, layers scaled 28 -> 24 layers, loss at the last layer"}'
step "qwen2.5-coder-0.5b-instruct, C3 at L2 10" "$PY" -m alphaedit_core.study \
  --model qwen2.5-coder-0.5b-instruct --only operating_points --no-book \
  --param 'label="qwen2.5-coder-0.5b-instruct-c3"' --param "overrides=$C3_BASE" --param 'methods=["alphaedit", "memit"]' \
  --param 'l2s=[10.0]' --param 'thresholds=[]' --param 'energies=[]' --param 'memit_lambdas=[]' \
  --param 'clamps=[]' --param 'seeds=[]' --param 'corpora=[]'
step "the comparison chapters" "$PY" -m alphaedit_core.compare chapters
