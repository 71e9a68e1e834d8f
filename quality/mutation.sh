#!/usr/bin/env bash
# Mutation testing of the core modules (solve, projection, stats, keys, targets, editor, prompts) with mutmut.
#
#   bash quality/mutation.sh           # "after": tests/test_core.py, tests/test_stats.py, tests/test_algorithm_pins.py
#   bash quality/mutation.sh before    # "before": the same without tests/test_algorithm_pins.py
#
# Works on a scratch copy (MUTATION_WORKDIR, default /tmp/alphaedit-mutation/<mode>): the repository is never
# touched except quality/results/<mode>/, where the counts (summary.json), the surviving mutants with their diffs
# (survivors.md) and the run's log go. Needs the project's .venv with the dev extra (mutmut). Runs at the lowest
# CPU priority (niceness 19, whatever the caller's) with one thread per worker; MUTATION_JOBS workers (default 2). See quality/README.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MODE="${1:-after}"
case "$MODE" in before|after) ;; *) echo "usage: bash quality/mutation.sh [before|after]" >&2; exit 2 ;; esac
WORK="${MUTATION_WORKDIR:-/tmp/alphaedit-mutation/$MODE}"
OUT="$ROOT/quality/results/$MODE"
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
    rm "$WORK/tests/test_algorithm_pins.py"
    sed -i 's#, "tests/test_algorithm_pins.py"##' "$WORK/pyproject.toml"
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
RUN=("${SCOPE[@]}")
if [ -n "${MUTATION_RESUME:-}" ] && [ -d "$WORK/mutants" ]; then
  # mutmut re-runs every mutant named on its command line: name only the in-scope ones without a result yet
  mapfile -t RUN < <(cd "$WORK" && "$PY" - "${SCOPE[@]}" <<'PYEOF'
import fnmatch, glob, json, sys
for meta in sorted(glob.glob("mutants/alphaedit_core/*.py.meta")):
    for key, code in json.load(open(meta))["exit_code_by_key"].items():
        if code is None and any(fnmatch.fnmatch(key, g) for g in sys.argv[1:]):
            print(key)
PYEOF
)
  echo "resuming: ${#RUN[@]} mutants left"
  [ "${#RUN[@]}" -gt 0 ] || RUN=("none-left")
fi

# 4. the run
cd "$WORK"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0
start=$(date +%s)
{
  echo "commit $(git -C "$ROOT" rev-parse HEAD) (working tree as copied at $(date -u +%FT%TZ))"
  printf 'scope: %s\n' "${SCOPE[@]}"
  git -C "$ROOT" status --short -- alphaedit_core tests pyproject.toml | sed 's/^/  modified: /'
} > "$OUT/run.log"
nice -n $(( 19 - $(nice) )) "$MUTMUT" run --max-children "$JOBS" "${RUN[@]}" 2>&1 | tr '\r' '\n' | grep -v '^\s*$' | tail -n 40 >> "$OUT/run.log" || true
end=$(date +%s)
echo "wall time: $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s, $JOBS workers, $(nproc --all) cores" >> "$OUT/run.log"
echo "CPU time of the run (user, system; this shell's children):" >> "$OUT/run.log"
times | tail -n 1 >> "$OUT/run.log"

# 5. the numbers
"$PY" "$ROOT/quality/summarize.py" "$OUT" "$MODE" "${SCOPE[@]}" | tee -a "$OUT/run.log"
