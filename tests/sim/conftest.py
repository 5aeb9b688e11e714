"""Fixtures: small simulated outputs shared by the simulator tests (session scoped, a few seconds)."""

from __future__ import annotations

import glob
import gzip
import json
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from flowlake.contracts import IP_EVENT_SCHEMA
from flowlake.sim import SimParams, simulate

# crosses midnight (dt/hr folders, late publication into the next day's folder); heavy churn,
# reuse and event loss/duplication so that the invariants are exercised many times
STRESS = dict(
    seed=11, start="2025-06-01T23:00:00Z", hours=1.5, records=40_000, n_workloads=20,
    container_lifetime_h=0.4, instance_lifetime_h=6.0, lb_node_lifetime_h=2.0, reuse_share=0.8,
    fast_reuse_share=0.5, event_loss_share=0.25, event_duplicate_share=0.2,
)


# the hostile profile (issue 12) on a small window: every planted tracker failure occurs
HOSTILE = dict(profile="hostile", seed=5, hours=2, records=30_000)


def make_params(**kw) -> SimParams:
    return SimParams(**kw)


class SimOut:
    """Readers over one simulated output folder."""

    def __init__(self, root: str, params: SimParams, summary) -> None:
        self.root, self.params, self.summary = root, params, summary

    def flow_files(self) -> list[str]:
        return sorted(glob.glob(os.path.join(self.root, "flows/v1/*/*/*/*.parquet")))

    def flows(self) -> pd.DataFrame:
        frames = []
        for path in self.flow_files():
            df = pq.read_table(path).to_pandas()
            df["source_file"] = os.path.relpath(path, self.root)
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    def truth(self) -> pd.DataFrame:
        return pd.read_parquet(os.path.join(self.root, "truth/flows"))

    def ownership(self) -> pd.DataFrame:
        return pd.read_parquet(os.path.join(self.root, "truth/ownership"))

    def manifest(self) -> dict:
        with open(os.path.join(self.root, "truth/manifest.json")) as f:
            return json.load(f)

    def events(self) -> pd.DataFrame:
        frames = []
        for path in sorted(glob.glob(os.path.join(self.root, "ip_events/v1/*/*"))):
            if path.endswith(".parquet"):
                df = pq.read_table(path).to_pandas()
            elif path.endswith(".jsonl.gz"):
                with gzip.open(path, "rt", encoding="utf-8") as f:
                    df = pd.DataFrame([json.loads(line) for line in f], columns=IP_EVENT_SCHEMA.names)
            else:
                raise AssertionError(f"unexpected event file {path}")
            df["dt"] = path.split("/")[-2].removeprefix("dt=")
            df["file"] = os.path.relpath(path, self.root)
            frames.append(df)
        ev = pd.concat(frames, ignore_index=True)
        for col in ("workload", "instance_id", "kind", "region", "availability_zone"):
            ev[col] = ev[col].astype(object).where(ev[col].notna(), None)
        return ev


@pytest.fixture(scope="session")
def stress_out(tmp_path_factory) -> SimOut:
    root = str(tmp_path_factory.mktemp("sim_stress"))
    params = make_params(**STRESS)
    summary = simulate(out=root, params=params, progress=False)
    return SimOut(root, params, summary)


@pytest.fixture(scope="session")
def stress_flows(stress_out) -> pd.DataFrame:
    return stress_out.flows()


@pytest.fixture(scope="session")
def hostile_out(tmp_path_factory) -> SimOut:
    root = str(tmp_path_factory.mktemp("sim_hostile"))
    params = make_params(**HOSTILE)
    summary = simulate(out=root, params=params, progress=False)
    return SimOut(root, params, summary)


@pytest.fixture(scope="session", params=["stress", "hostile"])
def sim_out(request) -> SimOut:
    """The invariants hold in every profile: the stress run, then the hostile one."""
    return request.getfixturevalue(f"{request.param}_out")


@pytest.fixture(scope="session")
def sim_flows(sim_out) -> pd.DataFrame:
    return sim_out.flows()
