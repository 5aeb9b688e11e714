"""silver/capture_completeness: seq gaps, restarts, drops per hour, files without metadata, across runs."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from flowlake.capture.roll import CAPTURE_META_KEY, RollingWriter, SequenceCounter
from flowlake.capture.upload import Spool
from flowlake.contracts import RAW_FLOW_SCHEMA, raw_flow_key
from flowlake.jobs.bronze import completeness as c
from flowlake.jobs.quality.gate import run_checks
from flowlake.jobs.quality.suites import completeness_suite
from flowlake.jobs.config import load_quality_config
from flowlake.lake import CAPTURE_COMPLETENESS, Lake
from tests.jobs.helpers import MIN, T0, flow

H = 3_600_000
ZERO = {r: 0 for r in c.DROP_REASONS}


def meta_row(instance, seq, run_id, intervals, *, drops=None, records=1, key_hour=None, meta=True):
    """One per-file row as read_capture_meta gives it (FILE_META_DDL order)."""
    d = ZERO | (drops or {})
    hour = key_hour if key_hour is not None else (min(intervals) // H * H if intervals else T0)
    if not meta:
        return (f"file-{instance}-{seq}", instance, hour, c.META_MISSING, "no metadata", None, seq, None,
                *[None] * len(c.DROP_REASONS), None)
    return (f"file-{instance}-{seq}", instance, hour, c.META_OK, None, run_id, seq, list(intervals),
            *[d[r] for r in c.DROP_REASONS], records)


def files_df(spark, rows):
    return spark.createDataFrame(rows, c.FILE_META_DDL)


def empty(spark):
    return spark.createDataFrame([], CAPTURE_COMPLETENESS.ddl)


def by_hour(df) -> dict:
    return {(r["instance_id"], r["hour_start_ms"]): r.asDict() for r in df.collect()}


def test_one_run_deleted_file_restart_drops_per_hour_and_file_without_metadata(spark):
    """Edge cases in one run of instance a: seq 3 deleted (a gap, across the hour boundary: it is counted in
    the hour of the file after it), a restart (new run_id, seq continuing), drops of two files summed in
    their hour, a file without metadata (counted, seq from the key, no restart); instance b is complete."""
    iv = lambda h, m: T0 + h * H + m * MIN  # noqa: E731
    rows = [
        meta_row("a", 1, "r1", [iv(0, 50), iv(0, 51)], drops={"conn_map_full": 2, "flow_map_full": 1}),
        meta_row("a", 2, "r1", [iv(0, 58), iv(0, 59)], drops={"conn_map_full": 3, "ringbuf_full": 4}),
        # seq 3 (hour 0 / 1 boundary) was deleted
        meta_row("a", 4, "r1", [iv(1, 2), iv(1, 3)]),
        meta_row("a", 5, "r2", [iv(1, 10)], drops={"untracked_closes": 1}),  # restart
        meta_row("a", 6, None, [], key_hour=T0 + H, meta=False),  # an older writer: no metadata
        meta_row("a", 7, "r2", [iv(1, 20)]),  # same run as 5 across the file without metadata: no restart
        meta_row("b", 10, "rb", [iv(0, 0)]),
        meta_row("b", 11, "rb", [iv(0, 1), iv(0, 2)]),
    ]
    out = by_hour(c.transform(files_df(spark, rows), empty(spark)))
    assert set(out) == {("a", T0), ("a", T0 + H), ("b", T0)}
    a0, a1, b0 = out[("a", T0)], out[("a", T0 + H)], out[("b", T0)]
    assert (a0["files"], a0["gaps"], a0["missing_files"], a0["restarts"]) == (2, 0, 0, 0)
    assert a0["drops_conn_map_full"] == 5 and a0["drops_ringbuf_full"] == 4 and a0["drops_flow_map_full"] == 1
    assert a0["drops_lost"] == 9, "flow_map_full is not a loss"
    assert a0["intervals_covered"] == 4 and a0["seqs"] == [1, 2]
    assert (a1["files"], a1["gaps"], a1["missing_files"], a1["missing_seq_ranges"]) == (4, 1, 1, ["3"])
    assert a1["restarts"] == 1 and a1["run_ids"] == ["r1", "r2"] and a1["files_without_metadata"] == 1
    assert a1["drops_untracked_closes"] == 1 and a1["intervals_covered"] == 4
    assert (a1["last_seq"], a1["last_run_id"]) == (7, "r2")
    assert (b0["files"], b0["gaps"], b0["restarts"], b0["drops_lost"], b0["intervals_covered"]) == (2, 0, 0, 0, 3)
    assert b0["gaps"] == 0, "no gap before the first file ever seen (seq 10)"

    summary = c.fleet_summary(c.transform(files_df(spark, rows), empty(spark)))
    assert summary["instances"] == 2 and summary["files"] == 8 and summary["missing_files"] == 1
    assert summary["instances_with_gaps"] == ["a"] and summary["instances_with_losses"] == ["a"]
    assert summary["drops"]["conn_map_full"] == 5 and abs(summary["file_completeness"] - 8 / 9) < 1e-9


def test_gap_across_two_runs_same_hour_merge_rerun_and_late_file(spark):
    """Run 1 publishes seq 1-2; run 2 brings seq 3 (same hour: merged into the published row), seq 2 again
    (a re-run: not counted twice) and seq 6 in the next hour after a restart: the gap 4-5 spans the two runs
    and is counted in the hour of seq 6. Run 3 brings seq 4 late: counted as a late file in its hour."""
    run1 = c.transform(files_df(spark, [meta_row("a", 1, "r1", [T0]), meta_row("a", 2, "r1", [T0 + MIN])]),
                       empty(spark)).localCheckpoint()
    run2_files = [meta_row("a", 2, "r1", [T0 + MIN]), meta_row("a", 3, "r1", [T0 + 2 * MIN], records=5),
                  meta_row("a", 6, "r2", [T0 + H + 30 * MIN], drops={"spool_evicted_files": 2})]
    run2 = by_hour(c.transform(files_df(spark, run2_files), run1))
    h0, h1 = run2[("a", T0)], run2[("a", T0 + H)]
    assert (h0["files"], h0["seqs"], h0["records"], h0["intervals_covered"]) == (3, [1, 2, 3], 7, 3)
    assert (h0["gaps"], h0["restarts"], h0["last_seq"]) == (0, 0, 3)
    assert (h1["gaps"], h1["missing_files"], h1["missing_seq_ranges"], h1["restarts"]) == (1, 2, ["4-5"], 1)
    assert h1["drops_spool_evicted_files"] == 2 and (h1["last_seq"], h1["last_run_id"]) == (6, "r2")

    # what run 2 published: its rows, and run 1's rows it did not touch (none here)
    published = c.transform(files_df(spark, run2_files), run1).localCheckpoint()
    run3 = by_hour(c.transform(files_df(spark, [meta_row("a", 4, "r1", [T0 + 40 * MIN])]), published))
    late = run3[("a", T0)]
    assert late["late_files"] == 1 and late["files"] == 4 and late["gaps"] == 0 and late["last_seq"] == 4
    assert set(run3) == {("a", T0)}, "only the hour the late file touches is rewritten"

    warn = completeness_suite(published)
    (result,) = run_checks(warn, config=load_quality_config(), run_id="t", stage="ingest").results
    assert not result.success and result.severity == "warning"
    assert [e["instance_id"] for e in result.examples] == ["a"]
    assert result.examples[0]["missing_seq_ranges"] == ["4-5"]


def _roll(tmp_path, raw_root):
    """Files written by the capture roller: seq 1-2 (drops), a restart, seq 3-4; then seq 2 is deleted."""
    def rec(start):
        return flow(instance_id="i-1", interval_start_ms=start)

    def writer():
        return RollingWriter(staging_dir=tmp_path / "staging", spool=Spool(directory=tmp_path / "spool",
                             max_bytes=1 << 30), instance_id="i-1", seq=SequenceCounter(path=tmp_path / "seq"),
                             intervals_per_file=1, max_file_records=1000)

    w1 = writer()
    w1.add_interval([rec(T0)], interval_start_ms=T0, drops={"conn_map_full": 3})
    w1.add_interval([rec(T0 + MIN)], interval_start_ms=T0 + MIN, drops={"ringbuf_full": 1})
    w2 = writer()  # a restart: new run_id, seq continues
    w2.add_interval([rec(T0 + 2 * MIN)], interval_start_ms=T0 + 2 * MIN)
    w2.add_interval([rec(T0 + H)], interval_start_ms=T0 + H)
    keys = []
    for key, path in w2.spool.entries():
        os.makedirs(os.path.dirname(os.path.join(raw_root, key)), exist_ok=True)
        shutil.copy(path, os.path.join(raw_root, key))
        keys.append(key)
    return w1.run_id, w2.run_id, sorted(keys, key=lambda k: int(k.rsplit("-", 1)[1].split(".")[0]))


def test_real_footers_from_the_capture_roller_and_a_file_without_metadata(spark, tmp_path):
    """Footers read in Spark tasks: the roller's files (seq 2 deleted = a gap, a restart), a plain file of
    another instance without flowlake.capture, and a file that is not Parquet; then published twice."""
    raw = str(tmp_path / "raw")
    r1, r2, keys = _roll(tmp_path, raw)
    os.remove(os.path.join(raw, keys[1]))  # seq 2 deleted
    plain = raw_flow_key(instance_id="i-2", first_interval_start_ms=T0, seq=7)
    os.makedirs(os.path.dirname(os.path.join(raw, plain)), exist_ok=True)
    pq.write_table(pa.Table.from_pylist([flow(instance_id="i-2")], schema=RAW_FLOW_SCHEMA), os.path.join(raw, plain))
    broken = raw_flow_key(instance_id="i-3", first_interval_start_ms=T0, seq=1)
    os.makedirs(os.path.dirname(os.path.join(raw, broken)), exist_ok=True)
    with open(os.path.join(raw, broken), "wb") as f:
        f.write(b"not parquet")
    present = [keys[0], keys[2], keys[3], plain, broken]

    files = {r["source_file"].split("/raw/", 1)[1]: r.asDict()
             for r in c.read_capture_meta(spark, raw_root=raw, keys=present).collect()}
    first = files[keys[0]]
    assert (first["meta_status"], first["run_id"], first["seq"], first["drops_conn_map_full"]) == ("ok", r1, 1, 3)
    assert first["intervals"] == [T0] and first["records"] == 1 and first["instance_id"] == "i-1"
    assert files[plain]["meta_status"] == "missing" and files[plain]["seq"] == 7
    bad = files[broken]
    assert bad["meta_status"] == "unreadable" and "footer unreadable" in bad["meta_reason"] and bad["seq"] == 1

    lake = Lake(str(tmp_path / "lake"))
    c.update(spark, raw_root=raw, lake=lake, keys=present[:2])  # run 1: seq 1 and 3 (seq 2 deleted)
    c.update(spark, raw_root=raw, lake=lake, keys=present)  # run 2 sees run 1's files again, and the rest
    table = by_hour(spark.read.format("delta").load(lake.path(CAPTURE_COMPLETENESS)))
    h0, h1 = table[("i-1", T0)], table[("i-1", T0 + H)]
    assert (h0["files"], h0["seqs"], h0["gaps"], h0["missing_seq_ranges"], h0["restarts"]) == (2, [1, 3], 1, ["2"], 1)
    assert h0["drops_conn_map_full"] == 3 and h0["drops_ringbuf_full"] == 0, "seq 2's drops went with it"
    assert (h1["files"], h1["gaps"], h1["restarts"], h1["last_run_id"]) == (1, 0, 0, r2)
    assert table[("i-2", T0)]["files_without_metadata"] == 1 and table[("i-3", T0)]["files_without_metadata"] == 1
    assert sum(r["files"] for r in table.values()) == 5, "a re-run counts no file twice"


def test_simulated_files_carry_capture_metadata(spark, tmp_path):
    """The simulator writes flowlake.capture like the sidecar: consecutive seqs (no gap), one run_id per
    instance, intervals covering the window without overlap; deleting one file shows as one gap."""
    from flowlake.sim import SimParams, simulate

    out = str(tmp_path / "sim")
    summary = simulate(out=out, params=SimParams(seed=3, hours=1, records=3_000, n_workloads=6), progress=False)
    keys = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(os.path.join(out, "flows"))
                  for f in fs)
    assert len(keys) == summary.flow_files
    one = json.loads(pq.read_metadata(os.path.join(out, keys[0])).metadata[CAPTURE_META_KEY])
    assert set(one) == {"run_id", "seq", "instance_id", "intervals", "drops", "records"}
    files = c.read_capture_meta(spark, raw_root=out, keys=keys).collect()
    assert {f["meta_status"] for f in files} == {"ok"}
    assert sum(f["records"] for f in files) == summary.records
    whole = c.fleet_summary(c.transform(spark.createDataFrame(files, c.FILE_META_DDL), empty(spark)))
    assert (whole["files"], whole["gaps"], whole["restarts"], whole["drops_lost"]) == (summary.flow_files, 0, 0, 0)
    assert whole["intervals_covered"] == sum(len(f["intervals"]) for f in files), "no interval in two files"

    by_instance: dict[str, list] = {}
    for f in files:
        by_instance.setdefault(f["instance_id"], []).append(f)
    inst, fs = next((i, sorted(fs, key=lambda f: f["seq"])) for i, fs in sorted(by_instance.items()) if len(fs) >= 3)
    victim = fs[1]  # a middle file: seen files on both sides
    kept = [f for f in files if f["source_file"] != victim["source_file"]]
    rows = c.transform(spark.createDataFrame(kept, c.FILE_META_DDL), empty(spark))
    s = c.fleet_summary(rows)
    assert (s["files"], s["gaps"], s["missing_files"]) == (summary.flow_files - 1, 1, 1)
    assert s["instances_with_gaps"] == [inst]
