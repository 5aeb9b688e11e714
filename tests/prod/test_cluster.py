"""The same pipeline on a Spark standalone cluster (a master and two workers on loopback), via spark-submit."""

from __future__ import annotations

import os
import re
import subprocess

from tests.prod.conftest import END, REPO, START, table_rows


def test_spark_submit_on_the_cluster_equals_local_mode(spark, cluster, demo_raw, clean_lake, tmp_path):
    lake = tmp_path / "lake"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "FLOWLAKE_JOBS__SHUFFLE_PARTITIONS": "2"}
    done = subprocess.run(
        ["bash", str(REPO / "scripts/flowlake-submit.sh"), "--master", cluster,
         "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.executor.memory=768m", "--",
         "pipeline", "run", "--raw", str(demo_raw), "--lake", str(lake), "--start", START, "--end", END],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "attributed record(s)" in done.stdout
    assert re.search(r"^quality attribute: [1-9]\d* check\(s\)", done.stdout, re.M), done.stdout[-2000:]
    for table in ("bronze/flows", "silver/ip_ownership", "silver/ip_ownership_conflicts",
                  "silver/flows_attributed", "gold/app_dependencies"):
        assert table_rows(spark, lake / table) == table_rows(spark, clean_lake / table), table
