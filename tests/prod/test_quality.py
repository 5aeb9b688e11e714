"""The quality gates: suites catch bad rows (with counts and examples); the gate stops publication."""

from __future__ import annotations

import re

import pytest
from pyspark.sql import functions as F

from tests.prod.conftest import END_MS, START_MS


def _rows(spark):
    from flowlake.contracts import RAW_FLOW_DDL

    good = ("i-1", "w", "r", "az", START_MS, START_MS + 60_000, "10.0.0.1", 0, "10.0.0.2", 443, "outbound", "tcp",
            START_MS, 1, 1, 100, 200, 3, 4, 0, 10)
    bad_ip = good[:6] + ("10.0.0.300",) + good[7:]
    negative = good[:15] + (-5,) + good[16:]
    backwards = good[:5] + (START_MS,) + good[6:]
    rows = [good, bad_ip, negative, backwards]
    return spark.createDataFrame([r + (f"f{i}",) for i, r in enumerate(rows)], RAW_FLOW_DDL + ", source_file string")


def _row_key_ddl() -> str:
    """DDL of a bronze/silver row's key (suites.ROW_KEY: source_file and the record key)."""
    from flowlake.jobs.quality.suites import ROW_KEY

    return ", ".join(f"{c} {'bigint' if c.endswith('_ms') else 'int' if c.endswith('port') else 'string'}"
                     for c in ROW_KEY)


def test_bronze_suite_counts_and_shows_each_failure(spark, quality_config):
    """Each check counts failing rows; the IP checks run once per distinct address and are joined back, so
    (edge) a non-canonical IPv6 address on two rows fails two rows, and again where it is a local_ip."""
    from flowlake.jobs.quality import gate as g
    from flowlake.jobs.quality import suites as q

    df = _rows(spark)
    loud = F.lit("FD00:0::2")
    good = df.where("source_file = 'f0'")
    df = df.unionByName(good.unionByName(good).withColumn("remote_ip", loud)).unionByName(good.withColumn("local_ip", loud))
    report = g.run_checks(q.bronze_suite(df, df, start_ms=START_MS, end_ms=END_MS, lateness_ms=0),
                          config=quality_config, run_id="t1", stage="ownership")
    by = {r.name: r for r in report.results}
    assert by["bronze.local_ip_valid"].unexpected_count == 2
    assert sorted(by["bronze.local_ip_valid"].examples) == ["10.0.0.300", "FD00:0::2"]
    assert (by["bronze.remote_ip_valid"].unexpected_count, by["bronze.remote_ip_valid"].element_count) == (2, 7)
    assert by["bronze.remote_ip_valid"].examples == ["FD00:0::2", "FD00:0::2"]
    assert by["bronze.counters_non_negative"].unexpected_count == 1
    assert by["bronze.counters_non_negative"].examples == ["bytes_sent"]
    assert by["bronze.interval_end_after_start"].unexpected_count == 1
    for ok in ("bronze.schema", "bronze.not_null", "bronze.timestamps_in_window"):
        assert by[ok].success, by[ok].line()
    assert {r.name for r in report.blocking_failures} == {
        "bronze.local_ip_valid", "bronze.remote_ip_valid", "bronze.counters_non_negative",
        "bronze.interval_end_after_start"}
    assert "1 of 7 row(s) fail" in report.text()
    assert sorted(q.non_canonical_ips(df, ["local_ip", "remote_ip"]).collect()) == [("10.0.0.300",), ("FD00:0::2",)]


def test_overlapping_ranges_are_found(spark, quality_config):
    from flowlake.jobs.quality import gate as g
    from flowlake.jobs.quality import suites as q
    from flowlake.jobs.silver.ownership import OWNERSHIP_DDL

    ranges = spark.createDataFrame([
        ("10.0.0.1", "a", 0, 100, "heartbeat", None, None, None, None),
        ("10.0.0.1", "b", 50, 150, "heartbeat", None, None, None, None),   # overlaps a
        ("10.0.0.1", "c", 60, None, "event", None, None, None, None),      # other source: fine
        ("10.0.0.2", "a", 0, 100, "heartbeat", None, None, None, None),
        ("10.0.0.2", "b", 100, None, "heartbeat", None, None, None, None),  # touches, no overlap
    ], OWNERSHIP_DDL)
    report = g.run_checks(q.ownership_suite(ranges), config=quality_config, run_id="t2", stage="ownership")
    (r,) = report.results
    assert not r.success and r.unexpected_count == 1
    assert r.examples[0]["workload"] == "b" and r.examples[0]["previous_to_ms"] == 100


