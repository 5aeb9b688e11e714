#!/usr/bin/env bash
# Hourly flowlake for sites without Airflow (see scripts/cron/flowlake.cron).
#
# Runs `flowlake pipeline backfill --chunk 1h` over the last FLOWLAKE_CRON_CATCHUP_HOURS
# whole hours before now: complete hours are skipped, so a missed or failed
# hour is caught up by the next run. No two runs at once (flock on
# FLOWLAKE_CRON_LOCK: a run that finds it taken logs that and exits 0), and
# one log file per run in FLOWLAKE_LOG_DIR.
#
# Environment:
#   FLOWLAKE_RAW_ROOT, FLOWLAKE_LAKE_ROOT   required (folders or s3://bucket/prefix)
#   FLOWLAKE_BIN                            default <repo>/.venv/bin/flowlake
#   FLOWLAKE_LOG_DIR                        default /var/log/flowlake
#   FLOWLAKE_CRON_LOCK                      default $FLOWLAKE_LOG_DIR/cron.lock
#   FLOWLAKE_CRON_CATCHUP_HOURS             default 6
#   FLOWLAKE_CRON_NOW                       ISO-8601 time to take as now (tests, replays)
# Exit status: flowlake's (0 ok, 1 a window failed, 3 quality gate, 4 lake locked).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${FLOWLAKE_RAW_ROOT:?set FLOWLAKE_RAW_ROOT to the raw root (folder or s3://bucket/prefix)}"
: "${FLOWLAKE_LAKE_ROOT:?set FLOWLAKE_LAKE_ROOT to the lake root (folder or s3://bucket/prefix)}"
BIN="${FLOWLAKE_BIN:-$REPO/.venv/bin/flowlake}"
LOG_DIR="${FLOWLAKE_LOG_DIR:-/var/log/flowlake}"
LOCK="${FLOWLAKE_CRON_LOCK:-$LOG_DIR/cron.lock}"
CATCHUP="${FLOWLAKE_CRON_CATCHUP_HOURS:-6}"
mkdir -p "$LOG_DIR"

now_s=$(date -u -d "${FLOWLAKE_CRON_NOW:-now}" +%s) || { echo "bad FLOWLAKE_CRON_NOW" >&2; exit 2; }
end_s=$(( now_s / 3600 * 3600 ))
start_s=$(( end_s - CATCHUP * 3600 ))
stamp=$(date -u +%Y%m%dT%H%M%SZ)
LOG="$LOG_DIR/flowlake-$stamp-$$.log"

exec 9>"$LOCK"
if ! flock -n 9; then
    echo "$(date -u +%FT%TZ) another flowlake cron run holds $LOCK: not starting" >>"$LOG"
    exit 0
fi
{
    echo "$(date -u +%FT%TZ) flowlake cron: backfill $(date -u -d @$start_s +%FT%TZ) .. $(date -u -d @$end_s +%FT%TZ)"
    cd "$REPO"
    "$BIN" pipeline backfill --raw "$FLOWLAKE_RAW_ROOT" --lake "$FLOWLAKE_LAKE_ROOT" \
        --start "$(date -u -d @$start_s +%FT%TZ)" --end "$(date -u -d @$end_s +%FT%TZ)" --chunk 1h \
        --log-file "$LOG"
    rc=$?
    echo "$(date -u +%FT%TZ) exit $rc"
    exit $rc
} >>"$LOG" 2>&1
