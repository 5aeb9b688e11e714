#!/usr/bin/env bash
# The demo: simulate a fleet, run the main job end to end into a local Delta
# lake, and score its attribution against the simulator's truth.
#   bash scripts/demo.sh [DEMO_DIR]               2 hours of a 32-workload fleet (default ./demo)
#   bash scripts/demo.sh --days N [DEMO_DIR]      N days of a modest fleet with daily and weekly
#                                                 seasonality and trends planted on some links,
#                                                 backfilled a week at a time (default ./demo-history);
#                                                 the report then shows capacity forecasts
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FL="$REPO/.venv/bin/flowlake"
START="2025-06-02T00:00:00Z"
DAYS=""
if [[ "${1:-}" == "--days" ]]; then
  DAYS="${2:?--days needs a number of days, e.g. --days 14}"
  [[ "$DAYS" =~ ^[1-9][0-9]*$ ]] || { echo "error: --days takes a whole number of days, got '$DAYS'" >&2; exit 2; }
  shift 2
fi

if [[ -z "$DAYS" ]]; then
  DEMO="${1:-$REPO/demo}"
  END="2025-06-02T02:00:00Z"
  "$FL" simulate --out "$DEMO/raw" --start "$START" --hours 2 --quiet --overwrite
  "$FL" pipeline run --raw "$DEMO/raw" --lake "$DEMO/lake" --start "$START" --end "$END"
else
  DEMO="${1:-$REPO/demo-history}"
  END="$(date -u -d "$START + $DAYS days" +%Y-%m-%dT%H:%M:%SZ)"
  rm -rf "$DEMO/lake"  # the backfill skips windows a lake already holds: start from an empty one
  "$FL" simulate --out "$DEMO/raw" --profile history --start "$START" --hours "$((DAYS * 24))" --quiet --overwrite
  "$FL" pipeline backfill --raw "$DEMO/raw" --lake "$DEMO/lake" --start "$START" --end "$END" --chunk 7d
fi
"$FL" evaluate --lake "$DEMO/lake" --truth "$DEMO/raw/truth" --out "$DEMO/evaluation.json" --max-misattributed-pct 0
"$FL" report --lake "$DEMO/lake" --out "$DEMO/report.html"
echo "demo lake: $DEMO/lake (Delta tables: bronze/, silver/, gold/); scores: $DEMO/evaluation.json; report: $DEMO/report.html"
