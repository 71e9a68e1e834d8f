#!/usr/bin/env bash
# Mutation testing of the core modules (solve, projection, stats, keys, targets, editor, prompts) with mutmut.
#
#   bash quality/mutation.sh           # "after": the tests of [tool.mutmut] in pyproject.toml
#   bash quality/mutation.sh before    # "before": the same without the tests written to pin the algorithm
#                                      # (tests/test_algorithm_pins.py, tests/test_mutation_pins.py)
#
# Works on a scratch copy (MUTATION_WORKDIR, default /tmp/alphaedit-mutation/<mode>): the repository is never
# touched except quality/results/<mode>/, where the counts (summary.json), the surviving mutants with their diffs
# (survivors.md), the sample (sample.txt) and the run's log go. Needs the project's .venv with the dev extra
# (mutmut). Tests a seeded sample of each function's mutants (MUTATION_SAMPLE, default 0.15; 1 = all), at
# niceness MUTATION_NICE (default 19, whatever the caller's), one thread per worker, MUTATION_JOBS workers
# (default 2). See quality/README.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MODE="${1:-after}"
case "$MODE" in before|after) ;; *) echo "usage: bash quality/mutation.sh [before|after]" >&2; exit 2 ;; esac
WORK="${MUTATION_WORKDIR:-/tmp/alphaedit-mutation/$MODE}"
OUT="${MUTATION_OUT:-$ROOT/quality/results/$MODE}"
JOBS="${MUTATION_JOBS:-2}"
MUTMUT="$ROOT/.venv/bin/mutmut"
PY="$ROOT/.venv/bin/python"
[ -x "$MUTMUT" ] || { echo "mutmut missing: .venv/bin/python -m pip install -e '.[dev]'" >&2; exit 1; }

mkdir -p "$OUT"
if [ -n "${MUTATION_RESUME:-}" ] && [ -d "$WORK/mutants" ]; then
  echo "resuming the run in $WORK (mutants already tested keep their result)"
else
  # 1. a fresh copy of the package, the tests and pyproject.toml
  rm -rf "$WORK"
  mkdir -p "$WORK"
  tar -C "$ROOT" --exclude=__pycache__ -cf - alphaedit_core tests pyproject.toml | tar -C "$WORK" -xf -
  # 2. mutmut skips decorated functions: move @torch.no_grad() after the definitions (same functions at run time)
  "$PY" "$ROOT/quality/undecorate.py" "$WORK"/alphaedit_core/{keys,stats,prompts}.py
  # 3. "before": the test selection without the algorithm pins
  if [ "$MODE" = before ]; then
    for pins in test_algorithm_pins test_mutation_pins; do
      rm "$WORK/tests/$pins.py"
      sed -i -z "s#,\\s*\"tests/$pins.py\"##" "$WORK/pyproject.toml"
      ! grep -q "$pins" "$WORK/pyproject.toml" || { echo "could not drop $pins from the selection" >&2; exit 1; }
    done
  fi
  # MUTATION_MODULES: generate mutants for those modules only
  if [ -n "${MUTATION_MODULES:-}" ]; then
    "$PY" - "$WORK/pyproject.toml" $MUTATION_MODULES <<'PYEOF'
import re, sys
path, modules = sys.argv[1], sys.argv[2:]
text = open(path).read()
files = ", ".join(f'"alphaedit_core/{m}.py"' for m in modules)
text, n = re.subn(r"only_mutate = \[[^\]]*\]", f"only_mutate = [{files}]", text)
assert n == 1, "only_mutate not found in [tool.mutmut]"
open(path, "w").write(text)
PYEOF
  fi
fi
grep -A12 '^\[tool.mutmut\]' "$WORK/pyproject.toml"

