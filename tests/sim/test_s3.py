"""Writing to S3 (a real S3 server on loopback) gives the same objects as a local folder."""

from __future__ import annotations

import hashlib
import os

from flowlake.sim import SimParams, simulate


def test_s3_output_matches_local(s3_server, tmp_path):
    params = SimParams(hours=0.5, records=3_000, n_workloads=10, seed=21, s3_endpoint=s3_server.endpoint)
    bucket = s3_server.new_bucket()
    summary = simulate(out=f"s3://{bucket}/runs/one", params=params, progress=False)
    simulate(out=str(tmp_path), params=params, progress=False)

    client = s3_server.client()
    keys = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="runs/one/"):
        for obj in page.get("Contents", []):
            keys[obj["Key"].removeprefix("runs/one/")] = obj["Key"]
    local = {}
    for dirpath, _, files in os.walk(tmp_path):
        for name in files:
            path = os.path.join(dirpath, name)
            local[os.path.relpath(path, tmp_path)] = path
    assert set(keys) == set(local)
    assert sum(k.startswith("flows/v1/dt=") for k in keys) == summary.flow_files
    assert "truth/manifest.json" in keys
    for rel in sorted(keys)[:: max(1, len(keys) // 25)]:
        body = client.get_object(Bucket=bucket, Key=keys[rel])["Body"].read()
        with open(local[rel], "rb") as f:
            assert hashlib.sha256(body).digest() == hashlib.sha256(f.read()).digest(), rel


def test_s3_endpoint_from_environment(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    bucket = s3_server.new_bucket()
    simulate(out=f"s3://{bucket}", params=SimParams(hours=0.5, records=1_000, n_workloads=8), progress=False)
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="flows/v1/")
    assert listed["KeyCount"] > 0
