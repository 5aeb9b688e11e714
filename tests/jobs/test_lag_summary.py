"""The ownership stage's one line about the tracker's lag margins, however long the span."""
from __future__ import annotations

from flowlake.jobs.silver.tracker_lag import TrackerLag, lag_summary
from flowlake.timeutil import HOUR_MS

FLEET_MS, FALLBACK_MS = 10_000, 30_000


def _hour(h: int, *, pairs: int, margin_ms: int, source: str) -> TrackerLag:
    return TrackerLag(hour_start_ms=h * HOUR_MS, pairs=pairs, quantile=0.999, lag_quantile_ms=None, lag_max_ms=None,
                      margin_ms=margin_ms, margin_source=source, lifetime_quantile=0.99, lifetime_quantile_ms=None)


def test_a_week_of_hours_is_one_short_line_most_common_margin_first():
    hours = [_hour(h, pairs=5 + h % 20, margin_ms=FALLBACK_MS, source="fallback") for h in range(162)]
    hours += [_hour(162 + h, pairs=30 + h, margin_ms=FLEET_MS, source="fleet") for h in range(6)]
    assert lag_summary(hours) == ("tracker lag margin 30000 ms (fallback, 5-24 pair(s)) in 162 of 168 h; "
                                  "10000 ms (fleet, 30-35 pair(s)) in 6 of 168 h")


def test_one_hour_one_pair_count():
    assert lag_summary([_hour(0, pairs=34, margin_ms=FLEET_MS, source="fleet")]) == \
        "tracker lag margin 10000 ms (fleet, 34 pair(s)) in 1 of 1 h"
