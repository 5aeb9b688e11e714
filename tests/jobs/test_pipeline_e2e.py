"""End to end: a simulated fleet through `pipeline run`, scored against the simulator's truth.

Checks that no record is lost or duplicated, nothing is misattributed and
unattributed stays well under 1%; that a re-run leaves every table as one
run did; and that late raw files and late events are picked up by the next
run and correct the window they belong to.
"""

import shutil
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from flowlake.config import load_config
from flowlake.jobs.quality import evaluate as ev
from tests import lakehelp as lk
from flowlake.jobs.config import load_jobs_config
from flowlake.jobs.run import ownership_stage
from flowlake.jobs.run.pipeline import run
from flowlake.jobs.run.plan import load_plan
from flowlake.jobs.silver import attribute
from flowlake.timeutil import parse_utc
from flowlake.sim.core import simulate
from flowlake.sim.params import SimParams

START = "2025-06-02T00:00:00Z"
H = 3_600_000
T = parse_utc(START)
TABLES = ["bronze/flows", "bronze/ip_events", "silver/ip_ownership", "silver/ip_ownership_conflicts", "silver/ip_event_holdings",
          "silver/ip_ownership_doubts", "silver/tracker_lag_pairs", "silver/ports_seen",
          "silver/flows_attributed", "gold/app_dependencies"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet")
    # 20-minute files (the default rolls every 5 minutes): the same records in a quarter of the files,
    # since per-file cost dominates ingest at this size
    params = load_config(SimParams, start=START, hours=2.0, records=24_000, seed=11, batch_intervals=20)
    simulate(out=str(out / "raw"), params=params, progress=False)
    return out


def _evaluate(spark, lake_root, truth_root):
    lake = lk.Lake(lake_root)
    truth = spark.read.schema(ev.TRUTH_DDL).parquet(str(Path(truth_root) / "flows"))
    return ev.transform(lk.read(spark, lake.flows_attributed), truth, lk.read(spark, lake.bronze_ip_events),
                        lk.read(spark, lake.bronze_flows))


def _snapshot(spark, lake_root):
    return {t: spark.read.format("delta").load(f"{lake_root}/{t}").localCheckpoint() for t in TABLES}


def test_pipeline_attributes_a_fleet_with_no_loss_and_no_misattribution_and_reruns_idempotently(
        spark, fleet, one_shot_lake, one_shot, monkeypatch, tmp_path):
    raw, (lake_root, report) = str(fleet / "raw"), one_shot_lake
    config = load_jobs_config()
    assert report.flows.quarantined == [] and report.events.quarantined == []
    result = _evaluate(spark, lake_root, str(fleet / "raw" / "truth"))
    print(result.table())
    assert (result.missing, result.extra, result.duplicated) == (0, 0, 0)
    assert result.lake_records == result.truth_records > 20_000
    assert result.flowlake.misattributed == 0
    assert result.flowlake.unattributed_pct < 1.0
    # every attribution method is exercised by the fleet
    assert {"heartbeat", "event", "cidr"} <= set(result.flowlake.by_method)

    before = _snapshot(spark, lake_root)
    again = run(spark, raw_root=raw, lake_root=lake_root, start_ms=T, end_ms=T + 2 * H, config=config)
    assert again.flows.files_ingested == 0 and again.events.files_ingested == 0
    after = _snapshot(spark, lake_root)
    for table in TABLES:
        assert_df_equality(before[table], after[table], ignore_row_order=True, ignore_nullable=True)

    # the next hour has no traffic: the attribute stage does no lookup (the quiet path), still gates what it
    # publishes, and leaves the attributed records as they were
    def no_lookup(*_args, **_kwargs):
        raise AssertionError("a quiet hour ran the attribution lookup")

    monkeypatch.setattr(attribute, "transform", no_lookup)
    quiet = run(spark, raw_root=raw, lake_root=lake_root, start_ms=T + 2 * H, end_ms=T + 3 * H, config=config)
    assert quiet.by_attribution == {} and any(line.startswith("quality attribute:") for line in quiet.quality)
    later = _snapshot(spark, lake_root)
    # nor does it change who held what: the holdings open at its start stay open, and the sidecar silences the
    # hours before found stay silences though its evidence no longer shows those sidecars
    for table in ("silver/flows_attributed", "silver/ports_seen", "gold/app_dependencies", "silver/ip_ownership",
                  "silver/ip_ownership_doubts", "silver/ip_event_holdings"):
        assert_df_equality(after[table], later[table], ignore_row_order=True, ignore_nullable=True)

    # a second quiet hour, whose padded span holds no heartbeat either: ownership takes its quiet path (no
    # event replay) and leaves the tables as the full path leaves them on a copy of the same lake
    full = str(tmp_path / "full")
    shutil.copytree(lake_root, full)

    def no_replay(*_args, **_kwargs):
        raise AssertionError("a quiet hour replayed the events")

    with monkeypatch.context() as m:
        m.setattr(ownership_stage, "event_rows_df", no_replay)
        run(spark, raw_root=raw, lake_root=lake_root, start_ms=T + 3 * H, end_ms=T + 4 * H, config=config)
    with monkeypatch.context() as m:
        m.setattr(ownership_stage, "_is_quiet", lambda *_a, **_k: False)
        run(spark, raw_root=raw, lake_root=full, start_ms=T + 3 * H, end_ms=T + 4 * H, config=config)
    quiet_tables, full_tables = _snapshot(spark, lake_root), _snapshot(spark, full)
    for table in ("silver/ip_ownership", "silver/ip_ownership_conflicts", "silver/ip_ownership_doubts",
                  "silver/ip_event_holdings", "silver/tracker_lag_pairs"):
        assert_df_equality(quiet_tables[table], full_tables[table], ignore_row_order=True, ignore_nullable=True)
        assert_df_equality(quiet_tables[table], later[table], ignore_row_order=True, ignore_nullable=True)


def test_hour_by_hour_stage_by_stage_with_late_data_equals_one_window(spark, fleet, one_shot, tmp_path):
    """Window-size invariance (contracts §4) as Airflow runs it: each hour one stage at a time under one run
    id, with data that straddles windows (hour 0 runs without some of its files and events; they arrive
    before hour 1's run, which reaches back and corrects hour 0). The end state equals one run over both
    hours, for silver and hourly/daily gold."""
    raw = tmp_path / "raw"
    shutil.copytree(fleet / "raw", raw)
    lake_root = str(tmp_path / "lake")
    held = tmp_path / "held"
    # hold back some of the first hour's flow files and the events published in it
    moved = []
    for path in sorted((raw / "flows/v1/dt=2025-06-02/hr=00").rglob("*.parquet"))[::7]:
        dest = held / path.relative_to(raw)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, dest)
        moved.append(dest)
    for path in sorted((raw / "ip_events/v1/dt=2025-06-02").glob("tracker-*"))[:6]:
        dest = held / path.relative_to(raw)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, dest)
        moved.append(dest)
    assert moved

    def hour(h: int, stages=STAGES):
        for stage in stages:
            report = run(spark, raw_root=str(raw), lake_root=lake_root, start_ms=T + h * H, end_ms=T + (h + 1) * H,
                         config=load_jobs_config(), stages=(stage,), run_id=f"hour-{h}")
        # ownership planned the span once and kept it; the later stages' processes read it, not replan
        kept = load_plan(lk.Lake(lake_root), f"hour-{h}", start_ms=T + h * H, end_ms=T + (h + 1) * H)
        assert kept is not None and kept[0] == report.span
        return report

    hour(0, STAGES[:-1])  # its gold task fails (or waits): the DAG retries it after hour 1 has run
    lake = lk.Lake(lake_root)
    first_hour = lk.read(spark, lake.flows_attributed).where(F.col("interval_start_ms") < T + H).count()

    for path in moved:  # the late files arrive
        dest = raw / path.relative_to(held)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, dest)
    report = hour(1)
    # the late data reached back into the first hour, whose silver was published though its gold was not
    assert report.span.from_ms == T
    assert lk.read(spark, lake.flows_attributed).where(F.col("interval_start_ms") < T + H).count() > first_hour
    hour(0, ("gold",))  # the retried gold task of hour 0, with the plan that hour kept
    # a row a stage process; the window is complete once its gold row is there
    logged = [(r.run_id, tuple(r.stages)) for r in lk.read(spark, lake.runs).orderBy("finished_at_ms").collect()]
    assert logged == [("hour-0", (s,)) for s in STAGES[:-1]] + [("hour-1", (s,)) for s in STAGES] + [("hour-0", ("gold",))]

    result = _evaluate(spark, lake_root, str(raw / "truth"))
    assert (result.missing, result.extra, result.duplicated, result.flowlake.misattributed) == (0, 0, 0, 0)
    assert result.flowlake.unattributed_pct < 1.0
    _assert_same_tables(_snapshot_all(spark, lake_root), one_shot, [t for t in ALL_TABLES if not t.startswith("bronze/")])


