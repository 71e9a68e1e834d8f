# Sourced by the queue scripts: step NAME COMMAND... runs one step of a queue, appends its output to $LOG and
# reports its start, end, status and minutes (a failed step is reported and the queue goes on).
step() {
  local name="$1"; shift
  echo "== $(date -u +%FT%TZ) start: $name" | tee -a "$LOG"
  local t0=$SECONDS status
  if "$@" >> "$LOG" 2>&1; then status=done; else status="FAILED (exit $?)"; fi
  echo "== $(date -u +%FT%TZ) $status: $name, $(( (SECONDS - t0) / 60 )) min" | tee -a "$LOG"
}
