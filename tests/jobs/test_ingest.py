"""Ingest: exactly once per file, bad files quarantined with the reason, the rest published."""

import gzip
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from flowlake.contracts import IP_EVENT_SCHEMA, RAW_FLOW_SCHEMA, raw_flow_key
from flowlake.jobs.bronze import ingest
from tests import lakehelp as lk
from tests.jobs.helpers import T0, event, flow

NOW = T0 + 3_600_000


def write_flows(root, rows, *, key=None, seq=0, schema=RAW_FLOW_SCHEMA, instance="i-a", rows_instance=None):
    """A raw flow file; its rows carry the key's instance unless ``rows_instance`` says otherwise."""
    rows = [dict(r, instance_id=rows_instance or instance) for r in rows]
    key = key or raw_flow_key(instance_id=instance, first_interval_start_ms=rows[0]["interval_start_ms"], seq=seq)
    path = os.path.join(root, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, compression="zstd")
    return key


def write_raw_bytes(root, key, data: bytes):
    path = os.path.join(root, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return key


def run_ingest(spark, raw, lake_root, kind=ingest.KIND_FLOWS):
    lake = lk.Lake(lake_root)
    if kind == ingest.KIND_FLOWS:
        keys = ingest.new_flow_keys(spark, raw_root=raw, lake=lake, start_ms=T0, end_ms=T0 + 3_600_000, lookback_hours=1)
    else:
        keys = ingest.new_event_keys(spark, raw_root=raw, lake=lake)
    return ingest.ingest(spark, kind=kind, raw_root=raw, lake=lake, keys=keys, run_id="r1", now_ms=NOW)


@pytest.fixture
def dirs(tmp_path):
    return str(tmp_path / "raw"), str(tmp_path / "lake")


def test_good_files_are_ingested_exactly_once(spark, dirs):
    raw, lake = dirs
    write_flows(raw, [flow(), flow(remote_ip="::FFFF:10.0.0.9")], seq=0)
    write_flows(raw, [flow(remote_port=80)], seq=1)
    first = run_ingest(spark, raw, lake)
    second = run_ingest(spark, raw, lake)
    assert (first.files_ingested, first.rows_ingested, second.files_ingested) == (2, 3, 0)
    bronze = lk.read(spark, lk.Lake(lake).bronze_flows)
    assert bronze.count() == 3
    # IPv4-mapped IPv6 text becomes its IPv4 form; every row says where it came from
    assert {r.remote_ip for r in bronze.collect()} == {"10.0.0.2", "10.0.0.9"}
    assert all(r.source_file.startswith(raw) for r in bronze.collect())


BAD_FILES = {
    "truncated": lambda raw: write_raw_bytes(
        raw, raw_flow_key(instance_id="i-t", first_interval_start_ms=T0, seq=0),
        _parquet_bytes([flow()])[:-40]),
    "empty": lambda raw: write_raw_bytes(raw, raw_flow_key(instance_id="i-e", first_interval_start_ms=T0, seq=0), b""),
    "not_parquet": lambda raw: write_raw_bytes(
        raw, raw_flow_key(instance_id="i-n", first_interval_start_ms=T0, seq=0), b"hello, not parquet"),
    "unknown_schema_version": lambda raw: write_flows(
        raw, [flow()], schema=RAW_FLOW_SCHEMA.with_metadata({b"flowlake.schema_version": b"7"}), instance="i-v"),
    "future_timestamp": lambda raw: write_flows(
        raw, [flow(interval_start_ms=NOW + 86_400_000 - 60_000)], instance="i-f",
        key=raw_flow_key(instance_id="i-f", first_interval_start_ms=T0, seq=0)),
    "negative_counter": lambda raw: write_flows(raw, [flow(), flow(bytes_sent=-5)], instance="i-c"),
    "end_before_start": lambda raw: write_flows(raw, [flow(interval_end_ms=T0 - 1)], instance="i-b"),
    "unparseable_ip": lambda raw: write_flows(raw, [flow(remote_ip="10.0.0.300")], instance="i-u"),
    "key_escapes_prefix": lambda raw: write_raw_bytes(
        raw, "flows/v1/dt=2026-01-01/hr=00/instance=x/../../../../escape/1-0.parquet", _parquet_bytes([flow()])),
    "wrong_column_type": lambda raw: write_flows(
        raw, [dict(flow(), local_port=1)],
        schema=RAW_FLOW_SCHEMA.set(RAW_FLOW_SCHEMA.get_field_index("local_port"), pa.field("local_port", pa.int64())),
        instance="i-w"),
}
REASONS = {
    "truncated": "not a readable Parquet", "empty": "not a readable Parquet", "not_parquet": "not a readable Parquet",
    "unknown_schema_version": "schema version 7", "future_timestamp": "in the future",
    "negative_counter": "negative counter", "end_before_start": "interval_end_ms not after",
    "unparseable_ip": "unparseable remote_ip", "key_escapes_prefix": "key does not follow",
    "wrong_column_type": "column local_port is int64",
}


def _parquet_bytes(rows):
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=RAW_FLOW_SCHEMA), buf)
    return buf.getvalue()