STAGES = ("ingest", "ownership", "attribute", "quality", "gold")
ALL_TABLES = TABLES + ["gold/traffic_hourly", "gold/traffic_daily", "gold/link_hourly", "gold/crosszone_cost",
                       "gold/policy_breaches"]


@pytest.fixture(scope="module")
def one_shot_lake(spark, fleet, tmp_path_factory):
    """The fleet's two hours run once, all stages: (lake root, run report)."""
    lake_root = str(tmp_path_factory.mktemp("one_shot") / "lake")
    report = run(spark, raw_root=str(fleet / "raw"), lake_root=lake_root, start_ms=T, end_ms=T + 2 * H,
                 config=load_jobs_config())
    return lake_root, report


@pytest.fixture(scope="module")
def one_shot(spark, one_shot_lake):
    """The one-shot run's tables (the reference the other cuts must equal), taken before any re-run."""
    return _snapshot_all(spark, one_shot_lake[0])


def _snapshot_all(spark, lake_root):
    return {t: spark.read.format("delta").load(f"{lake_root}/{t}").drop("source_file").localCheckpoint()
            for t in ALL_TABLES}


def _assert_same_tables(got, want, tables):
    for table in tables:
        print(table, got[table].count())
        assert_df_equality(got[table], want[table], ignore_row_order=True, ignore_nullable=True,
                           ignore_column_order=True)
