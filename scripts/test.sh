#!/usr/bin/env bash
# Set up everything the tests need (as root: BCC, kernel headers, Delta and S3
# jars, Airflow's venv), run the README demo and execute the analyst notebooks
# against its lake, then run the whole suite: jobs on real Spark + Delta, the
# simulator, the capture sidecar on the real kernel, S3 through a real S3
# server on loopback, a standalone Spark cluster, Airflow.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/setup.sh --all

DEMO="$(mktemp -d /tmp/flowlake-demo.XXXXXX)"
trap 'rm -rf "$DEMO"' EXIT
bash scripts/demo.sh "$DEMO"
FLOWLAKE_INSIGHT__LAKE="$DEMO/lake" .venv/bin/python -m pytest -q -p no:cacheprovider --nbmake notebooks/

# two workers (tests/conftest.py groups the tests that share a lake or the kernel on one worker)
.venv/bin/python -m pytest -q --durations=40 -n 2 --dist loadgroup --no-loadscope-reorder "$@"
