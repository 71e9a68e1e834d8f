#!/usr/bin/env bash
# Re-measure the edit-speed tables of benchmarks/results/ that need quiet cores (about 1 h 45 min on two cores; run
# it with nothing else on the machine: every table records the load average at its start and end).
#   1. Qwen2.5-Coder-0.5B, one batch of 100: targets / keys / solve per request, projected hours, peak memory; and the
#      targets of the batch's first chunk (25 requests) through targets.py before the speed work (531ca40) and the
#      installed one, alternated, with the z difference and the step counts.
#   2. SmolLM2-135M, one batch of 100: the targets under the preset and under most-probable early stopping (MPES),
#      alternated, with the Adam steps per request of each.
# Usage: benchmarks/speed_tables.sh [qwen|mpes]...   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
before="${TMPDIR:-/tmp}/targets_531ca40.py"  # the name appears in the table
git show 531ca40:alphaedit_core/targets.py > "$before"
for w in ${@:-qwen mpes}; do
  case "$w" in
  qwen) "$PY" benchmarks/edit_speed.py --models qwen2.5-coder-0.5b-instruct --batch 100 --threads 2 \
        --before "$before" --compare-requests 25 \
        --out "benchmarks/results/edit_speed-{model}-b100-before-after.md" ;;
  mpes) "$PY" benchmarks/edit_speed.py --models smollm2-135m-instruct --batch 100 --threads 2 \
        --variant '{"target_stop": "most_probable"}' \
        --out "benchmarks/results/mpes_speed-{model}-b100.md" ;;
  *) echo "unknown table '$w' (choose qwen, mpes)" >&2; exit 2 ;;
  esac
done