def test_warning_level_check_only_reports(spark, quality_config, tmp_path):
    from flowlake.jobs.quality import gate as g
    from flowlake.jobs.quality import suites as q

    silver = spark.createDataFrame([("f", "i", 1, "10.0.0.1", 0, "10.0.0.2", 80, "outbound", "unattributed")],
                                   _row_key_ddl() + ", remote_attribution string")
    checks = q.silver_suite(silver, silver.drop("remote_attribution"), min_attributed_share=0.5)
    with pytest.raises(g.QualityGateError, match="silver.attributed_share"):
        g.gate(checks, config=quality_config, run_id="w1", stage="attribute", lake_root=str(tmp_path))
    lenient = quality_config.model_copy(update={"severity": {"silver.attributed_share": "warning"}})
    report = g.gate(checks, config=lenient, run_id="w2", stage="attribute", lake_root=str(tmp_path))
    assert [w.name for w in report.warnings] == ["silver.attributed_share"] and not report.blocking_failures
    assert "[warning] silver.attributed_share" in (tmp_path / "_quality/w2/attribute.txt").read_text()


def test_a_record_twice_from_two_files_fails_the_silver_gate(spark, quality_config):
    """Issue 14: a re-upload under a new key gives the same record another source_file; the gate keys on
    the record (contracts RECORD_KEY), not on the file."""
    from flowlake.jobs.quality import gate as g
    from flowlake.jobs.quality import suites as q

    ddl = _row_key_ddl() + ", remote_attribution string"
    record = ("i", 1, "10.0.0.1", 0, "10.0.0.2", 80, "outbound", "svc")
    other = ("i", 1, "10.0.0.1", 0, "10.0.0.2", 81, "outbound", "svc")  # edge: differs in one key column
    silver = spark.createDataFrame([("seq0", *record), ("seq1", *record), ("seq0", *other)], ddl)
    report = g.run_checks(q.silver_suite(silver, silver.drop("remote_attribution"), min_attributed_share=0.0),
                          config=quality_config, run_id="d1", stage="attribute")
    assert [r.name for r in report.blocking_failures] == ["silver.no_duplicate_keys"]
    clean = silver.where("source_file != 'seq1'")
    report = g.run_checks(q.silver_suite(clean, clean.drop("remote_attribution"), min_attributed_share=0.0),
                          config=quality_config, run_id="d2", stage="attribute")
    assert not report.blocking_failures


def test_blocking_failure_publishes_nothing_and_exits_non_zero_with_the_report(demo_raw, tmp_path):
    """An unreachable attributed share stops the run before silver is written."""
    import json
    import os
    import subprocess

    from tests.prod.conftest import BIN, END, REPO, START

    lake = tmp_path / "lake"
    done = subprocess.run(
        [str(BIN), "pipeline", "run", "--raw", str(demo_raw), "--lake", str(lake), "--start", START,
         "--end", END, "--run-id", "strict-1"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "FLOWLAKE_QUALITY__MIN_ATTRIBUTED_SHARE": "1.0"})
    assert done.returncode == 3, done.stderr[-3000:]
    assert "quality gate failed at attribute (silver.attributed_share)" in done.stderr
    assert "Traceback" not in done.stderr
    text = (lake / "_quality/strict-1/attribute.txt").read_text()
    assert "[FAILED] silver.attributed_share" in text and "observed" in text
    result = {r["name"]: r for r in json.loads((lake / "_quality/strict-1/attribute.json").read_text())["results"]}
    assert result["silver.attributed_share"]["success"] is False
    assert (lake / "bronze/flows/_delta_log").is_dir()          # ingest is done (and kept) ...
    assert (lake / "silver/ip_ownership/_delta_log").is_dir()
    assert not (lake / "silver/flows_attributed").exists()       # ... but silver and gold are not published
    assert not (lake / "gold/app_dependencies").exists()
    assert not (lake / "_meta/runs").exists()                    # the window is not complete
    assert not (lake / "_meta/writer.lock").exists()
    # the terminal holds the run's own lines; Spark's log goes to the run's log file under the lake
    assert not re.search(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (WARN|ERROR|INFO) ", done.stderr + done.stdout, re.M)
    log = (lake / "_logs/strict-1.log").read_text()
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} WARN ", log, re.M), log[:2000]