def test_bad_files_are_quarantined_with_the_reason_and_the_rest_published(spark, dirs):
    raw, lake_root = dirs
    write_flows(raw, [flow(), flow(local_port=8080)], instance="i-good")
    for make in BAD_FILES.values():
        make(raw)
    # the escaping key is only seen when listing its folder; list the whole prefix here
    result = run_ingest(spark, raw, lake_root)
    lake = lk.Lake(lake_root)
    assert (result.files_ingested, result.rows_ingested) == (1, 2)
    by_case = {}
    for q in result.quarantined:
        case = next(c for c, r in REASONS.items() if r in q["reason"] and c not in by_case)
        by_case[case] = q
        assert os.path.exists(q["quarantine_path"]), q
    expected = set(BAD_FILES) - {"key_escapes_prefix"}  # outside dt=2026-01-01: see the next test
    assert expected <= set(by_case), result.summary()
    logged = {r.source_file: r.reason for r in lk.read(spark, lake.quarantine_files).collect()}
    assert set(logged) == {q["source_file"] for q in result.quarantined}
    assert lk.read(spark, lake.bronze_flows).count() == 2


def test_a_key_escaping_the_prefix_is_quarantined_not_followed(spark, dirs):
    raw, lake_root = dirs
    keys = [BAD_FILES["key_escapes_prefix"](raw)]
    lake = lk.Lake(lake_root)
    result = ingest.ingest(spark, kind=ingest.KIND_FLOWS, raw_root=raw, lake=lake, keys=keys, run_id="r1", now_ms=NOW)
    assert result.files_ingested == 0 and "key does not follow" in result.quarantined[0]["reason"]


def test_events_parquet_and_jsonl_gz_with_a_malformed_line(spark, dirs):
    raw, lake_root = dirs
    day = "ip_events/v1/dt=2026-01-01"
    path = os.path.join(raw, day)
    os.makedirs(path)
    pq.write_table(pa.Table.from_pylist([event()], schema=IP_EVENT_SCHEMA), os.path.join(path, "a.parquet"))
    with gzip.open(os.path.join(path, "b.jsonl.gz"), "wt") as f:
        f.write(json.dumps(event(ip="2600:1F18::1")) + "\n")
    with gzip.open(os.path.join(path, "c.jsonl.gz"), "wt") as f:
        f.write(json.dumps(event()) + "\n{not json\n")
    result = run_ingest(spark, raw, lake_root, kind=ingest.KIND_EVENTS)
    assert (result.files_ingested, result.rows_ingested) == (2, 2)
    assert len(result.quarantined) == 1 and result.quarantined[0]["source_file"].endswith("c.jsonl.gz")
    ips = {r.ip for r in lk.read(spark, lk.Lake(lake_root).bronze_ip_events).collect()}
    assert ips == {"10.0.0.2", "2600:1f18::1"}


