"""silver/ip_ownership is the same however time was cut into runs: splice keeps open holdings open,
merges a holding continued by the next run, and a re-run of an old window keeps what later runs wrote."""

from chispa import assert_df_equality

from flowlake.jobs.silver.ranges import splice, touching
from flowlake.lake import IP_OWNERSHIP

H = 3_600_000
KEY, SAME = ["ip", "source"], ["workload", "instance_id", "kind", "region", "availability_zone"]
COLS = [c.split()[0] for c in IP_OWNERSHIP.ddl.split(", ")]


def rows(spark, *ranges):
    """(ip, workload, from, to[, source]) -> ownership rows."""
    out = []
    for r in ranges:
        ip, workload, lo, hi, *source = r
        out.append((ip, workload, lo, hi, source[0] if source else "heartbeat", f"i-{workload}", "instance",
                    "r", "az"))
    return spark.createDataFrame(out, IP_OWNERSHIP.ddl)


def run_window(spark, stored, computed, lo, hi, *, open_end):
    """What the ownership stage publishes: the untouched stored rows plus the spliced ones."""
    kept = stored.subtract(touching(stored, from_ms=lo, to_ms=hi))
    new = splice(touching(stored, from_ms=lo, to_ms=hi), computed, key=KEY, same=SAME, from_ms=lo, to_ms=hi,
                 open_end=open_end)
    return kept.unionByName(new.select(*COLS))


def test_a_holding_open_at_the_window_end_stays_open_and_the_next_run_extends_it(spark):
    empty = rows(spark)
    # the computed range reaches past the window (evidence in the pad): open in the table
    first = run_window(spark, empty, rows(spark, ("10.0.0.1", "a", 10, 2 * H)), 0, H, open_end=True)
    assert_df_equality(first, rows(spark, ("10.0.0.1", "a", 10, None)), ignore_row_order=True, ignore_nullable=True)
    # the next hour sees it end at 1.5 h: one row, as a one-shot run over both hours writes
    second = run_window(spark, first, rows(spark, ("10.0.0.1", "a", H - 5, H + H // 2)), H, 2 * H, open_end=True)
    one_shot = run_window(spark, empty, rows(spark, ("10.0.0.1", "a", 10, H + H // 2)), 0, 2 * H, open_end=True)
    assert_df_equality(second, one_shot, ignore_row_order=True, ignore_nullable=True)
    assert second.count() == 1


def test_ip_reuse_at_the_window_edge_ends_the_old_holding_where_the_new_owner_starts(spark):
    first = run_window(spark, rows(spark), rows(spark, ("10.0.0.1", "a", 10, None, "event")), 0, H, open_end=True)
    # next hour: a's event range ended at 1.2 h, b holds the address from then on (still open)
    second = run_window(spark, first, rows(spark, ("10.0.0.1", "a", 10, int(1.2 * H), "event"),
                                           ("10.0.0.1", "b", int(1.2 * H), None, "event")), H, 2 * H, open_end=True)
    want = rows(spark, ("10.0.0.1", "a", 10, int(1.2 * H), "event"), ("10.0.0.1", "b", int(1.2 * H), None, "event"))
    assert_df_equality(second, want, ignore_row_order=True, ignore_nullable=True)


def test_rerunning_an_old_window_keeps_what_later_runs_published(spark):
    # three hours published hour by hour: a holds 10.0.0.1 from 0 on, still open; c holds 10.0.0.3 in hour 3
    stored = rows(spark, ("10.0.0.1", "a", 10, None), ("10.0.0.3", "c", 2 * H + 5, 2 * H + 50))
    # re-run hour 2 (late data: the same holding; IPv6 address appears in it too)
    again = run_window(spark, stored, rows(spark, ("10.0.0.1", "a", 0, 5 * H), ("2001:db8::1", "v6", H + 1, H + 9)),
                       H, 2 * H, open_end=False)
    want = rows(spark, ("10.0.0.1", "a", 10, None), ("10.0.0.3", "c", 2 * H + 5, 2 * H + 50),
                ("2001:db8::1", "v6", H + 1, H + 9))
    assert_df_equality(again, want, ignore_row_order=True, ignore_nullable=True)


def test_a_holding_that_ends_exactly_at_the_window_end_is_closed_not_open(spark):
    out = run_window(spark, rows(spark), rows(spark, ("10.0.0.1", "a", 10, H)), 0, H, open_end=True)
    assert_df_equality(out, rows(spark, ("10.0.0.1", "a", 10, H)), ignore_row_order=True, ignore_nullable=True)
