"""Rolling and upload with an injected clock and sink: atomic files, key layout, spool bound, backoff."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flowlake.capture.roll import RollingWriter, SequenceCounter
from flowlake.capture.upload import LocalSink, Spool, Uploader
from flowlake.contracts import RAW_FLOW_SCHEMA

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def rec(start_ms: int, port: int = 443, **kw) -> dict:
    base = {
        "instance_id": "i-1", "local_workload": None, "region": None, "availability_zone": None,
        "interval_start_ms": start_ms, "interval_end_ms": start_ms + 60_000, "local_ip": "10.0.0.1", "local_port": 0,
        "remote_ip": "10.0.0.2", "remote_port": port, "direction": "outbound", "protocol": "tcp",
        "first_start_ms": start_ms, "connections_opened": 1, "connections_closed": 1, "bytes_sent": 10,
        "bytes_received": 20, "segments_sent": 1, "segments_received": 1, "retransmits": 0, "srtt_us_max": None,
    }
    return base | kw


def writer(tmp_path: Path, *, intervals=3, max_records=1000, spool_bytes=1 << 30) -> RollingWriter:
    spool = Spool(directory=tmp_path / "spool", max_bytes=spool_bytes)
    return RollingWriter(staging_dir=tmp_path / "staging", spool=spool, instance_id="i-1",
                         seq=SequenceCounter(path=tmp_path / "seq"), intervals_per_file=intervals,
                         max_file_records=max_records)


def test_file_closes_every_n_intervals_with_contract_key_and_schema(tmp_path):
    w = writer(tmp_path)
    assert w.add_interval([rec(T0)], interval_start_ms=T0) == []
    assert w.add_interval([rec(T0 + 60_000)], interval_start_ms=T0 + 60_000) == []
    keys = w.add_interval([rec(T0 + 120_000, port=80)], interval_start_ms=T0 + 120_000)
    assert keys == [f"flows/v1/dt=2025-11-24/hr=16/instance=i-1/{T0}-1.parquet"]
    ((key, path),) = w.spool.entries()
    assert key == keys[0]
    table = pq.read_table(path)
    assert table.schema.equals(RAW_FLOW_SCHEMA)
    assert table.schema.metadata[b"flowlake.schema_version"] == RAW_FLOW_SCHEMA.metadata[b"flowlake.schema_version"]
    assert table.num_rows == 3
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    assert list((tmp_path / "staging").glob("part-*")) == []


def test_size_bound_closes_early_and_seq_survives_restart(tmp_path):
    w = writer(tmp_path, intervals=10, max_records=2)
    assert w.add_interval([rec(T0), rec(T0, port=80)], interval_start_ms=T0) != []
    w2 = writer(tmp_path, intervals=1)
    (key,) = w2.add_interval([rec(T0 + 60_000)], interval_start_ms=T0 + 60_000)
    assert key.endswith(f"{T0 + 60_000}-2.parquet")


def test_staged_intervals_survive_a_crash(tmp_path):
    w = writer(tmp_path, intervals=5)
    w.add_interval([rec(T0)], interval_start_ms=T0)
    w.add_interval([rec(T0 + 60_000)], interval_start_ms=T0 + 60_000)
    del w  # crash: nothing closed
    w2 = writer(tmp_path, intervals=5)
    (key,) = w2.close_file()
    assert key.startswith(f"flows/v1/dt=2025-11-24/hr=16/instance=i-1/{T0}-")
    assert pq.read_table(w2.spool.entries()[0][1]).num_rows == 2


def capture_meta(path) -> dict:
    return json.loads(pq.ParquetFile(path).schema_arrow.metadata[b"flowlake.capture"])


def test_empty_first_interval_never_names_the_file_even_across_an_hour(tmp_path):
    """Edge case: the batch's first interval (15:59) has no records; the file belongs to 16:00."""
    w = writer(tmp_path, intervals=3)
    before = T0 - 60_000  # 2025-11-24T15:59:00Z, empty
    assert w.add_interval([], interval_start_ms=before) == []
    assert w.add_interval([rec(T0)], interval_start_ms=T0) == []
    (key,) = w.add_interval([rec(T0 + 60_000)], interval_start_ms=T0 + 60_000)
    assert key == f"flows/v1/dt=2025-11-24/hr=16/instance=i-1/{T0}-1.parquet"
    meta = capture_meta(w.spool.entries()[0][1])
    assert meta["intervals"] == [before, T0, T0 + 60_000], "empty intervals are still listed as covered"


def test_a_batch_without_records_writes_no_file_and_carries_its_intervals(tmp_path):
    w = writer(tmp_path, intervals=2)
    w.add_interval([], interval_start_ms=T0)
    assert w.add_interval([], interval_start_ms=T0 + 60_000, drops={"conn_map_full": 2}) == []
    assert w.spool.entries() == [] and w.seq.value == 0, "no seq is used by an empty batch"
    w.add_interval([], interval_start_ms=T0 + 120_000)
    (key,) = w.add_interval([rec(T0 + 180_000)], interval_start_ms=T0 + 180_000)
    assert key.endswith(f"/{T0 + 180_000}-1.parquet")
    meta = capture_meta(w.spool.entries()[0][1])
    assert meta["intervals"] == [T0 + i * 60_000 for i in range(4)]
    assert meta["drops"]["conn_map_full"] == 2


