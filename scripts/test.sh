#!/usr/bin/env bash
# Set up everything the tests need (as root: BCC, kernel headers, Delta jars),
# then run the whole suite: jobs on real Spark + Delta, the simulator, the
# capture sidecar on the real kernel, S3 through a real S3 server on loopback.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
bash scripts/setup.sh --all
exec .venv/bin/python -m pytest -q "$@"
