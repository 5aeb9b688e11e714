"""Raw files: key layout, schema, contract types and rules, determinism, CLI."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from flowlake.cli import cli
from flowlake.contracts import RAW_FLOW_SCHEMA, SCHEMA_VERSION_KEY, canonical_ip
from flowlake.sim import SimParams, simulate

KEY_RE = re.compile(r"^flows/v1/dt=(\d{4}-\d{2}-\d{2})/hr=(\d{2})/instance=([A-Za-z0-9._:-]+)/(\d+)-(\d+)\.parquet$")
RECORD_KEY = ["instance_id", "interval_start_ms", "local_ip", "local_port", "remote_ip", "remote_port", "direction"]


def _tree_digest(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_key_layout_and_schema(stress_out):
    files = stress_out.flow_files()
    assert len(files) == stress_out.summary.flow_files > 50
    seqs: dict[str, list[int]] = {}
    batch_ms = stress_out.params.batch_intervals * stress_out.params.interval_s * 1000
    for path in files:
        rel = os.path.relpath(path, stress_out.root)
        m = KEY_RE.match(rel)
        assert m, f"bad key {rel}"
        dt, hr, inst, first_ms, seq = m.groups()
        meta = pq.read_metadata(path)
        assert meta.metadata[SCHEMA_VERSION_KEY] == b"1"
        assert meta.row_group(0).column(0).compression.lower() == "zstd"
        table = pq.read_table(path)
        assert table.schema.equals(RAW_FLOW_SCHEMA, check_metadata=False), table.schema
        starts = table.column("interval_start_ms").to_pylist()
        assert min(starts) == int(first_ms)
        when = datetime.fromtimestamp(int(first_ms) / 1000, tz=timezone.utc)
        assert (dt, hr) == (f"{when:%Y-%m-%d}", f"{when:%H}")
        assert set(table.column("instance_id").to_pylist()) == {inst}
        assert max(starts) // batch_ms == min(starts) // batch_ms, "a file spans more than one batch"
        seqs.setdefault(inst, []).append(int(seq))
    for inst, s in seqs.items():
        assert sorted(s) == list(range(len(s))), f"file sequence of {inst} has gaps: {sorted(s)}"
    assert len({m.group(1) for m in (KEY_RE.match(os.path.relpath(p, stress_out.root)) for p in files)}) == 2


def test_record_rules(stress_out, stress_flows):
    df = stress_flows
    p = stress_out.params
    interval_ms = p.interval_s * 1000
    assert (df.interval_start_ms % interval_ms == 0).all()
    assert (df.interval_end_ms - df.interval_start_ms == interval_ms).all()
    assert (df.first_start_ms >= df.interval_start_ms).all() and (df.first_start_ms < df.interval_end_ms).all()
    out, inb = df[df.direction == "outbound"], df[df.direction == "inbound"]
    assert len(out) + len(inb) == len(df) and len(out) > 0 and len(inb) > 0
    assert (out.local_port == 0).all() and (out.remote_port > 0).all()
    assert (inb.remote_port == 0).all() and (inb.local_port > 0).all()
    assert (df.protocol == "tcp").all()
    for col in ["connections_opened", "connections_closed", "bytes_sent", "bytes_received",
                "segments_sent", "segments_received", "retransmits", "srtt_us_max"]:
        assert (df[col] >= 0).all(), col
    assert (df.connections_opened + df.connections_closed + df.bytes_sent + df.bytes_received > 0).mean() > 0.99
    assert (df.retransmits > 0).any()
    assert (df.segments_sent >= df.retransmits).all()
    assert not df.duplicated(RECORD_KEY).any(), "two records share a key"
    ips = set(df.local_ip) | set(df.remote_ip)
    assert all(canonical_ip(ip) == ip for ip in ips)
    assert any(":" in ip for ip in ips), "no IPv6 flows"
    assert df.region.eq(p.region).all() and set(df.availability_zone) <= set(p.availability_zones)
    # long connections: records with an already-open connection start at the interval start
    carried = df[(df.connections_opened == 0)]
    assert len(carried) > 0 and (carried.first_start_ms == carried.interval_start_ms).all()
    ext = df[df.remote_ip.map(lambda s: not ipaddress.ip_address(s).is_private and not s.startswith("2600:1f18:"))]
    assert len(ext) > 0


def test_truth_one_row_per_record(stress_out, stress_flows):
    truth = stress_out.truth()
    assert len(truth) == len(stress_flows) == stress_out.summary.records
    merged = stress_flows.merge(truth, on=RECORD_KEY, how="inner", validate="one_to_one", suffixes=("", "_t"))
    assert len(merged) == len(truth)
    assert (merged.first_start_ms == merged.first_start_ms_t).all()
    assert (merged.local_workload == merged.true_local_workload).all()
    assert set(truth.true_remote_kind) == {"instance", "container", "load_balancer", "nat_gateway", "external"}
    ext = truth[truth.true_remote_kind == "external"]
    assert set(ext.true_remote_workload) <= {"external:aws-s3", "external:github", "external:cloudflare", "external:internet"}


def _small(**kw) -> SimParams:
    return SimParams(**{"hours": 0.5, "records": 4_000, "n_workloads": 12, **kw})


def test_deterministic_by_seed(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    simulate(out=a, params=_small(seed=3), progress=False)
    simulate(out=b, params=_small(seed=3), progress=False)
    simulate(out=c, params=_small(seed=4), progress=False)
    da, db, dc = _tree_digest(a), _tree_digest(b), _tree_digest(c)
    assert len(da) > 20
    assert da == db
    assert da != dc


def test_refuses_to_mix_outputs(tmp_path):
    simulate(out=str(tmp_path), params=_small(), progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        simulate(out=str(tmp_path), params=_small(), progress=False)
    simulate(out=str(tmp_path), params=_small(seed=9), progress=False, overwrite=True)


@pytest.mark.parametrize("kw, msg", [
    ({"start": "2025-06-02T00:00:30Z"}, "not a multiple of interval_s"),
    ({"start": "yesterday"}, "not ISO-8601"),
    ({"hours": 0.01}, "whole number"),
])
def test_params_errors_name_the_problem(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SimParams(**kw)


def test_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(cli, ["simulate", "--out", str(out), "--hours", "0.5", "--records", "3000",
                              "--seed", "5", "--start", "2025-06-03T10:00:00Z", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "records" in res.output and "2025-06-03T10:00:00Z .. 2025-06-03T10:30:00Z" in res.output
    t = pq.read_table(os.path.join(out, "truth/flows"))
    assert t.num_rows > 1000
    assert pa.compute.min(t.column("interval_start_ms")).as_py() >= 1748944800000
    res = runner.invoke(cli, ["simulate", "--out", str(out), "--hours", "0.5", "--quiet"])
    assert res.exit_code != 0 and "--overwrite" in res.output
    res = runner.invoke(cli, ["simulate", "--out", str(tmp_path / "x"), "--start", "2025-06-03T10:00:07Z"])
    assert res.exit_code != 0 and "interval_s" in res.output