# The functions on the algorithm's path (MUTATION_SCOPE=all: every function of the seven modules). Left out by
# default: the statistics cache and input validation (StatsKey, layer_stats, load/save_stats, validate_second_moment,
# check_*, short_corpus_error), the projector's degeneracy check (check_kept, _rule) and the editor's checkpoint
# code (save, load, snapshots, identity, _set_state): they are tested by test_stats.py, test_input_errors.py and
# test_checkpoint.py, which are slow or outside this selection. MUTATION_MODULES narrows to some modules
# (e.g. "solve projection" for a quick look). MUTATION_RESUME=1 continues an interrupted run in the same work folder.
SCOPE=(
  "alphaedit_core.solve.*" "alphaedit_core.keys.*" "alphaedit_core.prompts.*" "alphaedit_core.targets.*"
  "alphaedit_core.projection.x_projector_from_cov__*" "alphaedit_core.projection.xǁProjectorǁ*"
  "alphaedit_core.projection.x_subspace_cosine__*" "alphaedit_core.projection.x__energy__*"
  "alphaedit_core.stats.x_compute_second_moments__*" "alphaedit_core.stats.x_corpus_keys__*"
  "alphaedit_core.stats.x__stream_keys__*" "alphaedit_core.stats.x_token_windows__*"
  "alphaedit_core.stats.x__batches__*"
  "alphaedit_core.editor.xǁEditorǁedit_batch__*" "alphaedit_core.editor.xǁEditorǁ__init____*"
  "alphaedit_core.editor.xǁEditorǁprepare__*" "alphaedit_core.editor.xǁEditorǁrun__*"
  "alphaedit_core.editor.xǁEditorǁrestore__*" "alphaedit_core.editor.xǁEditorǁweight_deltas__*"
)
[ "${MUTATION_SCOPE:-algorithm}" = all ] && SCOPE=("alphaedit_core.*")
if [ -n "${MUTATION_MODULES:-}" ]; then
  kept=()
  for pattern in "${SCOPE[@]}"; do
    for m in $MUTATION_MODULES; do
      case "$pattern" in "alphaedit_core.$m."*|"alphaedit_core.*") kept+=("$pattern") ;; esac
    done
  done
  SCOPE=("${kept[@]}")
fi
printf 'scope: %s\n' "${SCOPE[@]}"
SAMPLE="${MUTATION_SAMPLE:-0.15}"
SEED="${MUTATION_SEED:-0}"

# 4. the run: mutmut generates the mutants and times the tests (a name that matches no mutant stops it right after),
# select_mutants.py draws the sample of the scope, mutmut tests it
cd "$WORK"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0
NICENESS="${MUTATION_NICE:-19}"
start=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "commit $(git -C "$ROOT" rev-parse HEAD) (working tree as copied at $(date -u +%FT%TZ))"
  printf 'scope: %s\n' "${SCOPE[@]}"
  echo "sample: fraction $SAMPLE of each function's mutants, seed $SEED"
  git -C "$ROOT" status --short -- alphaedit_core tests pyproject.toml | sed 's/^/  modified: /'
} > "$OUT/run.log.new"
if [ -n "${MUTATION_RESUME:-}" ] && [ -f "$OUT/run.log" ]; then  # a resumed run keeps the earlier segments' log
  { echo "--- resumed"; cat "$OUT/run.log.new"; } >> "$OUT/run.log"; rm "$OUT/run.log.new"
else
  mv "$OUT/run.log.new" "$OUT/run.log"
fi
TIMEFORMAT="CPU time of mutmut and its workers (%R s wall): %U s user, %S s system"
if [ ! -f mutants/mutmut-stats.json ]; then
  { time nice -n $(( NICENESS - $(nice) )) "$MUTMUT" run generate-and-time-only > "$OUT/mutmut.out" 2>&1 ; } 2>> "$OUT/run.log" || true
  grep -q "nothing matches" "$OUT/mutmut.out" || { cat "$OUT/mutmut.out" >&2; exit 1; }
fi
RESUME_FLAG=()
[ -n "${MUTATION_RESUME:-}" ] && RESUME_FLAG=(--resume)
"$PY" "$ROOT/quality/select_mutants.py" "$SAMPLE" "$SEED" "${RESUME_FLAG[@]}" "${SCOPE[@]}" > "$OUT/sample.txt"
mapfile -t RUN < "$OUT/sample.txt"
echo "mutants to test: ${#RUN[@]}" | tee -a "$OUT/run.log"
if [ "${#RUN[@]}" -gt 0 ]; then
  { time nice -n $(( NICENESS - $(nice) )) "$MUTMUT" run --max-children "$JOBS" "${RUN[@]}" > "$OUT/mutmut.out" 2>&1 ; } 2>> "$OUT/run.log" || true
  tr '\r' '\n' < "$OUT/mutmut.out" | grep -v '^\s*$' | grep -v '^[^a-zA-Z]*alphaedit_core' | tail -n 8 >> "$OUT/run.log"
fi
rm -f "$OUT/mutmut.out"
"$PY" "$ROOT/quality/select_mutants.py" "$SAMPLE" "$SEED" "${SCOPE[@]}" > "$OUT/sample.txt"  # the whole sample
end=$(date +%s)
echo "wall time: $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s, $JOBS workers at niceness $NICENESS, $(nproc --all) cores; load average (1, 5, 15 min) before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/run.log"

# 5. the numbers
"$PY" "$ROOT/quality/summarize.py" "$OUT" "$MODE" --sample "$OUT/sample.txt" "${SCOPE[@]}" | tee -a "$OUT/run.log"
