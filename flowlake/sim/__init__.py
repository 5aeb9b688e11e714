"""The fleet simulator: raw flow files, IP-assignment events and ground truth (``flowlake simulate``)."""

from flowlake.sim.core import SimSummary, simulate
from flowlake.sim.params import SimParams

__all__ = ["SimParams", "SimSummary", "simulate"]
