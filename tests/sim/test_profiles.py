"""Profiles: the default profile's output is what it was before the hostile knobs existed; a
profile sits between conf/sim.yaml and the environment/options; the CLI's --profile."""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from flowlake.cli import cli
from flowlake.config import load_config
from flowlake.contracts import RECORD_KEY
from flowlake.sim import SimParams, simulate
from flowlake.sim.params import PROFILES

# What the simulator wrote before the hostile knobs and truth_evidence were added (commit
# a94e49d): a content digest of SimParams(hours=1, records=6_000) (seed 7), over every raw flow
# file, every event file, the truth columns and manifest keys that existed then. New columns
# and keys are left out: adding them is allowed, changing the old ones is not.
PRE_CHANGE_DIGEST = "09d69a6dd90e8dfbf04e42ea7d69c97ac0c40a174da6a09226e03c693e0b695d"
OLD_TRUTH_COLUMNS = ["instance_id", "interval_start_ms", "local_ip", "local_port", "remote_ip", "remote_port",
                     "direction", "first_start_ms", "true_local_workload", "true_remote_workload", "true_remote_kind",
                     "true_remote_instance_id", "true_remote_availability_zone", "remote_has_sidecar"]
OLD_OWNERSHIP_COLUMNS = ["ip", "workload", "instance_id", "kind", "region", "availability_zone", "from_ms", "to_ms",
                         "ready_ms", "drain_ms", "has_sidecar", "assign_event_lost", "unassign_event_lost"]
OLD_PARAMS = [
    "availability_zones", "batch_intervals", "boot_max_ms", "chunk_records", "container_lifetime_h",
    "container_workload_share", "daily_amplitude", "daily_peak_hour_utc", "drain_max_ms", "dual_stack_workload_share",
    "edges_per_workload", "event_duplicate_share", "event_file_minutes", "event_jsonl_share", "event_loss_share",
    "external_client_share", "fast_reuse_max_gap_ms", "fast_reuse_share", "fleet_scale", "growth_per_day",
    "history_days", "hours", "instance_lifetime_h", "interval_s", "intra_domain_edge_share", "ipv6_flow_share",
    "lb_node_lifetime_h", "max_event_lag_ms", "min_reuse_gap_ms", "n_domains", "n_load_balancers", "n_workloads",
    "nat_gateways_per_az", "no_sidecar_share", "persistent_conn_mean_min", "persistent_pair_share",
    "persistent_record_share_max", "publish_delay_max_ms", "publish_delay_min_ms", "records", "records_per_hour",
    "region", "replicas_max", "replicas_min", "republish_max_ms", "reuse_share", "seed", "slow_reuse_max_gap_ms",
    "start", "weekend_dip"]
OLD_COUNTS = ["chunks", "event_files", "events_duplicated", "events_lost", "events_true_changes", "events_written",
              "flow_files", "holders", "holders_by_kind", "holders_without_sidecar", "ip_reuses",
              "ip_reuses_within_10s", "records", "records_target"]


def _table_digest(h, table, columns) -> None:
    for name in columns:
        col = table.column(name).combine_chunks()
        h.update(name.encode())
        h.update(str(col.type).encode())
        h.update(json.dumps(col.to_pylist()).encode())


def content_digest(root: str) -> str:
    """sha256 over file keys and values (not Parquet bytes, which depend on the writer's version)."""
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(root, "flows/v1/**/*.parquet"), recursive=True)):
        t = pq.read_table(path)
        h.update(os.path.relpath(path, root).encode())
        _table_digest(h, t, t.column_names)
    for path in sorted(glob.glob(os.path.join(root, "ip_events/v1/*/*"))):
        h.update(os.path.relpath(path, root).encode())
        if path.endswith(".parquet"):
            t = pq.read_table(path)
            _table_digest(h, t, t.column_names)
        else:
            with gzip.open(path, "rb") as f:
                h.update(f.read())
    for sub, cols in (("truth/flows", OLD_TRUTH_COLUMNS), ("truth/ownership", OLD_OWNERSHIP_COLUMNS)):
        for path in sorted(glob.glob(os.path.join(root, sub, "*.parquet"))):
            h.update(os.path.relpath(path, root).encode())
            _table_digest(h, pq.read_table(path), cols)
    with open(os.path.join(root, "truth/manifest.json")) as f:
        m = json.load(f)
    m["params"] = {k: m["params"][k] for k in OLD_PARAMS}
    m["counts"] = {k: m["counts"][k] for k in OLD_COUNTS}
    h.update(json.dumps(m, sort_keys=True).encode())
    return h.hexdigest()


def test_default_profile_output_unchanged(tmp_path):
    s = simulate(out=str(tmp_path), params=SimParams(hours=1, records=6_000), progress=False)
    assert s.records == 6_028 and s.events_written == 331  # the pre-change run's figures
    assert content_digest(str(tmp_path)) == PRE_CHANGE_DIGEST
    # the new truth is there too, and the default profile plants none of the hostile failures
    m = json.load(open(tmp_path / "truth/manifest.json"))
    c = m["counts"]
    assert m["params"]["profile"] == "default"
    assert c["events_resent"] == c["events_lag_tail"] == c["handovers_both_lost"] == c["handovers_late_assign"] == 0
    assert sum(c["records_by_truth_evidence"].values()) == s.records


