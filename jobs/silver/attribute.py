"""silver/flows_attributed: each record's remote IP attributed to the workload that held it
at the record's first_start_ms, by one as-of join.

Order of trust: a heartbeat range, then an event range, then (only for an
address no range ever named) the CIDR classes of conf; anything else is
``unattributed`` — never a guess. In particular an address inside internal
space with no owner at that time, a heartbeat conflict, and an address that
had owners at other times but none then, are all unattributed.

``attribution_note`` says why a record is unattributed: ``no evidence``,
``conflict``, ``lag margin``, ``guard: silent sidecar``, ``guard: stale range``
(the doubt ranges of :mod:`flowlake.jobs.silver.ownership`), or the per-record
guards ``guard: port`` and ``guard: peer`` (:mod:`flowlake.jobs.silver.guards`).
A guard only ever turns an attribution into ``unattributed``, never into another owner.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowlake.jobs.silver.asof import asof_join
from flowlake.jobs.silver.guards import guard_notes, port_profiles, ports_seen, record_hour
from flowlake.jobs.config import AttributionParams
from flowlake.jobs.silver.ips import cidr_class_col
from flowlake.jobs.silver.ownership import SOURCE_EVENT, SOURCE_HEARTBEAT
from flowlake.timeutil import HOUR_MS
from flowlake.jobs.silver.ranges import BEFORE_ALL, OPEN_END, covering, elementary_segments, merge_adjacent

ATTR_HEARTBEAT = SOURCE_HEARTBEAT
ATTR_EVENT = SOURCE_EVENT
ATTR_CIDR = "cidr"
ATTR_UNATTRIBUTED = "unattributed"
SOURCE_DOUBT = "doubt"
SOURCE_PRIORITY = {SOURCE_HEARTBEAT: 0, SOURCE_EVENT: 1, SOURCE_DOUBT: 2}
LOOKUP_DDL = ("ip string, ts_ms bigint, workload string, source string, kind string, availability_zone string, "
              "note string, rank int")
NOTE_NO_EVIDENCE = "no evidence"
_OWNER_COLS = ["workload", "source", "kind", "availability_zone", "note"]


def ownership_timeline(ownership: DataFrame, doubts: DataFrame | None = None) -> DataFrame:
    """Disjoint per-ip segments of the trusted owner: heartbeat over event where both cover a time;
    doubt ranges (no owner, with a ``note``) only where no range covers the time."""
    ranges = ownership.select("ip", "valid_from_ms", "valid_to_ms", "workload", "source", "kind",
                              "availability_zone", F.lit(None).cast("string").alias("note"))
    if doubts is not None:
        ranges = ranges.unionByName(doubts.select(
            "ip", "valid_from_ms", "valid_to_ms", F.lit(None).cast("string").alias("workload"),
            F.lit(SOURCE_DOUBT).alias("source"), F.lit(None).cast("string").alias("kind"),
            F.lit(None).cast("string").alias("availability_zone"), F.col("reason").alias("note")))
    ranges = ranges.withColumn("valid_to_ms", F.coalesce("valid_to_ms", F.lit(OPEN_END)))
    segs = elementary_segments(ranges, key="ip", start="valid_from_ms", end="valid_to_ms")
    cov = covering(segs, ranges, key="ip", start="valid_from_ms", end="valid_to_ms")
    priority = F.create_map(*[x for k, v in SOURCE_PRIORITY.items() for x in (F.lit(k), F.lit(v))])
    best = cov.groupBy("ip", "seg_from", "seg_to").agg(
        F.min_by(F.struct(*_OWNER_COLS), priority[F.col("source")]).alias("o")
    )
    return merge_adjacent(best.select("ip", "seg_from", "seg_to", "o.*"), key="ip", same=_OWNER_COLS)


def lookup_points(ownership: DataFrame, remote_ips: DataFrame, *, params: AttributionParams,
                  known_ips: DataFrame | None = None, doubts: DataFrame | None = None) -> DataFrame:
    """Change points (LOOKUP_DDL) for the as-of join.

    Each owned segment starts a point and its end (if any) starts a point with
    no owner; a doubt segment starts a point with no owner and its reason in
    ``note``; every address with any range gets a no-owner point before all
    time; addresses no range names get one point before all time with their
    CIDR class (``cidr``) or none (internal space: ``unattributed``).
    ``known_ips`` (column ``ip``) are the addresses any range ever named
    (default: those of ``ownership``). ``rank`` orders points of one instant:
    an owner's start, then a doubt's start, then an end.
    """
    timeline = ownership_timeline(ownership, doubts)
    doubt = F.col("source") == SOURCE_DOUBT
    starts = timeline.select(
        "ip", F.col("valid_from").alias("ts_ms"), "workload",
        F.when(doubt, F.lit(ATTR_UNATTRIBUTED)).otherwise(F.col("source")).alias("source"),
        "kind", "availability_zone", "note", F.when(doubt, 1).otherwise(0).alias("rank"))

    def no_owner(note: str | None, rank: int) -> list:
        return [F.lit(None).cast("string").alias("workload"), F.lit(ATTR_UNATTRIBUTED).alias("source"),
                F.lit(None).cast("string").alias("kind"), F.lit(None).cast("string").alias("availability_zone"),
                F.lit(note).cast("string").alias("note"), F.lit(rank).alias("rank")]

    ends = timeline.where(F.col("valid_to") < OPEN_END).select(
        "ip", F.col("valid_to").alias("ts_ms"), *no_owner(NOTE_NO_EVIDENCE, 2))
    known = (ownership if known_ips is None else known_ips).select("ip").distinct()
    before_all = known.select("ip", F.lit(BEFORE_ALL).alias("ts_ms"), *no_owner(NOTE_NO_EVIDENCE, 2))
    unknown = remote_ips.select(F.col("remote_ip").alias("ip")).distinct().join(known, "ip", "left_anti")
    cls = cidr_class_col("ip", classes=params.cidr_classes)
    by_cidr = unknown.select(
        "ip", F.lit(BEFORE_ALL).alias("ts_ms"), cls.alias("workload"),
    ).select(
        "ip", "ts_ms", "workload",
        F.when(F.col("workload").isNotNull(), F.lit(ATTR_CIDR)).otherwise(F.lit(ATTR_UNATTRIBUTED)).alias("source"),
        F.when(F.col("workload").isNotNull(), F.lit("external")).alias("kind"),
        F.lit(None).cast("string").alias("availability_zone"),
        F.when(F.col("workload").isNull(), F.lit(NOTE_NO_EVIDENCE)).alias("note"), F.lit(2).alias("rank"),
    )
    return starts.unionByName(ends).unionByName(before_all).unionByName(by_cidr)


def _lookup(flows: DataFrame, points: DataFrame, *, ip_col: str, prefix: str, broadcast: bool,
            bucket_ms: int) -> DataFrame:
    return asof_join(
        flows, points, on=ip_col, right_on="ip", left_ts="first_start_ms", right_ts="ts_ms", right_prefix=prefix,
        # at one instant an owner's start beats a doubt's start, which beats an end marker
        tie_breaker=[F.col("rank").asc(), F.col("source").asc()],
        broadcast_right=broadcast, bucket_ms=bucket_ms,
    )


def transform(flows: DataFrame, ownership: DataFrame, *, params: AttributionParams,
              known_ips: DataFrame | None = None, doubts: DataFrame | None = None, broadcast: bool | None = None,
              bucket_ms: int = HOUR_MS, seen: DataFrame | None = None) -> DataFrame:
    """Attributed flows: every input column plus local_workload_resolved, remote_workload,
    remote_attribution, remote_availability_zone, remote_kind and attribution_note.

    ``doubts`` (ip, valid_from_ms, valid_to_ms, reason) name why times without
    an owner have none. ``broadcast=None`` broadcasts the change points when
    there are at most ``params.broadcast_max_rows`` of them (one count of that
    small table), and otherwise joins on (ip, ``bucket_ms`` time bucket).
    ``seen`` (:func:`~flowlake.jobs.silver.guards.ports_seen`; default: of ``flows``, peers named by the
    heartbeat ranges of ``ownership``) is what the guards learn from: give the ``learn_lookback_hours``
    before the flows' first hour too (:func:`~flowlake.jobs.silver.guards.port_profiles`)."""
    points = lookup_points(ownership, flows.select("remote_ip"), params=params, known_ips=known_ips, doubts=doubts)
    if broadcast is None:
        broadcast = points.count() <= params.broadcast_max_rows
    remote = _lookup(flows, points, ip_col="remote_ip", prefix="_r_", broadcast=broadcast, bucket_ms=bucket_ms)
    both = _lookup(remote, points, ip_col="local_ip", prefix="_l_", broadcast=broadcast, bucket_ms=bucket_ms)
    # guards: what the sidecars show each workload serving and calling (and to whom), per record hour
    hour = record_hour()
    if seen is None:
        seen = ports_seen(flows, ownership.where(F.col("source") == SOURCE_HEARTBEAT))
    profiles = port_profiles(seen, lookback_hours=params.learn_lookback_hours,
                             hours=flows.select(hour.alias("_pp_hour")).distinct())
    both = guard_notes(both, profiles, workload="_r_workload", guarded=F.col("_r_source") == ATTR_EVENT)
    doubted = F.col("_guard_note").isNotNull()
    attributed = (F.col("_r_workload").isNotNull() & F.col("_r_source").isin(ATTR_HEARTBEAT, ATTR_EVENT, ATTR_CIDR)
                  & ~doubted)
    owned = F.col("_r_source").isin(ATTR_HEARTBEAT, ATTR_EVENT) & ~doubted
    local_owned = F.col("_l_source").isin(ATTR_HEARTBEAT, ATTR_EVENT)
    note = (F.when(attributed, F.lit(None).cast("string")).when(doubted, F.col("_guard_note"))
            .otherwise(F.coalesce("_r_note", F.lit(NOTE_NO_EVIDENCE))))
    out = both.select(
        *flows.columns,
        F.coalesce("local_workload", F.when(local_owned, F.col("_l_workload"))).alias("local_workload_resolved"),
        F.when(attributed, F.col("_r_workload")).alias("remote_workload"),
        F.when(attributed, F.col("_r_source")).otherwise(F.lit(ATTR_UNATTRIBUTED)).alias("remote_attribution"),
        F.when(owned, F.col("_r_availability_zone")).alias("remote_availability_zone"),
        F.when(attributed, F.col("_r_kind")).alias("remote_kind"),
        note.alias("attribution_note"),
    )
    return out
