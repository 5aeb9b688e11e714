#!/usr/bin/env bash
# The demo: simulate a fleet, run the main job end to end into a local Delta
# lake, and score its attribution against the simulator's truth.
#   bash scripts/demo.sh [DEMO_DIR]      (default ./demo)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO="${1:-$REPO/demo}"
FL="$REPO/.venv/bin/flowlake"
START="2025-06-02T00:00:00Z"
END="2025-06-02T02:00:00Z"

"$FL" simulate --out "$DEMO/raw" --start "$START" --hours 2 --quiet --overwrite
"$FL" pipeline run --raw "$DEMO/raw" --lake "$DEMO/lake" --start "$START" --end "$END"
"$FL" evaluate --lake "$DEMO/lake" --truth "$DEMO/raw/truth" --out "$DEMO/evaluation.json" --max-misattributed-pct 0
"$FL" report --lake "$DEMO/lake" --out "$DEMO/report.html"
echo "demo lake: $DEMO/lake (Delta tables: bronze/, silver/, gold/); scores: $DEMO/evaluation.json; report: $DEMO/report.html"
