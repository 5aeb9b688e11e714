"""Invariants checked from the ground truth: ownership, connections within holdings, both sides."""

from __future__ import annotations

import numpy as np
import pandas as pd

RECORD_KEY = ["instance_id", "interval_start_ms", "local_ip", "local_port", "remote_ip", "remote_port", "direction"]
BIG = 2**62  # "still held"


def _owner_at(ownership: pd.DataFrame, ips: pd.Series, at_ms: pd.Series) -> pd.DataFrame:
    """Independent as-of lookup: the holding of each ip that started last at or before at_ms."""
    q = pd.DataFrame({"ip": ips.values, "at_ms": at_ms.values.astype(np.int64), "row": np.arange(len(ips))})
    o = ownership.assign(to=ownership.to_ms.fillna(BIG).astype(np.int64),
                         drain=ownership.drain_ms.fillna(BIG).astype(np.int64)).sort_values("from_ms")
    cols = ["ip", "from_ms", "to", "ready_ms", "drain", "workload", "instance_id", "kind", "availability_zone"]
    m = pd.merge_asof(q.sort_values("at_ms"), o[cols],
                      left_on="at_ms", right_on="from_ms", by="ip", direction="backward")
    m = m.sort_values("row").reset_index(drop=True)
    held = m.from_ms.notna() & (m.at_ms < m.to)
    return m.assign(held=held)


def test_one_holder_at_a_time_and_reuse_gap(sim_out):
    o = sim_out.ownership().sort_values(["ip", "from_ms"])
    assert len(o) > 100
    same = o.ip.eq(o.ip.shift())
    prev_to = o.to_ms.shift()
    assert not (same & prev_to.isna()).any(), "an ip was assigned again while its holder never released it"
    gaps = (o.from_ms - prev_to)[same]
    assert (gaps >= sim_out.params.min_reuse_gap_ms).all(), gaps.min()
    assert (gaps <= 10_000).sum() >= 5, "no fast (3-10 s) reuses"
    assert (gaps > 60_000).sum() >= 5, "no slow reuses"
    prev_w = o.workload.shift()
    assert ((o.workload != prev_w) & same).sum() >= 5, "no reuse by another workload"
    assert (o.to_ms.isna() | (o.to_ms > o.from_ms)).all()
    assert not o.duplicated(["ip", "instance_id"]).any()
    # long-lived holders were assigned days before the window
    start = pd.Timestamp(sim_out.params.start).value // 1_000_000
    assert (o.from_ms < start - 86_400_000).sum() > 10
    assert set(o.kind) == {"instance", "container", "load_balancer", "nat_gateway"}


def test_records_lie_within_both_holdings(sim_out, sim_flows):
    o = sim_out.ownership()
    truth = sim_out.truth()
    df = sim_flows.merge(truth, on=RECORD_KEY + ["first_start_ms"], validate="one_to_one")
    assert len(df) == len(sim_flows)
    local = _owner_at(o, df.local_ip, df.first_start_ms)
    assert local.held.all(), "a record's local side did not hold local_ip at first_start_ms"
    assert (local.instance_id.values == df.instance_id.values).all()
    assert (local.workload.values == df.local_workload.values).all()
    assert (local.availability_zone.values == df.availability_zone.values).all()
    # connections open after both sides are ready and close before either drains
    assert (df.first_start_ms.values >= local.ready_ms.values).all()
    assert (df.first_start_ms.values <= local.drain.values).all()
    # the interval a record lies in starts before its local holder released the ip
    assert (df.interval_start_ms.values < local.to.values).all()
    internal = df.true_remote_kind != "external"
    remote = _owner_at(o, df.remote_ip[internal], df.first_start_ms[internal])
    assert remote.held.all(), "a record's remote ip had no holder at first_start_ms"
    assert (remote.at_ms.values >= remote.ready_ms.values).all()
    assert (remote.at_ms.values <= remote.drain.values).all()
    sub = df[internal]
    assert (remote.workload.values == sub.true_remote_workload.values).all()
    assert (remote.kind.values == sub.true_remote_kind.values).all()
    assert (remote.instance_id.values == sub.true_remote_instance_id.values).all()
    ext = df[~internal]
    assert not ext.remote_ip.isin(o.ip).any()
    # some records talk to an address that changed hands during the window (the hard cases)
    reused = o.groupby("ip").size()
    assert sub.remote_ip.isin(reused[reused > 1].index).sum() > 100


def test_both_sides_of_sidecar_connections(sim_out, sim_flows):
    truth = sim_out.truth()
    df = sim_flows.merge(truth, on=RECORD_KEY + ["first_start_ms"], validate="one_to_one")
    out = df[(df.direction == "outbound") & df.remote_has_sidecar]
    inb = df[df.direction == "inbound"]
    assert len(out) > 1000
    m = out.merge(inb, left_on=["true_remote_instance_id", "interval_start_ms", "remote_ip", "local_ip", "remote_port"],
                  right_on=["instance_id", "interval_start_ms", "local_ip", "remote_ip", "local_port"],
                  how="left", suffixes=("", "_in"), indicator=True)
    assert (m._merge == "both").all(), f"{(m._merge != 'both').sum()} outbound records lack the server's inbound record"
    diff = m.first_start_ms_in - m.first_start_ms
    # the server's record merges every client that held the address in the interval: its
    # earliest connection may be an earlier holder's; otherwise the two starts are 0..3 ms apart
    one = m.true_remote_instance_id_in == m.instance_id
    assert one.mean() > 0.99
    assert diff[one].between(0, 3).all(), diff[one].describe()
    assert (diff[~one] <= 3).all()
    assert (m.true_remote_workload_in[one] == m.local_workload[one]).all()
    # counters: what one side sent the other received (exact unless an ip changed hands mid-interval)
    same = (m.bytes_sent == m.bytes_received_in) & (m.bytes_received == m.bytes_sent_in)
    assert same.mean() > 0.99
    seg = m.segments_received_in - (m.segments_sent - m.retransmits)
    assert (seg[same] == 0).all()


def test_inbound_from_non_sidecar_peers(sim_out):
    truth = sim_out.truth()
    inb = truth[truth.direction == "inbound"]
    assert (~inb.remote_has_sidecar).sum() > 100
    hot = inb[inb.true_remote_kind.isin(["load_balancer", "nat_gateway"])]
    assert set(hot.true_remote_kind) == {"load_balancer", "nat_gateway"}
    # a load balancer address is a hot remote: many records per address
    per_ip = truth[truth.true_remote_kind == "load_balancer"].groupby("remote_ip").size()
    assert per_ip.median() > truth.groupby("remote_ip").size().median()


def test_manifest(stress_out):
    m = stress_out.manifest()
    c = m["counts"]
    assert c["records"] == stress_out.summary.records
    assert c["flow_files"] == stress_out.summary.flow_files
    assert c["events_lost"] > 0 and c["events_duplicated"] > 0
    assert m["seed"] == stress_out.params.seed
    domains = m["domains"]
    assert len(domains) == stress_out.params.n_workloads and len(set(domains.values())) == stress_out.params.n_domains
    edges = [e for e in m["edges"] if e["client"] in domains and e["server"] in domains]
    intra = sum(domains[e["client"]] == domains[e["server"]] for e in edges)
    assert intra / len(edges) > 0.6
    assert 0.1 < c["holders_without_sidecar"] / (c["holders_by_kind"]["instance"] + c["holders_by_kind"]["container"]) < 0.35
