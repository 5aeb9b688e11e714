#!/usr/bin/env bash
# Airflow in its own virtual environment: its pins clash with the project's
# (SQLAlchemy, pydantic, ...). The DAG calls the project's .venv/bin/flowlake.
#
#   bash scripts/setup-airflow.sh        # idempotent; ~2-4 min the first time on a machine
#
# The venv is built once per machine, Airflow version and Python, under
# ${FLOWLAKE_CACHE_DIR:-~/.cache/flowlake}, and .venv-airflow links to it: a fresh clone
# reuses it (it holds nothing of the checkout). A .venv-airflow that is a real folder
# (an older setup) is used as it is.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
AIRFLOW_VERSION=3.3.2
PY="$(command -v python3.11 || command -v python3)"
PYV="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

if [[ -d .venv-airflow && ! -L .venv-airflow ]]; then
    VENV=.venv-airflow
else
    CACHE="${FLOWLAKE_CACHE_DIR:-$HOME/.cache/flowlake}"
    VENV="$CACHE/venv-airflow-${AIRFLOW_VERSION}-py${PYV}"
    mkdir -p "$CACHE"
    ln -sfn "$VENV" .venv-airflow
fi

# a stamp of the pinned version, written after a good install, skips even the (slow) import check
STAMP="$VENV/.flowlake-airflow-stamp"
if [[ "$(cat "$STAMP" 2>/dev/null)" == "$AIRFLOW_VERSION" ]]; then
    echo "airflow $AIRFLOW_VERSION in $VENV (.venv-airflow)"
    exit 0
fi
(
    flock 9  # two clones setting up at once build the shared venv once
    [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
    if ! "$VENV/bin/python" -c "import airflow, sys; sys.exit(airflow.__version__ != '$AIRFLOW_VERSION')" 2>/dev/null; then
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q "apache-airflow==${AIRFLOW_VERSION}"
    fi
    "$VENV/bin/python" -c "import airflow, sys; sys.exit(airflow.__version__ != '$AIRFLOW_VERSION')"
    echo "$AIRFLOW_VERSION" > "$STAMP"
) 9>"${TMPDIR:-/tmp}/flowlake-airflow-setup.lock"
echo "airflow $AIRFLOW_VERSION in $VENV (.venv-airflow)"