def test_run_killed_after_bronze_before_the_log_does_not_duplicate(spark, dirs):
    raw, lake_root = dirs
    write_flows(raw, [flow(), flow(remote_port=1)])
    lake = lk.Lake(lake_root)
    run_ingest(spark, raw, lake_root)
    # simulate the crash: the files log never got its entry
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, lake.ingested_files).delete("true")
    again = run_ingest(spark, raw, lake_root)
    # honest counts: the file is logged as processed, but this run appended nothing
    assert (again.files_ingested, again.rows_ingested, again.files_recovered) == (0, 0, 1), again.summary()
    assert "not counted again" in again.summary()
    assert lk.read(spark, lake.bronze_flows).count() == 2
    logged = lk.read(spark, lake.ingested_files).collect()
    assert [(r.status, r.rows) for r in logged] == [("ingested", 0)]
    assert "earlier run that did not finish" in logged[0].reason


def _bronze_keys(spark, lake_root):
    from flowlake.contracts import RECORD_KEY

    return lk.read(spark, lk.Lake(lake_root).bronze_flows).select(*RECORD_KEY, "source_file").collect()


def test_rows_naming_another_instance_than_the_key_are_quarantined(spark, dirs):
    raw, lake_root = dirs
    write_flows(raw, [flow()], instance="i-good")
    copied = write_flows(raw, [flow(remote_port=1)], instance="i-other", rows_instance="i-good")  # copied across
    result = run_ingest(spark, raw, lake_root)
    assert (result.files_ingested, result.rows_ingested) == (1, 1)
    [q] = result.quarantined
    assert q["source_file"].endswith(copied)
    assert "instance_id differs from the key's instance= folder (i-good vs i-other)" in q["reason"]
    assert os.path.exists(q["quarantine_path"]) and q["copy_error"] is None


def test_instance_mismatch_is_found_per_row_by_the_reader_after_the_rows_own_faults(spark, tmp_path):
    """A file under instance=i-a whose rows name i-a, i-b, and i-b with a negative counter: the reader
    marks the two i-b rows (``_row_reason``), and a row's own fault is the reason it is bad before that."""
    from flowlake.jobs.bronze.rawfiles import KIND_FLOWS, read_keys, reader_ddl
    from flowlake.jobs.bronze.validate import validate_flows

    raw = str(tmp_path / "raw")
    rows = [flow(instance_id="i-a"), flow(instance_id="i-b", remote_port=1),
            flow(instance_id="i-b", remote_port=2, bytes_sent=-1)]
    key = raw_flow_key(instance_id="i-a", first_interval_start_ms=T0, seq=0)
    os.makedirs(os.path.dirname(os.path.join(raw, key)), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=RAW_FLOW_SCHEMA), os.path.join(raw, key))
    got = pa.Table.from_batches(list(read_keys([key], raw_root=raw, kind=KIND_FLOWS)))
    mismatch = "instance_id differs from the key's instance= folder (i-b vs i-a)"
    assert got.column("_row_reason").to_pylist() == [None, mismatch, mismatch]
    validated = validate_flows(spark.createDataFrame(got.to_pandas(), reader_ddl(KIND_FLOWS)),
                               now_ms=T0 + 3_600_000, max_future_skew_ms=3_600_000)
    assert [r["_reason"] for r in validated.orderBy("remote_port").collect()] == [mismatch, "negative counter", None]


def test_a_reupload_under_a_new_seq_is_quarantined_as_a_duplicate(spark, dirs):
    """The sidecar uploaded seq 0, crashed before cleaning its spool, and uploads the same rows as seq 1."""
    raw, lake_root = dirs
    rows = [flow(), flow(remote_port=1), flow(remote_port=2)]
    write_flows(raw, rows, seq=0)
    first = run_ingest(spark, raw, lake_root)
    second_key = write_flows(raw, rows, seq=1)
    again = run_ingest(spark, raw, lake_root)
    assert (first.rows_ingested, again.files_ingested, again.rows_ingested) == (3, 0, 0)
    [q] = again.quarantined
    assert q["source_file"].endswith(second_key)
    assert q["reason"].startswith("duplicate: all 3 record(s) are already in bronze")
    assert len(_bronze_keys(spark, lake_root)) == 3
    logged = {r.source_file: r.reason for r in lk.read(spark, lk.Lake(lake_root).quarantine_files).collect()}
    assert logged[q["source_file"]] == q["reason"]


