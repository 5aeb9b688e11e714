"""The sidecar's own metrics on a loopback Prometheus endpoint."""

from __future__ import annotations

import os
import resource

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class CaptureMetrics:
    """Counters and gauges of one sidecar; ``serve`` exposes them on loopback only."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.records_written = Counter("flowlake_capture_records_written", "Flow records written to files", registry=r)
        self.files_written = Counter("flowlake_capture_files_written", "Raw flow files closed", registry=r)
        self.files_uploaded = Counter("flowlake_capture_files_uploaded", "Files the sink accepted", registry=r)
        self.bytes_uploaded = Counter("flowlake_capture_bytes_uploaded", "Bytes the sink accepted", registry=r)
        self.upload_failures = Counter("flowlake_capture_upload_failures", "Failed upload attempts", registry=r)
        self.upload_lag = Gauge("flowlake_capture_upload_lag_seconds", "Age of the oldest file in the spool", registry=r)
        self.spool_bytes = Gauge("flowlake_capture_spool_bytes", "Bytes waiting in the spool", registry=r)
        self.spool_files = Gauge("flowlake_capture_spool_files", "Files waiting in the spool", registry=r)
        self.spool_dropped = Counter("flowlake_capture_spool_dropped_files", "Files dropped over the spool bound", registry=r)
        self.kernel_drops = Gauge("flowlake_capture_kernel_drops", "What the kernel side could not record, by reason",
                                  ["reason"], registry=r)
        self.close_events = Counter("flowlake_capture_close_events", "Close events read from the kernel", registry=r)
        self.cpu_seconds = Gauge("flowlake_capture_cpu_seconds", "CPU time of the sidecar process (user+system)", registry=r)
        self.rss_bytes = Gauge("flowlake_capture_rss_bytes", "Resident memory of the sidecar process", registry=r)
        self.intervals = Counter("flowlake_capture_intervals", "Intervals closed", registry=r)
        self._server = None

    def serve(self, *, host: str, port: int) -> int:
        """Start the HTTP endpoint; returns the bound port (``port`` 0 picks one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return server.server_port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def sample_process(self) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu_seconds.set(usage.ru_utime + usage.ru_stime)
        self.rss_bytes.set(current_rss_bytes())


def current_rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def set_counter(counter: Counter, value: float) -> None:
    """Move a Counter up to an absolute total kept elsewhere."""
    delta = value - counter._value.get()  # noqa: SLF001 - prometheus_client has no public setter
    if delta > 0:
        counter.inc(delta)