def test_capture_metadata_run_id_seq_drops_and_schema_version(tmp_path):
    w = writer(tmp_path, intervals=2)
    w.add_interval([rec(T0)], interval_start_ms=T0, drops={"conn_map_full": 3, "ringbuf_full": 1})
    w.add_interval([rec(T0 + 60_000)], interval_start_ms=T0 + 60_000, drops={"conn_map_full": 1})
    w.add_interval([rec(T0 + 120_000)], interval_start_ms=T0 + 120_000)
    w.add_interval([rec(T0 + 180_000)], interval_start_ms=T0 + 180_000, drops={"spool_evicted_files": 1})
    (_, p1), (_, p2) = w.spool.entries()
    assert pq.ParquetFile(p1).schema_arrow.metadata[b"flowlake.schema_version"] == b"1"
    m1, m2 = capture_meta(p1), capture_meta(p2)
    assert set(m1) == {"run_id", "seq", "instance_id", "intervals", "drops", "records"}
    assert m1["run_id"] == m2["run_id"] == w.run_id and (m1["seq"], m2["seq"]) == (1, 2)
    assert m1["drops"] == {"conn_map_full": 4, "flow_map_full": 0, "ringbuf_full": 1, "spool_evicted_files": 0,
                           "untracked_closes": 0}
    assert m2["drops"]["conn_map_full"] == 0 and m2["drops"]["spool_evicted_files"] == 1, "since the previous file"
    assert m1["intervals"] == [T0, T0 + 60_000] and m1["records"] == 2 and m1["instance_id"] == "i-1"


def test_seq_is_consecutive_across_a_restart_with_a_new_run_id(tmp_path):
    w = writer(tmp_path, intervals=1)
    w.add_interval([rec(T0)], interval_start_ms=T0)
    w.add_interval([rec(T0 + 60_000)], interval_start_ms=T0 + 60_000, drops={"untracked_closes": 1})
    w.add_interval([rec(T0 + 120_000)], interval_start_ms=T0 + 120_000)  # staged, then a crash
    w.intervals_per_file = 5
    w.add_interval([rec(T0 + 180_000)], interval_start_ms=T0 + 180_000, drops={"ringbuf_full": 7})
    w2 = writer(tmp_path, intervals=1)
    assert w2.run_id != w.run_id
    (key,) = w2.close_file()  # what the crashed run staged
    w2.add_interval([rec(T0 + 240_000)], interval_start_ms=T0 + 240_000)
    metas = [capture_meta(p) for _, p in w2.spool.entries()]
    assert [m["seq"] for m in metas] == [1, 2, 3, 4, 5]
    assert [m["run_id"] for m in metas] == [w.run_id] * 3 + [w2.run_id] * 2
    assert metas[3]["intervals"] == [T0 + 180_000] and metas[3]["drops"]["ringbuf_full"] == 7
    assert key.endswith(f"/{T0 + 180_000}-4.parquet")


def test_bad_instance_id_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="cannot be used in an object key"):
        RollingWriter(staging_dir=tmp_path / "s", spool=Spool(directory=tmp_path / "sp", max_bytes=10),
                      instance_id="bad/id", seq=SequenceCounter(path=tmp_path / "seq"), intervals_per_file=1,
                      max_file_records=1)


class FlakySink:
    """A sink that fails while ``down`` and records what it received, in order."""

    def __init__(self) -> None:
        self.down = False
        self.received: list[str] = []

    def put(self, *, key: str, path: Path) -> None:
        if self.down:
            raise ConnectionError("sink unreachable")
        self.received.append(key)

    def describe(self) -> str:
        return "flaky test sink"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_upload_backs_off_while_down_then_drains_oldest_first_once(tmp_path):
    w = writer(tmp_path, intervals=1)
    sink, clock = FlakySink(), Clock()
    up = Uploader(spool=w.spool, sink=sink, backoff_initial_s=1.0, backoff_max_s=4.0, clock=clock)
    sink.down = True
    keys = [w.add_interval([rec(T0 + i * 60_000)], interval_start_ms=T0 + i * 60_000)[0] for i in range(4)]
    assert up.drain() == 0 and up.failures == 1
    assert up.drain() == 0 and up.failures == 1  # backing off: no attempt before 1 s
    clock.now = 1.0
    assert up.drain() == 0 and up.failures == 2  # next wait is 2 s
    clock.now = 2.5
    assert up.drain() == 0 and up.failures == 2
    sink.down = False
    clock.now = 3.0
    assert up.drain() == 4
    assert sink.received == keys and up.uploaded_keys == keys
    assert w.spool.entries() == [] and up.drain() == 0 and sink.received == keys


def test_spool_bound_drops_oldest_and_counts_it(tmp_path, caplog):
    w = writer(tmp_path, intervals=1)
    w.add_interval([rec(T0)], interval_start_ms=T0)
    one_file = w.spool.size_bytes()
    w.spool.max_bytes = int(one_file * 2.5)
    for i in range(1, 5):
        w.add_interval([rec(T0 + i * 60_000)], interval_start_ms=T0 + i * 60_000)
    kept = [k for k, _ in w.spool.entries()]
    assert len(kept) == 2 and w.spool.dropped_files == 3
    assert kept[-1].endswith("-5.parquet")
    assert "dropped the oldest file" in caplog.text


def test_local_sink_writes_under_key(tmp_path):
    w = writer(tmp_path, intervals=1)
    (key,) = w.add_interval([rec(T0)], interval_start_ms=T0)
    up = Uploader(spool=w.spool, sink=LocalSink(root=tmp_path / "raw", prefix="p"), clock=Clock())
    assert up.drain() == 1
    assert pq.read_table(tmp_path / "raw" / "p" / key).num_rows == 1
    assert not list((tmp_path / "raw").rglob(".tmp-*"))


def test_spool_ignores_half_written_files(tmp_path):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / ".tmp-000000000001__x.parquet").write_bytes(b"half")
    assert Spool(directory=spool_dir, max_bytes=100).entries() == []
    assert not (spool_dir / ".tmp-000000000001__x.parquet").exists()