def test_default_profile_is_the_defaults():
    assert PROFILES["default"] == {}
    assert load_config(SimParams).model_dump() == SimParams().model_dump(), "conf/sim.yaml no longer mirrors defaults"
    hostile = SimParams(profile="hostile")
    for k, v in PROFILES["hostile"].items():
        assert getattr(hostile, k) == v != getattr(SimParams(), k), k


def test_profile_precedence(tmp_path, monkeypatch):
    """defaults < conf/sim.yaml < profile < environment < explicit options."""
    for k in list(os.environ):
        if k.startswith("FLOWLAKE_SIM__"):
            monkeypatch.delenv(k)
    yaml = tmp_path / "sim.yaml"
    yaml.write_text("event_loss_share: 0.2\nreuse_share: 0.1\nseed: 3\n")
    assert load_config(SimParams, path=yaml).event_loss_share == 0.2
    p = load_config(SimParams, path=yaml, profile="hostile")
    assert (p.profile, p.event_loss_share, p.reuse_share, p.seed) == ("hostile", 0.05, 0.7, 3)
    monkeypatch.setenv("FLOWLAKE_SIM__EVENT_LOSS_SHARE", "0.3")
    assert load_config(SimParams, path=yaml, profile="hostile").event_loss_share == 0.3
    assert load_config(SimParams, path=yaml, profile="hostile", event_loss_share=0.4).event_loss_share == 0.4
    monkeypatch.delenv("FLOWLAKE_SIM__EVENT_LOSS_SHARE")
    monkeypatch.setenv("FLOWLAKE_SIM__PROFILE", "hostile")
    assert load_config(SimParams, path=yaml).nat_lifetime_h == 3.0
    assert load_config(SimParams, path=yaml, profile="default").event_loss_share == 0.2  # the option wins
    monkeypatch.delenv("FLOWLAKE_SIM__PROFILE")
    yaml.write_text("profile: hostile\nevent_loss_share: 0.2\n")
    assert load_config(SimParams, path=yaml).event_loss_share == 0.05  # the file's profile beats its knobs


def test_unknown_profile_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="'default', 'hostile' or 'history'"):
        SimParams(profile="nasty")
    res = CliRunner().invoke(cli, ["simulate", "--out", str(tmp_path / "x"), "--profile", "nasty"])
    assert res.exit_code == 2 and "'nasty' is not one of 'default', 'hostile', 'history'" in res.output
    with pytest.raises(ValueError, match="handover_both_lost_share \\+ handover_late_assign_share"):
        SimParams(handover_both_lost_share=0.6, handover_late_assign_share=0.6)
    with pytest.raises(ValueError, match="event_lag_tail_max_ms must be >= max_event_lag_ms"):
        SimParams(event_lag_tail_share=0.1, event_lag_tail_max_ms=5_000)
    with pytest.raises(ValueError, match="event_lag_tail_max_ms must be >= max_event_lag_ms"):
        SimParams(handover_late_assign_share=0.1, event_lag_tail_max_ms=5_000)
    SimParams(event_lag_tail_max_ms=5_000)  # no tail planted: the bound is unused


def test_cli_profile(tmp_path):
    out = tmp_path / "h"
    res = CliRunner().invoke(cli, ["simulate", "--out", str(out), "--profile", "hostile", "--hours", "0.5",
                                   "--records", "3000", "--seed", "2", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "(profile hostile)" in res.output and "none" in res.output
    m = json.load(open(out / "truth/manifest.json"))
    assert m["params"]["profile"] == "hostile" and m["params"]["event_lag_tail_share"] == 0.05
    assert m["params"]["hours"] == 0.5  # options still win over the profile


def _flows(root: str) -> pd.DataFrame:
    return pd.concat([pq.read_table(p).to_pandas()
                      for p in sorted(glob.glob(os.path.join(root, "flows/v1/**/*.parquet"), recursive=True))])


def test_planted_trend_grows_only_the_bytes_of_trending_edges(tmp_path):
    """A trend (history profile) multiplies the bytes of the trending edges' records by
    (1 + trend_per_day) ** days since the start, and leaves every other draw as it was."""
    base = dict(seed=3, hours=30, records=2_500, n_workloads=8, interval_s=300, batch_intervals=12)
    flat, grown = str(tmp_path / "flat"), str(tmp_path / "grown")
    simulate(out=flat, params=SimParams(**base, trend_edge_share=0.0), progress=False)
    simulate(out=grown, params=SimParams(**base, trend_edge_share=0.5, trend_per_day=1.0), progress=False)
    a, b = (_flows(root).set_index(RECORD_KEY).sort_index() for root in (flat, grown))
    assert a.index.equals(b.index), "the same records (only bytes may change)"
    assert (a["connections_opened"] == b["connections_opened"]).all()
    start_ms = a.index.get_level_values("interval_start_ms").min()
    days = (a.index.get_level_values("interval_start_ms") - start_ms) / 86_400_000
    big = (a["bytes_sent"] > 10_000).to_numpy()
    ratio = (b["bytes_sent"] / a["bytes_sent"]).to_numpy()[big]
    expected = (2.0 ** days.to_numpy())[big]
    trending = np.abs(ratio / expected - 1) < 0.01
    flat_rec = np.abs(ratio - 1) < 1e-9
    assert (trending | flat_rec).all(), "each record's bytes either follow the trend or are unchanged"
    late = days.to_numpy()[big] > 1
    assert trending[late].mean() > 0.05 and flat_rec[late].mean() > 0.05, "some edges trend, some do not"
