"""The capture sidecar: wires probe, aggregation, rolling, spool, upload and metrics.

Lifecycle: ``start`` recovers what a previous run left (staged intervals,
spooled files, open-connection state), attaches the kernel program and
adopts open connections; ``run`` closes an interval at every boundary,
stages the open interval every ``stage_s`` (what a SIGKILL would lose),
closes it early when the per-container identity folder changes, drains the
spool and hot-reloads safe settings; SIGTERM/SIGINT make it flush the open
interval, close the file, try one last upload and save the state a restart
continues from. Each file carries ``flowlake.capture`` metadata: this
process's ``run_id``, its ``seq``, the intervals it covers and the drops by
reason since the previous file.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from flowlake.config import conf_dir

from .aggregate import IntervalAggregator, RecordFilter
from .config import SAFE_SECTIONS, CaptureConfig, load_capture_config
from .identity import LocalIdentitySource
from .metrics import CaptureMetrics, set_counter
from .roll import RollingWriter, SequenceCounter, fsync_dir, records_table, write_parquet_atomic
from .sockdiag import SockDiag
from .upload import Sink, Spool, Uploader, make_sink

log = logging.getLogger(__name__)

BOUNDARY_GRACE_S = 0.005  # lets programs that read the old generation finish
RELOAD_CHECK_S = 2.0
METRICS_EVERY_S = 5.0
IDENTITY_CHECK_S = 0.25
OPEN_STAGE_META_KEY = b"flowlake.open_interval"


class Sidecar:
    """One capture sidecar. ``probe_factory``/``diag_factory``/``clock`` are injectable for tests."""

    def __init__(self, cfg: CaptureConfig, *, config_path: str | Path | None = None,
                 probe_factory: Callable | None = None, diag_factory: Callable | None = None,
                 clock: Callable[[], float] = time.time, sink: Sink | None = None) -> None:
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path else conf_dir() / "capture.yaml"
        self.clock = clock
        self._probe_factory = probe_factory
        self._diag_factory = diag_factory or (lambda: SockDiag(netns_dirs=cfg.kernel.netns_dirs))
        self._sink_override = sink
        self.metrics = CaptureMetrics()
        self.metrics_port: int | None = None
        self.stopping = False
        self.run_id = uuid.uuid4().hex  # one sidecar process (flowlake.capture metadata)
        self.gen = 0  # the kernel's current generation (changes at every boundary and stage)
        self.interval_gen = 0  # the generation that opened the current interval
        self.interval_start_ms = 0
        self.next_boundary_s = 0.0
        self.next_stage_s = math.inf
        self._drops_seen: dict[str, int] = {}
        self.identity_source: LocalIdentitySource | None = None
        self._next_identity_check = 0.0
        self._config_mtime = self._mtime()
        self._next_reload_check = 0.0
        self._next_metrics = 0.0
        self._lock_fd: int | None = None
        self.probe = None

    # -- paths --------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return Path(self.cfg.state_dir)

    @property
    def state_file(self) -> Path:
        return self.state_dir / "connections.json"

    @property
    def open_stage_file(self) -> Path:
        return self.state_dir / "open-interval.parquet"

    def _mtime(self) -> float | None:
        try:
            return self.config_path.stat().st_mtime
        except OSError:
            return None

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _mono_to_wall_ms(self, mono_ns: int) -> int:
        return int((mono_ns + self._mono_offset_ns) // 1_000_000)

    # -- start ----------------------------------------------------------------
    def start(self) -> None:
        """Recover, attach and adopt: after this every TCP connection is counted."""
        cfg = self.cfg
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.state_dir / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another sidecar holds {self.state_dir}/lock: stop it or use another state_dir") from None
        self.spool = Spool(directory=cfg.spool.dir, max_bytes=cfg.spool.max_bytes)
        self.sink = self._sink_override or make_sink(cfg.sink)
        self.uploader = Uploader(spool=self.spool, sink=self.sink, backoff_initial_s=cfg.sink.backoff_initial_s,
                                 backoff_max_s=cfg.sink.backoff_max_s, clock=time.monotonic)
        self.writer = RollingWriter(
            staging_dir=self.state_dir / "staging", spool=self.spool, instance_id=cfg.identity.instance_id,
            seq=SequenceCounter(path=self.state_dir / "seq"), intervals_per_file=cfg.rolling.intervals_per_file,
            max_file_records=cfg.rolling.max_file_records, run_id=self.run_id,
        )
        staged_state = self._recover_open_stage()
        recovered = self.writer.close_file()  # intervals staged before a crash
        if recovered:
            log.info("recovered %d staged file(s) from a previous run", len(recovered))
        self._mono_offset_ns = time.time_ns() - time.monotonic_ns()
        self.aggregator = IntervalAggregator(
            identity=cfg.identity.model_dump(), mono_to_wall_ms=self._mono_to_wall_ms,
            record_filter=RecordFilter.from_config(cfg.filters),
        )
        if cfg.identity.local_dir:
            self.identity_source = LocalIdentitySource(directory=cfg.identity.local_dir)
            self.aggregator.local_workloads = self.identity_source.load()
        if staged_state is not None:  # newer than connections.json: the stage's snapshot reported up to it
            self.aggregator.load_state(staged_state)
        elif self.state_file.is_file():
            try:
                self.aggregator.load_state(json.loads(self.state_file.read_text()))
            except (ValueError, KeyError) as exc:
                log.error("ignoring unreadable state %s (%s)", self.state_file, exc)
        if self._probe_factory is not None:
            self.probe = self._probe_factory()
        else:
            from .probes import make_probe  # noqa: PLC0415

            k = cfg.kernel
            self.probe = make_probe(max_conns=k.max_conns, max_flows=k.max_flows, ringbuf_pages=k.ringbuf_pages,
                                    cgroup_path=k.cgroup_path, compile_in_child=k.compile_in_child)
        self.diag = self._diag_factory()
        self.probe.open_events(self._on_event)
        self.gen = self.interval_gen = 1
        self.interval_start_ms = self._now_ms()
        self.aggregator.begin(gen=self.gen, start_ms=self.interval_start_ms)
        self.probe.set_generation(self.gen)
        self._detach_stale_program()
        self.probe.attach()
        self._write_prog_id()
        sockets, listening = self.diag.dump()
        adopted = self.aggregator.adopt_existing(sockets, listening=listening, conn_lookup=self.probe.lookup_conn)
        self.next_boundary_s = self._next_boundary(self.clock())
        self.next_stage_s = self._next_stage(self.clock())
        if cfg.metrics.enabled:
            self.metrics_port = self.metrics.serve(host=cfg.metrics.host, port=cfg.metrics.port)
        self.uploader.drain(force=True)
        self._update_metrics()
        log.info("capture started: instance %s, run %s, interval %ss, %d open connection(s) adopted, sink %s",
                 cfg.identity.instance_id, self.run_id, cfg.interval_s, adopted, self.sink.describe())

    def _detach_stale_program(self) -> None:
        """A killed predecessor on this state_dir may have left its program attached: detach it."""
        path = self.state_dir / "prog_id"
        try:
            prev = int(path.read_text())
        except (OSError, ValueError):
            return
        self.probe.detach_stale(prev)

    def _write_prog_id(self) -> None:
        path = self.state_dir / "prog_id"
        tmp = path.with_name("prog_id.tmp")
        tmp.write_text(str(self.probe.prog_id))
        os.replace(tmp, path)

    def _recover_open_stage(self) -> dict | None:
        """Write the interval a killed run had staged (everything up to its last stage) as an interval.

        Returns the open-connection state saved with that stage (None when nothing was recovered).
        """
        path = self.open_stage_file
        if not path.is_file():
            return None
        try:
            table = pq.read_table(path)
            meta = json.loads(table.schema.metadata[OPEN_STAGE_META_KEY])
            start_ms = int(meta["interval_start_ms"])
            state = meta["state"]
            if state.get("version") != 1:
                raise ValueError(f"state version {state.get('version')!r}")
        except Exception as exc:  # noqa: BLE001 - a damaged stage must not stop capture
            bad = path.with_name(path.name + ".bad")
            os.replace(path, bad)
            log.error("staged open interval %s unreadable, moved to %s: %s", path, bad, exc)
            return None
        last = self.writer.last_interval_start_ms
        if last is not None and start_ms <= last:  # the interval was written before the stop
            path.unlink()
            return None
        records = table.replace_schema_metadata(None).to_pylist()
        self.writer.add_interval(records, interval_start_ms=start_ms, drops=meta.get("drops", {}))
        path.unlink()
        fsync_dir(self.state_dir)
        log.warning("recovered the interval open when run %s stopped without flushing: %d record(s) staged at %d "
                    "(closes after that were not recorded)", meta.get("run_id"), len(records),
                    int(meta.get("staged_ms", 0)))
        return state

    def _on_event(self, ev) -> None:
        self.metrics.close_events.inc()
        self.aggregator.add_close_event(ev)

    def _next_boundary(self, now_s: float) -> float:
        step = self.cfg.interval_s
        return (math.floor(now_s / step) + 1) * step

    def _next_stage(self, now_s: float) -> float:
        stage = self.cfg.stage_s
        return now_s + stage if 0 < stage < self.cfg.interval_s else math.inf

    # -- run --------------------------------------------------------------------
    def run(self, *, install_signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or ``stopping`` is set), then flush."""
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        try:
            while not self.stopping:
                self.step()
        finally:
            self.shutdown()

    def _on_signal(self, signum, _frame) -> None:
        log.info("signal %d: flushing the open interval", signum)
        self.stopping = True

    def step(self) -> None:
        """One pass of the main loop: events, boundary, upload, reload."""
        now = self.clock()
        if now >= self.next_boundary_s:
            self.close_interval()
            self.next_boundary_s = self._next_boundary(self.clock())
            self.next_stage_s = self._next_stage(self.clock())
            self._next_metrics = 0.0
            now = self.clock()
        elif now >= self.next_stage_s:
            self.stage_open_interval()
            self.next_stage_s = self._next_stage(self.clock())
            now = self.clock()
        longest = IDENTITY_CHECK_S if self.identity_source is not None else 0.5
        wait_ms = int(max(0.0, min(self.next_boundary_s - now, self.next_stage_s - now, longest)) * 1000)
        self.probe.poll_events(timeout_ms=max(wait_ms, 1))
        self.uploader.drain()
        mono = time.monotonic()
        if self.identity_source is not None and mono >= self._next_identity_check:
            self._next_identity_check = mono + IDENTITY_CHECK_S
            self.maybe_reload_identity()
        if mono >= self._next_reload_check:
            self._next_reload_check = mono + RELOAD_CHECK_S
            self.maybe_reload()
        if mono >= self._next_metrics:
            self._next_metrics = mono + METRICS_EVERY_S
            self._update_metrics()

    def maybe_reload_identity(self) -> bool:
        """Apply a changed identity directory from now on: the open interval closes at the change."""
        if not self.identity_source.changed():
            return False
        mapping = self.identity_source.load()
        if mapping == self.aggregator.local_workloads:
            return False
        self.close_interval()  # what happened before the change keeps the old identity
        self.aggregator.local_workloads = mapping
        log.info("identity directory changed: %d local IP(s) mapped to a workload", len(mapping))
        return True

    # -- drops ---------------------------------------------------------------------
    def _drop_totals(self) -> dict[str, int]:
        totals = dict(self.probe.drops()) if self.probe is not None else {}
        totals["spool_evicted_files"] = self.spool.dropped_files
        totals["untracked_closes"] = self.aggregator.untracked_closes
        return totals

    def _drops_since_last(self, *, take: bool) -> dict[str, int]:
        """Drops by reason since the last taken interval (``take`` moves the mark)."""
        totals = self._drop_totals()
        delta = {reason: max(0, value - self._drops_seen.get(reason, 0)) for reason, value in totals.items()}
        if take:
            self._drops_seen = totals
        return delta

    # -- staging ---------------------------------------------------------------------
    def stage_open_interval(self) -> None:
        """Switch to a new kernel generation within the interval and stage the interval so far to disk.

        The stage holds the closes so far and the open connections' shares up
        to now (a sock_diag snapshot), with the open-connection state that goes
        with them. After a SIGKILL the next start writes the stage as the
        interval and continues from its state (``_recover_open_stage``).
        """
        staged_ms = self._now_ms()
        old_gen, new_gen = self.gen, self.gen + 1
        self.aggregator.extend(gen=self.interval_gen, new_gen=new_gen)
        self.probe.set_generation(new_gen)
        self.gen = new_gen
        time.sleep(BOUNDARY_GRACE_S)
        self.probe.consume_events()
        self.aggregator.add_kernel_flows(self.probe.drain_flows(gen=old_gen))
        # open connections' share so far too, so the saved state and the stage agree
        sockets, listening = self.diag.dump()
        self.aggregator.add_snapshot(gen=old_gen, sockets=sockets, listening=listening,
                                     conn_lookup=self.probe.lookup_conn)
        records = self.aggregator.peek(gen=self.interval_gen, end_ms=staged_ms)
        meta = {"run_id": self.run_id, "interval_start_ms": self.interval_start_ms, "staged_ms": staged_ms,
                "drops": self._drops_since_last(take=False), "state": self.aggregator.state()}
        table = records_table(records)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               OPEN_STAGE_META_KEY: json.dumps(meta).encode()})
        write_parquet_atomic(table=table, path=self.open_stage_file)

    def _clear_stage(self) -> None:
        try:
            self.open_stage_file.unlink()
        except FileNotFoundError:
            pass

    def close_interval(self, *, final: bool = False) -> list[str]:
        """Close the current interval: switch generation, collect, write; returns closed file keys."""
        end_ms = self._now_ms()
        old_gen, new_gen = self.gen, self.gen + 1
        if new_gen not in self.aggregator.intervals:  # else: a failed attempt already opened it
            self.aggregator.begin(gen=new_gen, start_ms=end_ms)
        self.probe.set_generation(new_gen)
        time.sleep(BOUNDARY_GRACE_S)
        self.probe.consume_events()
        self.aggregator.add_kernel_flows(self.probe.drain_flows(gen=old_gen))
        sockets, listening = self.diag.dump()
        self.aggregator.add_snapshot(gen=old_gen, sockets=sockets, listening=listening,
                                     conn_lookup=self.probe.lookup_conn)
        records = self.aggregator.end(gen=old_gen, end_ms=end_ms)
        keys = self.writer.add_interval(records, interval_start_ms=self.interval_start_ms,
                                        drops=self._drops_since_last(take=True))
        self.gen = self.interval_gen = new_gen
        self.interval_start_ms = end_ms
        self.metrics.intervals.inc()
        self.save_state()
        self._clear_stage()  # after the state: a stage is never the only record of what was reported
        log.debug("interval gen %d closed: %d records", old_gen, len(records))
        return keys

    def save_state(self) -> None:
        tmp = self.state_file.with_name("connections.json.tmp")
        tmp.write_text(json.dumps(self.aggregator.state()))
        os.replace(tmp, self.state_file)
        fsync_dir(self.state_dir)

    def shutdown(self) -> None:
        """Flush: close the open interval and the file, detach, upload once, save state."""
        if self.probe is None:
            return
        try:
            self.close_interval()
            # Closes between that boundary and the detach form one last short interval.
            self.probe.detach()
            end_ms = self._now_ms()
            self.probe.consume_events()
            self.aggregator.add_kernel_flows(self.probe.drain_flows(gen=self.gen))
            records = self.aggregator.end(gen=self.gen, end_ms=end_ms)
            self.writer.add_interval(records, interval_start_ms=self.interval_start_ms,
                                     drops=self._drops_since_last(take=True))
            self.writer.close_file()
            self._clear_stage()
            self.save_state()
            self.uploader.drain(force=True)
            self._update_metrics()
            log.info("kernel side: %s, drops: %s, late inputs: %d, untracked closes: %d",
                     self.probe.stats(), self.probe.drops(), self.aggregator.late_inputs,
                     self.aggregator.untracked_closes)
        finally:
            self.probe.close()
            self.probe = None
            self.diag.close()
            self.metrics.stop()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
        log.info("capture stopped: %d file(s) left in the spool", len(self.spool.entries()))

    # -- hot reload -------------------------------------------------------------
    def maybe_reload(self) -> bool:
        """Apply safe settings from a changed config file; returns True when something changed."""
        mtime = self._mtime()
        if mtime == self._config_mtime:
            return False
        self._config_mtime = mtime
        try:
            new = load_capture_config(path=self.config_path if self.config_path.is_file() else None)
        except Exception as exc:  # noqa: BLE001 - a bad edit must not stop capture
            log.error("config %s not reloaded, keeping the running settings: %s", self.config_path, exc)
            return False
        return self.apply_config(new)

    def apply_config(self, new: CaptureConfig) -> bool:
        """Apply the safe sections of ``new``; log the ones that need a restart."""
        old = self.cfg
        changed = False
        if new.interval_s != old.interval_s or new.stage_s != old.stage_s:
            old.interval_s, old.stage_s = new.interval_s, new.stage_s
            self.next_boundary_s = self._next_boundary(self.clock())
            self.next_stage_s = self._next_stage(self.clock())
            changed = True
        if new.filters != old.filters:
            old.filters = new.filters
            self.aggregator.record_filter = RecordFilter.from_config(new.filters)
            changed = True
        if new.rolling != old.rolling:
            old.rolling = new.rolling
            self.writer.configure(intervals_per_file=new.rolling.intervals_per_file,
                                  max_file_records=new.rolling.max_file_records)
            changed = True
        if new.sink != old.sink and self._sink_override is None:
            old.sink = new.sink
            self.sink = make_sink(new.sink)
            self.uploader.set_sink(self.sink, backoff_initial_s=new.sink.backoff_initial_s,
                                   backoff_max_s=new.sink.backoff_max_s)
            changed = True
        unsafe = [name for name in type(new).model_fields
                  if name not in SAFE_SECTIONS and name != "component" and getattr(new, name) != getattr(old, name)]
        if unsafe:
            log.warning("config changes to %s take effect only after a restart", ", ".join(unsafe))
        if changed:
            log.info("reloaded safe settings from %s", self.config_path)
        return changed

    # -- metrics ------------------------------------------------------------------
    def _update_metrics(self) -> None:
        m = self.metrics
        set_counter(m.records_written, self.writer.records_written)
        set_counter(m.files_written, self.writer.files_written)
        set_counter(m.files_uploaded, self.uploader.files_uploaded)
        set_counter(m.bytes_uploaded, self.uploader.bytes_uploaded)
        set_counter(m.upload_failures, self.uploader.failures)
        set_counter(m.spool_dropped, self.spool.dropped_files)
        entries = self.spool.entries()
        m.spool_files.set(len(entries))
        m.spool_bytes.set(sum(p.stat().st_size for _, p in entries if p.exists()))
        m.upload_lag.set(self.spool.oldest_age_s(now=time.time()))
        if self.probe is not None:
            for reason, value in self.probe.drops().items():
                m.kernel_drops.labels(reason=reason).set(value)
        m.sample_process()


def run_sidecar(*, config_path: str | Path | None = None, **overrides) -> None:
    """Load the config and run a sidecar until SIGTERM."""
    cfg = load_capture_config(path=config_path, **overrides)
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sidecar = Sidecar(cfg, config_path=config_path)
    sidecar.start()
    sidecar.run()
