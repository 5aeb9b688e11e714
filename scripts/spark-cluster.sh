#!/usr/bin/env bash
# A Spark standalone cluster on loopback (a master and two workers) for tests and demos.
#
#   bash scripts/spark-cluster.sh start [--port 7077] [--dir DIR]   # prints the master URL
#   bash scripts/spark-cluster.sh stop  [--dir DIR]
#
# Uses the Spark inside the project's pyspark (.venv). Each worker offers 1 core
# and 1 GiB; logs and pids live in DIR (default $FLOWLAKE_CLUSTER_DIR or
# /tmp/flowlake-spark-cluster). Only loopback addresses are bound.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-}"; shift || true
PORT=7077
DIR="${FLOWLAKE_CLUSTER_DIR:-/tmp/flowlake-spark-cluster}"
while (($#)); do
    case "$1" in
        --port) PORT="$2"; shift 2 ;;
        --dir) DIR="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
PY="$REPO/.venv/bin/python"
SPARK_HOME="$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
export SPARK_HOME SPARK_LOCAL_IP=127.0.0.1 SPARK_MASTER_HOST=127.0.0.1
export PYSPARK_PYTHON="$PY"
CLASS="$SPARK_HOME/bin/spark-class"

wait_port() {  # host port seconds
    "$PY" - "$1" "$2" "$3" <<'PYEOF'
import socket, sys, time
host, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.monotonic() + limit
while time.monotonic() < end:
    try:
        socket.create_connection((host, port), timeout=0.5).close(); sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(f"nothing listens on {host}:{port} after {limit:.0f}s")
PYEOF
}

case "$cmd" in
    start)
        mkdir -p "$DIR"
        if [[ -f "$DIR/master.pid" ]] && kill -0 "$(cat "$DIR/master.pid")" 2>/dev/null; then
            echo "error: a cluster from $DIR is running (pid $(cat "$DIR/master.pid")): stop it first" >&2; exit 1
        fi
        WEBUI=$((PORT + 1000))
        nohup "$CLASS" org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$PORT" \
            --webui-port "$WEBUI" >"$DIR/master.log" 2>&1 &
        echo $! >"$DIR/master.pid"
        wait_port 127.0.0.1 "$PORT" 120
        for i in 1 2; do
            nohup "$CLASS" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --cores 1 --memory 1g \
                --webui-port $((WEBUI + i)) --work-dir "$DIR/work$i" "spark://127.0.0.1:$PORT" \
                >"$DIR/worker$i.log" 2>&1 &
            echo $! >"$DIR/worker$i.pid"
        done
        # both workers registered: the master's log says so
        for _ in $(seq 1 600); do
            n=$(grep -c "Registering worker" "$DIR/master.log" || true)
            ((n >= 2)) && break
            sleep 0.2
        done
        ((n >= 2)) || { echo "error: only $n of 2 workers registered; see $DIR/*.log" >&2; exit 1; }
        echo "spark://127.0.0.1:$PORT"
        ;;
    stop)
        for name in worker1 worker2 master; do
            if [[ -f "$DIR/$name.pid" ]]; then
                pid="$(cat "$DIR/$name.pid")"
                kill "$pid" 2>/dev/null || true
                for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
                kill -9 "$pid" 2>/dev/null || true
                rm -f "$DIR/$name.pid"
            fi
        done
        ;;
    *) echo "usage: bash scripts/spark-cluster.sh start|stop [--port N] [--dir DIR]" >&2; exit 2 ;;
esac
