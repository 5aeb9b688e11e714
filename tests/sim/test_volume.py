"""Traffic volume: record target, daily cycle, weekend dip, growth."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowlake.sim import SimParams, simulate
from flowlake.sim.flows import cycle_weights
from flowlake.sim.params import Window


def test_cycle_weights_shape():
    p = SimParams(start="2025-06-06T00:00:00Z", hours=72, daily_amplitude=0.5, daily_peak_hour_utc=20,
                  weekend_dip=0.2, growth_per_day=0.0)
    w = cycle_weights(p, Window.of(p))
    hourly = w.reshape(-1, 60).mean(axis=1)
    assert np.argmax(hourly[:24]) in (19, 20) and np.argmin(hourly[:24]) in (7, 8)
    assert hourly[:24].max() / hourly[:24].min() > 2.5
    friday, saturday = hourly[:24].mean(), hourly[24:48].mean()
    assert abs(saturday / friday - 0.8) < 0.02
    g = SimParams(start="2025-06-02T00:00:00Z", hours=48, growth_per_day=0.1, daily_amplitude=0.0)
    wg = cycle_weights(g, Window.of(g))
    assert abs(wg[-1] / wg[0] - 1.1**2) < 0.01


def test_daily_cycle_and_target(tmp_path):
    p = SimParams(hours=24, records=40_000, batch_intervals=60, n_workloads=16, seed=2)
    s = simulate(out=str(tmp_path), params=p, progress=False)
    assert abs(s.records - 40_000) / 40_000 < 0.1
    t = pd.read_parquet(tmp_path / "truth/flows", columns=["interval_start_ms"])
    f = pd.read_parquet(tmp_path / "flows/v1", columns=["interval_start_ms", "connections_opened", "bytes_sent"])
    hour = pd.to_datetime(f.interval_start_ms, unit="ms").dt.hour
    conns = f.groupby(hour).connections_opened.sum()
    assert conns.loc[18:22].mean() > 1.8 * conns.loc[6:10].mean()
    recs = t.groupby(pd.to_datetime(t.interval_start_ms, unit="ms").dt.hour).size()
    assert recs.loc[18:22].mean() > 1.3 * recs.loc[6:10].mean()
