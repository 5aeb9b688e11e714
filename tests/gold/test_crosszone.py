"""gold_crosszone: daily bytes per zone scope, priced from conf."""

from __future__ import annotations

import datetime as dt

import pytest

from flowlake.jobs.gold import crosszone as gold_crosszone
from flowlake.jobs.config import Prices
from tests.gold.helpers import HOUR, T0, dep, deps_df

PRICES = Prices(bytes_per_gb=1000, same_az_usd_per_gb=0.0, cross_az_usd_per_gb=0.02,
                cross_region_usd_per_gb=0.05, unknown_usd_per_gb=0.09)


def test_costs_add_up_to_bytes_times_rate_per_scope(spark):
    rows = [
        dep(src_availability_zone="us-east-1a", dst_availability_zone="us-east-1a", bytes_to_dst=500, bytes_to_src=500),
        dep(src_availability_zone="us-east-1a", dst_availability_zone="us-east-1b", bytes_to_dst=3000,
            bytes_to_src=1000),
        dep(hour_start_ms=T0 + HOUR, src_availability_zone="us-east-1a", dst_availability_zone="us-east-1b",
            dst_port=8080, bytes_to_dst=1000, bytes_to_src=0),
        dep(src_availability_zone="us-east-1a", dst_availability_zone="eu-west-1b", bytes_to_dst=2000,
            bytes_to_src=0),
        dep(src_availability_zone="us-east-1a", dst_workload="external:internet", dst_availability_zone=None,
            bytes_to_dst=10_000, bytes_to_src=0),
    ]
    out = {r.scope: r for r in gold_crosszone.transform(deps_df(spark, rows), prices=PRICES).collect()}
    assert set(out) == {"same_az", "cross_az", "cross_region", "unknown"}
    # two hours (and two ports) of one pair make one daily row
    assert out["cross_az"].bytes_total == 5000
    assert out["cross_az"].cost_usd == pytest.approx(5000 / 1000 * 0.02)
    assert out["same_az"].cost_usd == 0.0
    assert out["cross_region"].cost_usd == pytest.approx(2 * 0.05)
    assert (out["cross_region"].src_region, out["cross_region"].dst_region) == ("us-east-1", "eu-west-1")
    assert out["unknown"].cost_usd == pytest.approx(10 * 0.09)
    total = sum(r.cost_usd for r in out.values())
    assert total == pytest.approx(sum(r.bytes_total * r.usd_per_gb / 1000 for r in out.values()))


def test_pair_split_into_days_at_midnight(spark):
    rows = [dep(hour_start_ms=T0 + 23 * HOUR, bytes_to_dst=10, bytes_to_src=0),
            dep(hour_start_ms=T0 + 24 * HOUR, bytes_to_dst=20, bytes_to_src=0)]
    out = sorted((r.day, r.bytes_total) for r in gold_crosszone.transform(deps_df(spark, rows), prices=PRICES).collect())
    assert out == [(dt.date(2026, 1, 1), 10), (dt.date(2026, 1, 2), 20)]


def test_cross_az_is_charged_on_both_sides_of_the_connection(spark):
    """The public cross-AZ rate applies to each side's bytes: a pair that only sends and a pair that
    only receives cost the same, and bytes both ways cost the sum (conf: 0.01/GB each side = 0.02/GB
    of bytes transferred, counted over both directions)."""
    from flowlake.jobs.config import load_insight_config

    prices = load_insight_config().prices
    gb = prices.bytes_per_gb
    rows = [
        dep(src_workload="a", dst_workload="b", src_availability_zone="us-east-1a", dst_availability_zone="us-east-1b",
            bytes_to_dst=3 * gb, bytes_to_src=0),
        dep(src_workload="c", dst_workload="d", src_availability_zone="us-east-1a", dst_availability_zone="us-east-1b",
            bytes_to_dst=0, bytes_to_src=3 * gb),
        dep(src_workload="e", dst_workload="f", src_availability_zone="us-east-1a", dst_availability_zone="us-east-1b",
            bytes_to_dst=1 * gb, bytes_to_src=2 * gb),
    ]
    out = {r.src_workload: r for r in gold_crosszone.transform(deps_df(spark, rows), prices=prices).collect()}
    assert {r.scope for r in out.values()} == {"cross_az"}
    # 3 GB one way, the other way, or split: each GB is charged 0.01 at the sender and 0.01 at the receiver
    for w in ("a", "c", "e"):
        assert out[w].bytes_total == 3 * gb
        assert out[w].cost_usd == pytest.approx(3 * 2 * 0.01), w