def test_a_part_duplicate_file_is_ingested_minus_the_records_already_in_bronze(spark, dirs):
    raw, lake_root = dirs
    write_flows(raw, [flow(), flow(remote_port=1)], seq=0)
    run_ingest(spark, raw, lake_root)
    part = write_flows(raw, [flow(remote_port=1, bytes_sent=999), flow(remote_port=2)], seq=1)  # 1 old key, 1 new
    again = run_ingest(spark, raw, lake_root)
    assert (again.files_ingested, again.rows_ingested, again.duplicate_rows) == (1, 1, 1), again.summary()
    assert "1 duplicate record(s) skipped" in again.summary()
    keys = _bronze_keys(spark, lake_root)
    assert sorted(r.remote_port for r in keys) == [1, 2, 443]
    # the first copy wins: the record with remote_port 1 is still the seq-0 one
    assert {r.remote_port: r.source_file.endswith(part) for r in keys}[1] is False
    entry = [r for r in lk.read(spark, lk.Lake(lake_root).ingested_files).collect() if r.source_file.endswith(part)]
    assert [(e.status, e.rows, e.reason) for e in entry] == [("ingested", 1, "1 duplicate record(s) skipped")]


def test_two_copies_in_one_run_keep_one(spark, dirs):
    """Edge: the original and its re-upload arrive in the same run; the lower source_file wins."""
    raw, lake_root = dirs
    rows = [flow(), flow(remote_port=1)]
    a = write_flows(raw, rows, seq=3)
    b = write_flows(raw, rows, seq=4)
    result = run_ingest(spark, raw, lake_root)
    assert (result.files_ingested, result.rows_ingested) == (1, 2)
    assert [q["source_file"].rsplit("/", 1)[-1] for q in result.quarantined] == [b.rsplit("/", 1)[-1]]
    assert {r.source_file for r in _bronze_keys(spark, lake_root)} == {os.path.join(raw, a)}


@pytest.mark.parametrize("inline_max", [10_000, 0], ids=["candidates listed", "candidates joined"])
def test_a_key_hash_collision_makes_a_candidate_never_a_duplicate(spark, dirs, monkeypatch, inline_max):
    """Edge: every record key hashes alike, so every row takes the exact check. Only the true
    repeats (in bronze, or a second copy in this run) are duplicates."""
    from flowlake.jobs.bronze import dedupe

    monkeypatch.setattr(dedupe, "_key_hash", lambda key: F.lit(7).cast("long"))
    monkeypatch.setattr(dedupe, "CANDIDATES_INLINE_MAX", inline_max)
    raw, lake_root = dirs
    write_flows(raw, [flow(), flow(remote_port=1)], seq=0)
    assert run_ingest(spark, raw, lake_root).rows_ingested == 2
    write_flows(raw, [flow(remote_port=1, bytes_sent=999), flow(remote_port=2), flow(remote_port=3)], seq=1)
    write_flows(raw, [flow(remote_port=3), flow(remote_port=4)], seq=2)
    again = run_ingest(spark, raw, lake_root)
    assert (again.files_ingested, again.rows_ingested, again.duplicate_rows) == (2, 3, 2), again.summary()
    assert sorted(r.remote_port for r in _bronze_keys(spark, lake_root)) == [1, 2, 3, 4, 443]


def test_orphan_quarantine_copies_of_a_dead_run_are_removed_and_named(spark, dirs):
    raw, lake_root = dirs
    orphan = os.path.join(lake_root, "quarantine/raw/dead-run/abc-1-0.parquet")
    os.makedirs(os.path.dirname(orphan))
    with open(orphan, "wb") as f:
        f.write(b"copied before the run died")
    write_flows(raw, [flow(bytes_sent=-1)])
    result = run_ingest(spark, raw, lake_root)
    assert result.orphans_removed == [orphan] and not os.path.exists(orphan)
    assert "left by run(s) that never committed" in result.summary()
    kept = result.quarantined[0]["quarantine_path"]
    assert os.path.exists(kept)  # this run's copy is logged: the next run keeps it
    assert run_ingest(spark, raw, lake_root).orphans_removed == [] and os.path.exists(kept)


