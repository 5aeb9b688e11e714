"""flowlake: network insight from eBPF flow logs (capture sidecar + lakehouse jobs)."""

__version__ = "0.1.0"
