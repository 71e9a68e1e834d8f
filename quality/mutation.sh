#!/usr/bin/env bash
# Mutation testing of the core modules (solve, projection, stats, keys, targets, editor, prompts) with mutmut.
#
#   bash quality/mutation.sh           # "after": tests/test_core.py, tests/test_stats.py, tests/test_algorithm_pins.py
#   bash quality/mutation.sh before    # "before": the same without tests/test_algorithm_pins.py
#
# Works on a scratch copy (MUTATION_WORKDIR, default /tmp/alphaedit-mutation/<mode>): the repository is never
# touched except quality/results/<mode>/, where the counts (summary.json), the surviving mutants with their diffs
# (survivors.md) and the run's log go. Needs the project's .venv with the dev extra (mutmut). Runs at the lowest
# CPU priority with one thread per worker; MUTATION_JOBS workers (default 2). See quality/README.md.
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

# 1. a fresh copy of the package, the tests and pyproject.toml
rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
tar -C "$ROOT" --exclude=__pycache__ -cf - alphaedit_core tests pyproject.toml | tar -C "$WORK" -xf -
# 2. mutmut skips decorated functions: move @torch.no_grad() after the definitions (same functions at run time)
"$PY" "$ROOT/quality/undecorate.py" "$WORK"/alphaedit_core/{keys,stats,prompts}.py
# 3. "before": the test selection without the algorithm pins
if [ "$MODE" = before ]; then
  rm "$WORK/tests/test_algorithm_pins.py"
  sed -i 's#, "tests/test_algorithm_pins.py"##' "$WORK/pyproject.toml"
fi
grep -A12 '^\[tool.mutmut\]' "$WORK/pyproject.toml"

# 4. the run
cd "$WORK"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0
start=$(date +%s)
{
  echo "commit $(git -C "$ROOT" rev-parse HEAD) (working tree as copied at $(date -u +%FT%TZ))"
  git -C "$ROOT" status --short -- alphaedit_core tests pyproject.toml | sed 's/^/  modified: /'
} > "$OUT/run.log"
nice -n 19 "$MUTMUT" run --max-children "$JOBS" 2>&1 | tr '\r' '\n' | grep -v '^\s*$' | tail -n 40 >> "$OUT/run.log" || true
end=$(date +%s)
echo "wall time: $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s, $JOBS workers, $(nproc) cores" >> "$OUT/run.log"

# 5. the numbers
"$PY" "$ROOT/quality/summarize.py" "$OUT" "$MODE" | tee -a "$OUT/run.log"
