#!/usr/bin/env bash
# Set flowlake up on a fresh Debian machine (idempotent; run as root for --capture).
#
#   bash scripts/setup.sh            # jobs + simulator: Java/Maven, .venv, Delta jars
#   bash scripts/setup.sh --all      # ... plus the test tools (Chromium for the report test), the capture sidecar's
#                                    #     kernel dependencies (BCC, headers, tracefs)
#                                    #     and Airflow (in .venv-airflow)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
ALL=0
for arg in "$@"; do
    case "$arg" in
        --all) ALL=1 ;;
        *) echo "usage: bash scripts/setup.sh [--all]" >&2; exit 2 ;;
    esac
done

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if ! command -v python3.11 >/dev/null 2>&1 && ! python3 -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    need_apt+=(python3.11 python3.11-venv)
fi
if ((${#need_apt[@]})); then
    echo "installing from Debian: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY="$(command -v python3.11 || command -v python3)"
if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
extras="quality,insight"
((ALL)) && extras="quality,insight,dev"
# pip runs only when pyproject.toml (the pins) or the extras changed since the last
# install into this venv (the install is editable: code changes need none).
pip_stamp=".venv/.flowlake-pip-stamp"
want="$( { sha256sum pyproject.toml; echo "extras=${extras}"; .venv/bin/python -V; } | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$pip_stamp" 2>/dev/null)" != "$want" ]]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[${extras}]"
    echo "$want" > "$pip_stamp"
else
    echo "pip: .venv matches pyproject.toml [${extras}] (stamp $pip_stamp), nothing to install"
fi

# The JVM side (Delta Lake jars) from Maven Central, cached in .cache/jars; Maven runs
# only when jars/pom.xml changed since the jars were fetched.
jar_stamp=".cache/jars/.pom-stamp"
want="$(sha256sum jars/pom.xml | cut -d' ' -f1)"
if [[ "$(cat "$jar_stamp" 2>/dev/null)" != "$want" ]]; then
    .venv/bin/flowlake setup >/dev/null
    echo "$want" > "$jar_stamp"
fi
echo "jars: $(ls .cache/jars | tr '\n' ' ')"

if ((ALL)); then
    # headless Chromium for the report's browser test (tests/report/test_browser.py)
    if ! command -v chromium >/dev/null 2>&1; then
        echo "installing from Debian: chromium"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
    fi
    bash scripts/setup-capture.sh
    bash scripts/setup-airflow.sh   # Airflow in its own .venv-airflow (its pins clash with ours)
fi
echo "setup done: .venv/bin/flowlake is ready"
