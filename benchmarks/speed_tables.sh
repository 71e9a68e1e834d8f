#!/usr/bin/env bash
# Re-measure the edit-speed tables of benchmarks/results/ that need quiet cores (about 1 h 45 min on two cores; run
# it with nothing else on the machine: every table records the load average at its start and end).
#   1. Qwen2.5-Coder-0.5B, one batch of 100: targets / keys / solve per request, projected hours, peak memory; and the
#      targets of the batch's first chunk (25 requests) through targets.py before the speed work (531ca40) and the
#      installed one, alternated, with the z difference and the step counts.
#   2. SmolLM2-135M, one batch of 100: the targets under the preset and under most-probable early stopping (MPES, most_probable_count 2 as in the collapse streams),
#      alternated, with the Adam steps per request of each.
#   3. Qwen2.5-Coder-0.5B, where the time of the targets goes (torch.profiler, one chunk of 25 requests, 2 Adam
#      steps each), before (531ca40) and after the speed work (about 20 min).
#   3b. (profile-full) the same profile of the installed targets.py over all 25 Adam steps of the preset, so that the
#      once-per-chunk building weighs what it weighs in a real batch (about 6 min).
#   4. SmolLM2-135M, a batch of 50: the targets with chunks of 25 requests (the preset) and of 50, alternated (bigger
#      matrix products against more memory; about 15 min).
# Usage: benchmarks/speed_tables.sh [qwen|mpes|profile|profile-full|chunk]...   (default: qwen mpes)
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
        --variant '{"target_stop": "most_probable", "most_probable_count": 2}' --rounds 2 --compare-requests 50 \
        --out "benchmarks/results/mpes_speed-{model}-b100.md" ;;
  profile) for impl in before after; do
        "$PY" benchmarks/profile_targets.py --model qwen2.5-coder-0.5b-instruct --batch 25 --steps 2 --threads 2 \
          $([ "$impl" = before ] && echo --impl "$before") --label "$([ "$impl" = before ] && echo "before (targets.py at 531ca40)" || echo "after (the installed targets.py)")" \
          --out "benchmarks/results/targets_profile-qwen2.5-coder-0.5b-instruct-$impl.md"
      done ;;
  profile-full) "$PY" benchmarks/profile_targets.py --model qwen2.5-coder-0.5b-instruct --batch 25 --threads 2 \
        --label "after (the installed targets.py), all Adam steps" \
        --out "benchmarks/results/targets_profile-qwen2.5-coder-0.5b-instruct-after-full.md" ;;
  chunk) "$PY" benchmarks/edit_speed.py --models smollm2-135m-instruct --batch 50 --threads 2 \
        --variant '{"targets_chunk": 50}' --out "benchmarks/results/chunk_speed-{model}-b50.md" ;;
  *) echo "unknown table '$w' (choose qwen, mpes, profile, profile-full, chunk)" >&2; exit 2 ;;
  esac
done
