#!/usr/bin/env bash
# spark-submit flowlake's jobs to a cluster, with the jars `flowlake setup` fetched:
#
#   bash scripts/flowlake-submit.sh --master spark://host:7077 -- pipeline run --raw ... --lake ... --start ... --end ...
#
# Delta's jars go with --jars (shipped to the executors); hadoop-aws and the AWS
# SDK bundle go on the driver and executor class paths (they must load with
# Hadoop's own classes), so on a multi-machine cluster they must sit at the
# same path on every node ($FLOWLAKE_JARS_DIR, default .cache/jars). Executors
# run $PYSPARK_PYTHON (default the project's .venv python): install flowlake there.
# Extra spark-submit options go before `--`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JARS="${FLOWLAKE_JARS_DIR:-$REPO/.cache/jars}"
submit_args=()
while (($#)) && [[ "$1" != "--" ]]; do submit_args+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
(($#)) || { echo "usage: flowlake-submit.sh [spark-submit options] -- pipeline run ..." >&2; exit 2; }
delta=$(ls "$JARS"/delta-*.jar 2>/dev/null | paste -sd, -)
s3=$(ls "$JARS"/hadoop-aws-*.jar "$JARS"/bundle-*.jar 2>/dev/null | paste -sd: -)
[[ -n "$delta" ]] || { echo "error: no Delta jars in $JARS: run \`flowlake setup\`" >&2; exit 2; }
PY="${PYSPARK_PYTHON:-$REPO/.venv/bin/python}"
export PYSPARK_PYTHON="$PY"
SPARK_HOME="${SPARK_HOME:-$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
export SPARK_HOME
extra=()
[[ -n "$s3" ]] && extra+=(--driver-class-path "$s3" --conf "spark.executor.extraClassPath=$s3")
exec "$SPARK_HOME/bin/spark-submit" --jars "$delta" "${extra[@]}" \
    --conf "spark.pyspark.python=$PY" --conf "spark.pyspark.driver.python=$PY" \
    "${submit_args[@]}" "$REPO/jobs/run/cli.py" "$@"
