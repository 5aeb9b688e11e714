"""The sidecar's wiring with a fake kernel side and an injected clock: boundaries, flush, hot reload."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq

import yaml

from flowlake.capture.config import load_capture_config
from flowlake.capture.decode import Counters, KernelFlow
from flowlake.capture.sidecar import Sidecar

from .conftest import capture_config, read_records, write_config


class FakeProbe:
    def __init__(self) -> None:
        self.gen = 0
        self.pending: list[KernelFlow] = []
        self.attached = False

    def open_events(self, handler) -> None:
        self.handler = handler

    def set_generation(self, gen: int) -> None:
        self.gen = gen

    def attach(self) -> None:
        self.attached = True

    def detach(self) -> None:
        self.attached = False

    prog_id = 7

    def detach_stale(self, prog_id: int) -> bool:
        self.stale_detached = prog_id
        return True

    def close(self) -> None:
        pass

    def close_connection(self, port: int, sent: int) -> None:
        self.pending.append(KernelFlow(gen=self.gen, key=("outbound", "10.0.0.1", 0, "10.0.0.2", port),
                                       first_start_ns=0, opened=1, closed=1, counters=Counters(sent, 1, 1, 1, 0),
                                       srtt_us_max=10))

    def drain_flows(self, *, gen: int):
        out = [f for f in self.pending if f.gen == gen]
        self.pending = [f for f in self.pending if f.gen != gen]
        return out

    def lookup_conn(self, cookie):
        return None

    def consume_events(self) -> None:
        pass

    def poll_events(self, *, timeout_ms: int) -> None:
        pass

    kernel_drops = {"conn_map_full": 0}

    def drops(self):
        return dict(self.kernel_drops)

    def stats(self):
        return {}


class FakeDiag:
    def dump(self):
        return [], {"": set()}

    def close(self) -> None:
        pass


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(tmp_path, **extra):
    cfg_path = write_config(tmp_path, capture_config(tmp_path, interval_s=10.0, **extra))
    probe, clock = FakeProbe(), Clock(1_764_000_003.0)
    side = Sidecar(load_capture_config(path=cfg_path), config_path=cfg_path, probe_factory=lambda: probe,
                   diag_factory=FakeDiag, clock=clock)
    return side, probe, clock, cfg_path


def test_boundaries_flush_and_restart_continue_the_sequence(tmp_path):
    side, probe, clock, _ = make(tmp_path)
    side.start()
    assert probe.attached and probe.gen == 1 and side.next_boundary_s == 1_764_000_010.0
    probe.close_connection(443, 100)
    clock.now = 1_764_000_010.0
    side.step()  # boundary: gen 1 written as the first interval
    assert probe.gen == 2
    probe.close_connection(443, 5)
    clock.now = 1_764_000_014.5
    side.stopping = True
    side.shutdown()  # SIGTERM path: the open interval is flushed and the file uploaded
    rows = read_records(tmp_path / "raw")
    assert [(r["interval_start_ms"], r["interval_end_ms"], r["bytes_sent"]) for r in rows] == [
        (1_764_000_003_000, 1_764_000_010_000, 100), (1_764_000_010_000, 1_764_000_014_500, 5)]
    side2, probe2, _, _ = make(tmp_path)
    side2.start()
    probe2.close_connection(80, 9)
    side2.shutdown()
    files = sorted((tmp_path / "raw").rglob("*.parquet"))
    seqs = sorted(int(p.name.split("-")[1].split(".")[0]) for p in files)
    assert seqs == [1, 2]  # the restarted sidecar continues the file sequence: keys never repeat
    metas = sorted((json.loads(pq.ParquetFile(p).schema_arrow.metadata[b"flowlake.capture"]) for p in files),
                   key=lambda m: m["seq"])
    assert [m["run_id"] for m in metas] == [side.run_id, side2.run_id] and side.run_id != side2.run_id


def test_hot_reload_of_safe_settings(tmp_path, caplog):
    side, probe, clock, cfg_path = make(tmp_path)
    side.start()
    data = yaml.safe_load(cfg_path.read_text())
    data["interval_s"] = 2.0
    data["filters"] = {"exclude_remote_ports": [443]}
    data["kernel"]["max_conns"] = 999  # needs a restart: reported, not applied
    cfg_path.write_text(yaml.safe_dump(data))
    os.utime(cfg_path, (1, 1))
    assert side.maybe_reload()
    assert side.cfg.interval_s == 2.0 and side.next_boundary_s == 1_764_000_004.0
    assert side.cfg.kernel.max_conns == 4096 and "only after a restart" in caplog.text
    probe.close_connection(443, 7)
    probe.close_connection(80, 8)
    clock.now = 1_764_000_004.0
    side.step()
    side.shutdown()
    rows = read_records(tmp_path / "raw")
    assert [r["remote_port"] for r in rows] == [80]


def test_bad_config_edit_keeps_running_settings(tmp_path, caplog):
    side, _, _, cfg_path = make(tmp_path)
    side.start()
    cfg_path.write_text("interval_s: -5\n")
    os.utime(cfg_path, (2, 2))
    assert not side.maybe_reload()
    assert side.cfg.interval_s == 10.0 and "not reloaded" in caplog.text
    side.shutdown()


def test_second_sidecar_on_same_state_dir_is_refused(tmp_path):
    side, _, _, _ = make(tmp_path)
    side.start()
    other, _, _, _ = make(tmp_path)
    try:
        other.start()
        raise AssertionError("expected a lock error")
    except RuntimeError as exc:
        assert "another sidecar holds" in str(exc)
    finally:
        side.shutdown()


def _metas(root):
    files = sorted(root.rglob("*.parquet"))
    return sorted((json.loads(pq.ParquetFile(p).schema_arrow.metadata[b"flowlake.capture"]) for p in files),
                  key=lambda m: m["seq"])


def _crash(side) -> None:
    """What a SIGKILL leaves: no flush, the lock released by the kernel."""
    os.close(side._lock_fd)
    side._lock_fd = None
    side.metrics.stop()


def test_kill_loses_only_closes_after_the_last_stage(tmp_path):
    side, probe, clock, _ = make(tmp_path, stage_s=2.0)
    side.start()
    probe.close_connection(443, 100)
    clock.now = 1_764_000_005.5
    side.step()  # a stage, not a boundary
    assert probe.gen == 2 and side.interval_gen == 1 and side.open_stage_file.is_file()
    probe.close_connection(80, 5)
    probe.kernel_drops = {"conn_map_full": 2}
    clock.now = 1_764_000_007.6
    side.step()  # second stage: the drops so far are staged too
    probe.close_connection(22, 9)  # after the last stage: lost by the kill
    _crash(side)
    side2, _, _, _ = make(tmp_path, stage_s=2.0)
    side2.start()
    assert not side2.open_stage_file.exists()
    side2.shutdown()
    rows = read_records(tmp_path / "raw")
    assert [(r["interval_start_ms"], r["interval_end_ms"], r["remote_port"], r["bytes_sent"]) for r in rows] == [
        (1_764_000_003_000, 1_764_000_007_600, 80, 5), (1_764_000_003_000, 1_764_000_007_600, 443, 100)]
    (meta,) = _metas(tmp_path / "raw")
    assert meta["intervals"][0] == 1_764_000_003_000 and meta["drops"]["conn_map_full"] == 2
    assert meta["run_id"] == side2.run_id


def test_a_stage_already_written_at_a_boundary_is_not_recovered_twice(tmp_path):
    side, probe, clock, _ = make(tmp_path, stage_s=2.0)
    side.start()
    probe.close_connection(443, 100)
    clock.now = 1_764_000_005.5
    side.step()  # stage
    clock.now = 1_764_000_010.0
    side.step()  # boundary: the interval is written, the stage removed
    assert not side.open_stage_file.exists()
    side.open_stage_file.write_bytes(b"")  # edge case: a stale or damaged stage file
    _crash(side)
    side2, _, _, _ = make(tmp_path, stage_s=2.0)
    side2.start()
    side2.shutdown()
    assert [r["bytes_sent"] for r in read_records(tmp_path / "raw")] == [100]
    assert (tmp_path / "state" / "open-interval.parquet.bad").is_file(), "quarantined, not deleted"


def test_identity_change_applies_from_the_moment_of_the_change(tmp_path):
    ident = tmp_path / "identity"
    ident.mkdir()
    (ident / "c1.json").write_text(json.dumps({"workload": "web", "ips": ["10.0.0.1"]}))
    (ident / "broken.yaml").write_text("workload: [\n")  # edge case: reported, ignored
    side, probe, clock, _ = make(tmp_path, identity={"local_dir": str(ident)})
    side.start()
    probe.close_connection(443, 1)
    clock.now = 1_764_000_006.0
    assert not side.maybe_reload_identity(), "nothing changed yet"
    (ident / "c1.json").unlink()  # container 1 stops; container 2 restarts with its old IP
    (ident / "c2.json").write_text(json.dumps({"workload": "db", "ips": ["::ffff:10.0.0.1"]}))
    assert side.maybe_reload_identity()
    probe.close_connection(443, 2)
    clock.now = 1_764_000_008.0
    side.shutdown()
    rows = read_records(tmp_path / "raw")
    assert [(r["interval_start_ms"], r["interval_end_ms"], r["local_workload"], r["bytes_sent"], r["instance_id"])
            for r in rows] == [(1_764_000_003_000, 1_764_000_006_000, "web", 1, "test-host"),
                               (1_764_000_006_000, 1_764_000_008_000, "db", 2, "test-host")]
    assert side.identity_source.errors == 1


def test_drops_by_reason_go_into_the_next_file(tmp_path):
    side, probe, clock, _ = make(tmp_path, rolling={"intervals_per_file": 1})
    side.start()
    probe.close_connection(443, 1)
    probe.kernel_drops = {"conn_map_full": 5, "ringbuf_full": 1}
    clock.now = 1_764_000_010.0
    side.step()
    probe.close_connection(443, 2)
    probe.kernel_drops = {"conn_map_full": 6, "ringbuf_full": 1}
    clock.now = 1_764_000_020.0
    side.step()
    side.shutdown()
    m1, m2 = _metas(tmp_path / "raw")
    assert (m1["drops"]["conn_map_full"], m1["drops"]["ringbuf_full"]) == (5, 1)
    assert (m2["drops"]["conn_map_full"], m2["drops"]["ringbuf_full"]) == (1, 0), "since the previous file"
    assert (m1["seq"], m2["seq"]) == (1, 2)