def test_a_failed_quarantine_copy_is_recorded_in_copy_error(spark, dirs):
    import hashlib

    raw, lake_root = dirs
    key = write_flows(raw, [flow(bytes_sent=-1)])
    # make the copy fail: a directory stands where the copy would go
    target = os.path.join(lake_root, "quarantine/raw/r1", hashlib.sha1(key.encode()).hexdigest()[:12]
                          + "-" + key.rsplit("/", 1)[-1])
    os.makedirs(target)
    result = run_ingest(spark, raw, lake_root)
    [q] = result.quarantined
    assert q["quarantine_path"] is None and q["copy_error"], q
    [row] = lk.read(spark, lk.Lake(lake_root).quarantine_files).collect()
    assert row.quarantine_path is None and row.copy_error == q["copy_error"]
    assert "not copied" in result.summary()


def test_a_null_typed_column_is_read_as_the_contracts_type_beside_other_files(spark, dirs):
    """A producer that never knew the workload writes the column as Arrow's null type (pandas' all-None);
    the reader casts it, and the file shares one Arrow batch with an ordinary file of the same task."""
    raw, lake_root = dirs
    nulls_schema = pa.schema([pa.field(f.name, pa.null()) if f.name == "local_workload" else f
                              for f in RAW_FLOW_SCHEMA], metadata=RAW_FLOW_SCHEMA.metadata)
    write_flows(raw, [flow(local_workload=None), flow(local_workload=None, remote_port=80)], seq=0,
                schema=nulls_schema, instance="i-null")
    write_flows(raw, [flow(remote_ip="::FFFF:10.0.0.9")], seq=1, instance="i-plain")
    result = run_ingest(spark, raw, lake_root)
    assert (result.files_ingested, result.rows_ingested, result.quarantined) == (2, 3, [])
    bronze = lk.read(spark, lk.Lake(lake_root).bronze_flows)
    got = sorted((r.instance_id, r.local_workload, r.remote_ip) for r in bronze.collect())
    assert got == [("i-null", None, "10.0.0.2"), ("i-null", None, "10.0.0.2"), ("i-plain", "client", "10.0.0.9")]


def test_read_keys_concatenates_files_into_batches_and_canonicalises_each_batch(tmp_path):
    """The reader's task body without Spark: files fill a batch up to batch_rows (IPv6-mapped IPv4 made
    canonical across the batch), an unreadable file is one row with only its reason."""
    from flowlake.jobs.bronze.rawfiles import KIND_FLOWS, read_keys

    raw = str(tmp_path / "raw")
    mapped = write_flows(raw, [flow(remote_ip="::FFFF:10.0.0.9")], seq=0)
    plain = write_flows(raw, [flow(), flow(local_ip="fe80:0:0::1")], seq=1)
    broken = write_raw_bytes(raw, raw_flow_key(instance_id="i-a", first_interval_start_ms=T0, seq=2), b"not parquet")
    batches = list(read_keys([mapped, plain, broken], raw_root=raw, kind=KIND_FLOWS, batch_rows=2))
    assert [b.num_rows for b in batches] == [3, 1]
    rows = pa.Table.from_batches(batches).to_pylist()
    assert [(r["_local_ip_c"], r["_remote_ip_c"]) for r in rows[:3]] == [
        ("10.0.0.1", "10.0.0.9"), ("10.0.0.1", "10.0.0.2"), ("fe80::1", "10.0.0.2")]
    assert [r["source_file"].endswith(k) for r, k in zip(rows, [mapped, plain, plain, broken])] == [True] * 4
    assert [r["_file_reason"] is None for r in rows[:3]] == [True] * 3
    assert [r["_row_reason"] for r in rows] == [None] * 4  # every row names its key's instance
    assert rows[3]["_file_reason"].startswith("not a readable Parquet file") and rows[3]["local_ip"] is None