def test_a_bronze_row_silver_lacks_fails_the_silver_gate_and_names_it(spark, quality_config):
    """The bronze rows of the span against silver, in one pass with the duplicate check: a record silver
    lacks, and (edge) a record silver holds only from another file, both fail `silver.every_bronze_row`;
    the examples name the record and the file."""
    from flowlake.jobs.quality import gate as g
    from flowlake.jobs.quality import suites as q

    ddl = _row_key_ddl()
    kept = ("i", 1, "10.0.0.1", 0, "10.0.0.2", 80, "outbound")
    lost = ("i", 1, "10.0.0.1", 0, "10.0.0.2", 81, "outbound")
    moved = ("i", 2, "fd00::1", 0, "fd00::2", 80, "inbound")  # edge: IPv6, silver has it from another file
    bronze = spark.createDataFrame([("seq0", *kept), ("seq0", *lost), ("seq1", *moved)], ddl)
    silver = spark.createDataFrame([("seq0", *kept), ("seq2", *moved)], ddl).withColumn("remote_attribution", F.lit("svc"))
    report = g.run_checks(q.silver_suite(silver, bronze, min_attributed_share=0.0),
                          config=quality_config, run_id="m1", stage="attribute")
    assert [r.name for r in report.blocking_failures] == ["silver.every_bronze_row"]
    failed = report.blocking_failures[0]
    assert failed.unexpected_count == 2
    assert sorted(failed.examples) == ["(i, 1, 10.0.0.1, 0, 10.0.0.2, 81, outbound): not in silver from seq0",
                                       "(i, 2, fd00::1, 0, fd00::2, 80, inbound): not in silver from seq1"]
    whole = silver.unionByName(spark.createDataFrame([("seq0", *lost)], ddl).withColumn("remote_attribution", F.lit("svc")))
    report = g.run_checks(q.silver_suite(whole, bronze.where("source_file != 'seq1'"), min_attributed_share=0.0),
                          config=quality_config, run_id="m2", stage="attribute")
    assert not report.blocking_failures


def test_the_silver_record_check_skips_its_shuffle_only_when_the_digests_prove_it_clean(spark, quality_config):
    """Same rows once: the digests prove it and the exact comparison is not needed. Edge: bronze itself
    holds one record from two files and silver both copies; the row digests agree, the key count does not,
    so the exact check runs and names the duplicate. Edge: the same rows with one key column changed."""
    from flowlake.jobs.quality import gate as g
    from flowlake.jobs.quality import suites as q

    ddl = _row_key_ddl()
    record = ("i", 1, "10.0.0.1", 0, "10.0.0.2", 80, "outbound")
    rows = [("seq0", *record), ("seq0", "i", 1, "fd00::1", 0, "fd00::2", 443, "inbound")]
    bronze = spark.createDataFrame(rows, ddl)
    silver = spark.createDataFrame(list(reversed(rows)), ddl).withColumn("remote_attribution", F.lit("svc"))
    assert q.same_rows_once(silver, bronze)
    changed = spark.createDataFrame([rows[0], ("seq0", "i", 1, "fd00::1", 0, "fd00::2", 444, "inbound")], ddl)
    assert not q.same_rows_once(changed.withColumn("remote_attribution", F.lit("svc")), bronze)
    twice = spark.createDataFrame(rows + [("seq1", *record)], ddl)
    assert not q.same_rows_once(twice.withColumn("remote_attribution", F.lit("svc")), twice)
    report = g.run_checks(q.silver_suite(twice.withColumn("remote_attribution", F.lit("svc")), twice,
                                         min_attributed_share=0.0), config=quality_config, run_id="d3", stage="attribute")
    assert [r.name for r in report.blocking_failures] == ["silver.no_duplicate_keys"]


def test_a_clean_bronze_window_is_validated_without_its_rows_and_reports_how_many_were_checked(spark, quality_config):
    """No row fails: GX gets no rows to compute metrics over, and each row check still reports the rows
    checked. Edge: one failing row (a non-canonical IPv6 address) brings every row back."""
    from flowlake.jobs.quality import gate as g
    from flowlake.jobs.quality import suites as q

    clean = _rows(spark).where("source_file = 'f0'")
    clean = clean.unionByName(clean.withColumn("remote_ip", F.lit("fd00::2")))
    checks = q.bronze_suite(clean, clean, start_ms=START_MS, end_ms=END_MS, lateness_ms=0)
    row_checks = [c for c in checks if c.rows_checked is not None]
    assert {c.name for c in row_checks} == {"bronze.not_null", "bronze.local_ip_valid", "bronze.remote_ip_valid",
                                            "bronze.counters_non_negative", "bronze.interval_end_after_start"}
    assert all(c.data.count() == 0 for c in row_checks)
    report = g.run_checks(checks, config=quality_config, run_id="c1", stage="ownership")
    assert not report.blocking_failures
    assert {r.element_count for r in report.results if r.name in {c.name for c in row_checks}} == {2}
    loud = clean.unionByName(clean.limit(1).withColumn("local_ip", F.lit("FD00::2")))
    report = g.run_checks(q.bronze_suite(loud, loud, start_ms=START_MS, end_ms=END_MS, lateness_ms=0),
                          config=quality_config, run_id="c2", stage="ownership")
    failed = {r.name: r for r in report.blocking_failures}
    assert list(failed) == ["bronze.local_ip_valid"]
    assert (failed["bronze.local_ip_valid"].unexpected_count, failed["bronze.local_ip_valid"].element_count) == (1, 3)
