"""The pipeline with the raw root and the lake on S3 (a real S3 server on loopback, s3a in Spark)."""

from __future__ import annotations

import json

from tests.prod.badfiles import bad_files, good_rows
from tests.prod.conftest import END_MS, START_MS, table_rows, upload_tree


def test_s3_pipeline_quarantines_bad_files_publishes_the_rest_and_is_idempotent(
        spark, s3_env, demo_raw, clean_lake, jobs_config, quality_config):
    from flowlake.jobs.run.pipeline import run

    client = s3_env.client()
    bucket = s3_env.new_bucket()
    upload_tree(client, demo_raw / "flows", bucket, "raw/flows")
    upload_tree(client, demo_raw / "ip_events", bucket, "raw/ip_events")
    good = next((demo_raw / "flows").rglob("*.parquet"))
    bad = bad_files(good)
    for key, (body, _) in bad.items():
        client.put_object(Bucket=bucket, Key=f"raw/{key}", Body=body)
    raw, lake = f"s3://{bucket}/raw", f"s3://{bucket}/lake"

    first = run(spark, raw_root=raw, lake_root=lake, start_ms=START_MS, end_ms=END_MS,
                config=jobs_config, quality=quality_config)
    reasons = {q["source_file"].split("/raw/", 1)[1]: q["reason"] for q in first.flows.quarantined}
    assert set(reasons) == set(bad), f"quarantined {sorted(reasons)}"
    for key, (_, word) in bad.items():
        assert word in reasons[key], (key, reasons[key])
    # every bad file has its copy under quarantine/raw/<run_id>/ and a row in quarantine/files
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"lake/quarantine/raw/{first.run_id}/").get("Contents", [])
    copies = [o for o in listed if not o["Key"].endswith("/")]  # pyarrow leaves a folder marker
    assert len(copies) == len(bad)
    logged = spark.read.format("delta").load(f"s3a://{bucket}/lake/quarantine/files").count()
    assert logged == len(bad)

    bronze = spark.read.format("delta").load(f"s3a://{bucket}/lake/bronze/flows")
    assert bronze.count() == good_rows(demo_raw) == first.flows.rows_ingested
    # the same silver and gold as the local clean run (source_file names the root, so it is left out)
    silver_s3 = table_rows(spark, f"s3a://{bucket}/lake/silver/flows_attributed", drop=["source_file"])
    assert silver_s3 == table_rows(spark, clean_lake / "silver/flows_attributed", drop=["source_file"])
    assert table_rows(spark, f"s3a://{bucket}/lake/gold/app_dependencies") == \
        table_rows(spark, clean_lake / "gold/app_dependencies")
    # the gate's reports are beside the tables
    report = json.loads(client.get_object(Bucket=bucket, Key=f"lake/_quality/{first.run_id}/attribute.json")["Body"].read())
    assert {r["name"] for r in report["results"]} >= {"silver.attributed_share", "silver.every_bronze_row"}
    # the writer lock is released
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix="lake/_meta/writer.lock")

    again = run(spark, raw_root=raw, lake_root=lake, start_ms=START_MS, end_ms=END_MS,
                config=jobs_config, quality=quality_config)
    assert again.flows.files_ingested == 0 and not again.flows.quarantined
    assert table_rows(spark, f"s3a://{bucket}/lake/silver/flows_attributed", drop=["source_file"]) == silver_s3
    assert spark.read.format("delta").load(f"s3a://{bucket}/lake/bronze/flows").count() == good_rows(demo_raw)
