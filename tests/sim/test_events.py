"""Tracker events: timing bounds, loss and duplication rules, folders, formats."""

from __future__ import annotations

import pandas as pd
import pytest

from flowlake.contracts import IP_EVENT_SCHEMA

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def events(stress_out) -> pd.DataFrame:
    return stress_out.events()


@pytest.fixture(scope="module")
def matched(stress_out, events) -> pd.DataFrame:
    """Each event joined to the true change it reports."""
    o = stress_out.ownership()
    a = events[events.action == "assign"].merge(o, on=["ip", "instance_id"], suffixes=("", "_o"), validate="many_to_one")
    a["true_ms"] = a.from_ms
    u = events[events.action == "unassign"].merge(o, on=["ip", "instance_id"], suffixes=("", "_o"), validate="many_to_one")
    u["true_ms"] = u.to_ms
    assert len(a) + len(u) == len(events), "an event reports no true holding"
    return pd.concat([a, u], ignore_index=True)


def test_columns_and_formats(events, stress_out):
    assert list(events.columns[: len(IP_EVENT_SCHEMA)]) == IP_EVENT_SCHEMA.names
    kinds = events.file.str.extract(r"\.(parquet|jsonl\.gz)$")[0]
    assert set(kinds) == {"parquet", "jsonl.gz"}
    assert set(events.action) == {"assign", "unassign"}
    un = events[events.action == "unassign"]
    assert un.workload.isna().all() and un.instance_id.notna().all()
    assert events[events.action == "assign"].workload.notna().all()
    assert len(events) == stress_out.summary.events_written


def test_lag_and_publication_bounds(matched, stress_out):
    p = stress_out.params
    lag = matched.event_ms - matched.true_ms
    assert lag.between(0, p.max_event_lag_ms).all(), lag.describe()
    assert lag.max() > 0.5 * p.max_event_lag_ms
    delay = matched.published_ms - matched.event_ms
    assert delay.between(p.publish_delay_min_ms, p.publish_delay_max_ms).all(), delay.describe()
    assert (matched.workload.isna() | (matched.workload == matched.workload_o)).all()
    assert (matched.kind == matched.kind_o).all()


def test_folders_and_late_publication(events, stress_out):
    day = pd.to_datetime(events.published_ms, unit="ms").dt.strftime("%Y-%m-%d")
    dup = events.duplicated([c for c in IP_EVENT_SCHEMA.names], keep="first")
    # first copies sit in the folder of their publication day; re-publications later
    assert (events.dt[~dup] == day[~dup]).all()
    assert (events.dt[dup] >= day[dup]).all()
    event_day = pd.to_datetime(events.event_ms, unit="ms").dt.strftime("%Y-%m-%d")
    assert (events.dt > event_day).sum() >= 1, "no event published on a later day than it happened"
    start = pd.Timestamp(stress_out.params.start).value // 1_000_000
    old = events[(events.action == "assign") & (events.event_ms < start - 2 * DAY_MS)]
    assert len(old) > 10 and (old.dt < stress_out.params.start[:10]).all()
    # files group events by publication time: one file spans at most event_file_minutes
    span = events[~dup].groupby("file").published_ms.agg(lambda s: s.max() - s.min())
    assert (span < stress_out.params.event_file_minutes * 60_000).all()


def test_duplicates_identical_and_in_later_files(events):
    cols = IP_EVENT_SCHEMA.names
    groups = events.groupby(cols, dropna=False)
    sizes = groups.size()
    assert (sizes > 1).sum() >= 5
    assert sizes.max() <= 2
    for _, g in events[events.duplicated(cols, keep=False)].groupby(cols, dropna=False):
        assert g.file.nunique() == len(g), "a duplicate was written into the same file"


def test_loss_never_hides_a_handover(stress_out, events):
    o = stress_out.ownership().sort_values(["ip", "from_ms"]).reset_index(drop=True)
    seen_a = set(zip(events[events.action == "assign"].ip, events[events.action == "assign"].instance_id))
    seen_u = set(zip(events[events.action == "unassign"].ip, events[events.action == "unassign"].instance_id))
    pairs = list(zip(o.ip, o.instance_id))
    o["assign_seen"] = [p in seen_a for p in pairs]
    o["unassign_seen"] = [p in seen_u for p in pairs]
    # the truth's loss flags agree with what was written
    assert (o.assign_seen == ~o.assign_event_lost).all()
    has_un = o.to_ms.notna()
    assert (o.unassign_seen[has_un] == ~o.unassign_event_lost[has_un].astype(bool)).all()
    assert not o.unassign_seen[~has_un].any(), "a holder still holding at the window end has an unassign"
    assert (~o.assign_seen).sum() > 5 and (~o.unassign_seen[has_un]).sum() > 5
    same = o.ip.eq(o.ip.shift())
    prev_u_lost = (~o.unassign_seen).shift(fill_value=False)
    assert not (same & prev_u_lost & ~o.assign_seen).any(), "both sides of a hand-over were lost"
    first = ~same
    assert o.assign_seen[first].all(), "the first assign of an address was lost"
    # fast reuse with lag (default lag and reuse knobs): the next assign can carry an event_ms
    # before the previous unassign's - only where the reuse gap is shorter than the lag bound
    ev = events.drop_duplicates(IP_EVENT_SCHEMA.names)
    a = ev[ev.action == "assign"].set_index(["ip", "instance_id"]).event_ms
    u = ev[ev.action == "unassign"].set_index(["ip", "instance_id"]).event_ms
    assert a.index.is_unique and u.index.is_unique
    o["a_ms"] = a.reindex(pairs).to_numpy()
    o["u_ms"] = u.reindex(pairs).to_numpy()
    before = same & (o.a_ms < o.u_ms.shift())
    assert before.sum() >= 3, "no assign carries an event_ms before the previous holder's unassign"
    gap = o.from_ms - o.to_ms.shift()
    assert (gap[before] < stress_out.params.max_event_lag_ms).all()
