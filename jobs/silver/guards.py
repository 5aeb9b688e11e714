"""Per-record guards of the lookup: what the sidecars show each workload doing, and the event-attributed
records that do not fit it. A guard only ever turns an attribution into ``unattributed``, never into
another owner.

* ``guard: port``: an event-attributed outbound record to a server port the attributed workload never
  served, while its sidecars show it serving other ports (or an inbound record on a local port the
  attributed client never called, while its sidecars show it calling other ports).
* ``guard: peer``: an event-attributed record between two workloads that the sidecars never show
  talking on that port, while they show both of them talking to others: the attributed server
  never served this record's (sidecar-known) client on the port, or the attributed client never
  called this record's server there. The other side of a sidecar's record is known when a heartbeat
  range of the published ownership covers the remote address at the record's start.

"Never" means within the record's profile window: the records with ``interval_start_ms`` in
[H - ``learn_lookback_hours``, H + 1 h) for the record's UTC hour H (the same whichever run computed
them). Workloads no sidecar ever shows (load balancers, NAT gateways) are not guarded.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from flowlake.jobs.silver.ranges import OPEN_END
from flowlake.timeutil import HOUR_MS

NOTE_PORT = "guard: port"
NOTE_PEER = "guard: peer"
# the key of a profile row is the direction of the records it checks: "outbound" rows are what a
# workload serves (checked on records that call it), "inbound" rows what it calls
SERVES, CALLS = "outbound", "inbound"
# a peer is named only for records whose connection began at most this long before the record's hour:
# an hour's rows then depend on the heartbeat ranges of [hour - PEER_REACH_MS, hour + 1h) only, whatever
# the run read (long-lived connections keep their port row, with no peer)
PEER_REACH_MS = HOUR_MS


def record_hour(col: str = "interval_start_ms") -> Column:
    """The UTC hour (epoch ms of its start) of a record, by ``interval_start_ms``."""
    return (F.floor(F.col(col) / HOUR_MS) * HOUR_MS).cast("bigint")


def record_port() -> Column:
    """The port a record's remote is checked on: the server port it calls (outbound records) or the
    local port it connects to (inbound records)."""
    return F.when(F.col("direction") == "outbound", F.col("remote_port")).otherwise(F.col("local_port"))


def ports_seen(flows: DataFrame, heartbeats: DataFrame | None = None) -> DataFrame:
    """(hour_start_ms, workload, direction, port, peer) the sidecars' own records show per UTC record hour
    (by ``interval_start_ms``): ports a workload serves (its inbound records' local port, keyed ``outbound``
    = the direction of the records the profile checks) and ports it calls (its outbound records' remote
    port, keyed ``inbound``), with ``peer`` the workload on the other side where ``heartbeats`` (heartbeat
    ranges: ip, workload, valid_from_ms, valid_to_ms nullable; give those touching [first hour -
    PEER_REACH_MS, last hour + 1h)) name it at the record's start, else null;
    a named peer also gives the mirror row (the peer calls or serves the port to the sidecar's workload).
    Small, and the same whichever run computed an hour: runs keep it per hour in ``silver/ports_seen``."""
    known = flows.where(F.col("local_workload").isNotNull()).select(
        record_hour().alias("hour_start_ms"), "local_workload", "direction", "local_port", "remote_port",
        "remote_ip", "first_start_ms")
    if heartbeats is None:
        known = known.withColumn("peer", F.lit(None).cast("string"))
    else:
        hb = heartbeats.select(F.col("ip").alias("_hb_ip"), F.col("workload").alias("peer"),
                               F.col("valid_from_ms").alias("_hb_from"),
                               F.coalesce("valid_to_ms", F.lit(OPEN_END)).alias("_hb_to"))
        covers = ((F.col("remote_ip") == F.col("_hb_ip")) & (F.col("first_start_ms") >= F.col("_hb_from"))
                  & (F.col("first_start_ms") < F.col("_hb_to"))
                  & (F.col("first_start_ms") >= F.col("hour_start_ms") - PEER_REACH_MS))
        known = known.join(hb, covers, "left").drop("_hb_ip", "_hb_from", "_hb_to")
    inbound = F.col("direction") == "inbound"
    port = record_port()
    own = known.select("hour_start_ms", F.col("local_workload").alias("workload"),
                       F.when(inbound, F.lit(SERVES)).otherwise(F.lit(CALLS)).alias("direction"),
                       port.alias("port"), "peer")
    mirror = known.where(F.col("peer").isNotNull()).select(
        "hour_start_ms", F.col("peer").alias("workload"),
        F.when(inbound, F.lit(CALLS)).otherwise(F.lit(SERVES)).alias("direction"), port.alias("port"),
        F.col("local_workload").alias("peer"))
    return own.unionByName(mirror).distinct()


def port_profiles(seen: DataFrame, *, lookback_hours: int, hours: DataFrame | None = None) -> DataFrame:
    """(_pp_workload, _pp_dir, _pp_port, _pp_peer, _pp_hour): what :func:`ports_seen` shows over the lookback
    of each UTC hour, [hour - lookback_hours, hour + 1h). A record of hour H is checked against hour H's
    profile only, so the result does not depend on how time was cut into runs.
    ``hours`` (column ``_pp_hour``): the hours to give profiles for (default: every hour the data reach)."""
    # each hour's data counts for the hours whose lookback holds it: itself and the lookback_hours after
    reach = F.sequence(F.col("hour_start_ms"), F.col("hour_start_ms") + F.lit(lookback_hours * HOUR_MS),
                       F.lit(HOUR_MS).cast("bigint"))
    out = seen.select(F.col("workload").alias("_pp_workload"), F.col("direction").alias("_pp_dir"),
                      F.col("port").alias("_pp_port"), F.col("peer").alias("_pp_peer"),
                      F.explode(reach).alias("_pp_hour"))
    if hours is not None:
        out = out.join(F.broadcast(hours), "_pp_hour", "left_semi")
    return out.distinct()


def _profile_sets(profiles: DataFrame, prefix: str) -> DataFrame:
    """One row per (workload, dir, hour): the ports seen and the "port|peer" keys of the named peers."""
    named = F.when(F.col("_pp_peer").isNotNull(), F.concat_ws("|", F.col("_pp_port").cast("string"), "_pp_peer"))
    return profiles.groupBy("_pp_workload", "_pp_dir", "_pp_hour").agg(
        F.collect_set("_pp_port").alias("ports"), F.collect_set(named).alias("peers"),
    ).select(*[F.col(c).alias(prefix + c.lstrip("_")) for c in ("_pp_workload", "_pp_dir", "_pp_hour", "ports", "peers")])


def guard_notes(records: DataFrame, profiles: DataFrame, *, workload: str, guarded: Column) -> DataFrame:
    """``records`` with ``_guard_note``: NOTE_PORT, NOTE_PEER or null, for the records where ``guarded`` holds
    (event-attributed to ``workload``, a column of the records) by the hour's ``profiles``."""
    hour, w, local = record_hour(), F.col(workload), F.col("local_workload")
    outbound = F.col("direction") == "outbound"
    port = record_port()
    other_dir = F.when(outbound, F.lit(CALLS)).otherwise(F.lit(SERVES))
    sets = _profile_sets(profiles, "_gr_")
    local_sets = _profile_sets(profiles, "_gl_")
    out = (records
           .join(F.broadcast(sets), (F.col("_gr_pp_workload") == w) & (F.col("_gr_pp_dir") == F.col("direction"))
                 & (F.col("_gr_pp_hour") == hour), "left")
           .join(F.broadcast(local_sets), (F.col("_gl_pp_workload") == local) & (F.col("_gl_pp_dir") == other_dir)
                 & (F.col("_gl_pp_hour") == hour), "left"))
    # the attributed workload is profiled on the port (it shows serving / calling some port) but not this one
    port_doubt = F.col("_gr_ports").isNotNull() & ~F.array_contains("_gr_ports", port)
    # both sides show named peers in their directions, but never each other on this port
    pair = F.concat_ws("|", port.cast("string"), local)
    peer_doubt = (F.coalesce(F.size("_gr_peers"), F.lit(0)) > 0) & (F.coalesce(F.size("_gl_peers"), F.lit(0)) > 0) \
        & ~F.array_contains("_gr_peers", pair)
    note = (F.when(guarded & port_doubt, F.lit(NOTE_PORT)).when(guarded & peer_doubt, F.lit(NOTE_PEER))
            .otherwise(F.lit(None).cast("string")))
    drop = [c for c in out.columns if c.startswith(("_gr_", "_gl_"))]
    return out.withColumn("_guard_note", note).drop(*drop)
