#!/usr/bin/env bash
# Airflow in its own virtual environment (.venv-airflow): its pins clash with the
# project's (SQLAlchemy, pydantic, ...). The DAG calls the project's .venv/bin/flowlake.
#
#   bash scripts/setup-airflow.sh        # idempotent; ~2-4 min the first time
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
AIRFLOW_VERSION=3.3.2
PY="$(command -v python3.11 || command -v python3)"
[[ -x .venv-airflow/bin/python ]] || "$PY" -m venv .venv-airflow
# A stamp of the pinned version skips even the (slow) import check on later runs.
STAMP=.venv-airflow/.flowlake-airflow-stamp
if [[ "$(cat "$STAMP" 2>/dev/null)" == "$AIRFLOW_VERSION" ]]; then
    echo "airflow $AIRFLOW_VERSION in .venv-airflow (stamp $STAMP)"
    exit 0
fi
if ! .venv-airflow/bin/python -c "import airflow, sys; sys.exit(airflow.__version__ != '$AIRFLOW_VERSION')" 2>/dev/null; then
    .venv-airflow/bin/python -m pip install -q --upgrade pip
    .venv-airflow/bin/python -m pip install -q "apache-airflow==${AIRFLOW_VERSION}"
fi
.venv-airflow/bin/python -c "import airflow, sys; sys.exit(airflow.__version__ != '$AIRFLOW_VERSION')"
echo "$AIRFLOW_VERSION" > "$STAMP"
echo "airflow $AIRFLOW_VERSION in .venv-airflow"
