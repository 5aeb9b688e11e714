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

    def drops(self):
        return {"conn_map_full": 0}

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
