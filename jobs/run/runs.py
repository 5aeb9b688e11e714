"""The runs log, ``_meta/runs``: a row for each ``flowlake pipeline run`` that finished its stages.

A row names the stages that run finished (``stages``, in pipeline order), so stages run apart (the
Airflow DAG: one process a stage, one run id) leave a row each. What the later runs read of it:

- a window is complete once a run of it finished ``gold`` (backfill skips it, freshness counts it);
- the ownership stage continues from the holdings a run that finished ``ownership`` published;
- late data reaches back into every window a run published derived tables for (``DERIVED_STAGES``),
  whether or not its gold ran yet.

Rows written before the column existed have ``stages`` null. Only runs that reached gold wrote a
row then, so null reads as every stage.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from flowlake.jobs.run import io
from flowlake.jobs.run.context import RunContext
from flowlake.lake import RUNS, Lake

STAGES = "stages"
# the stages whose tables are derived from a window's bronze: late data for the window changes them
DERIVED_STAGES = ("ownership", "attribute", "gold")


def read(spark: SparkSession, lake: Lake) -> DataFrame:
    """The runs log (empty if no run finished yet), with ``stages`` null on rows written before it existed."""
    runs = io.read(spark, lake, RUNS)
    return runs if STAGES in runs.columns else runs.withColumn(STAGES, F.lit(None).cast("array<string>"))


def finished(stage: str) -> Column:
    """The rows of runs that finished ``stage``."""
    return F.col(STAGES).isNull() | F.array_contains(F.col(STAGES), stage)


def published() -> Column:
    """The rows of runs that published a table derived from their window's bronze."""
    derived = F.array(*[F.lit(s) for s in DERIVED_STAGES])
    return F.col(STAGES).isNull() | F.arrays_overlap(F.col(STAGES), derived)


def record(ctx: RunContext, *, stages: tuple[str, ...], started_ms: int, finished_ms: int) -> None:
    """Append this run's row: its span, the stages it finished, and what those stages counted (ingest's
    files and rows only on a row with ingest, the attributed rows only on one with attribute)."""
    span, (flows, events) = ctx.the_span, ctx.results["ingest"]
    took_in = "ingest" in stages
    attributed = ctx.results.get("by_attribution")
    row = {
        "run_id": ctx.run_id, "start_ms": span.start_ms, "end_ms": span.end_ms, "recomputed_from_ms": span.from_ms,
        "flow_files": flows.files_ingested if took_in else None, "flow_rows": flows.rows_ingested if took_in else None,
        "event_files": events.files_ingested if took_in else None,
        "quarantined_files": len(flows.quarantined) + len(events.quarantined) if took_in else None,
        "attributed_rows": sum(attributed.values()) if attributed is not None else None,
        "started_at_ms": started_ms, "finished_at_ms": finished_ms, STAGES: list(stages),
    }
    # a lake whose log predates ``stages`` gains the column (its earlier rows read it as null)
    io.append(ctx.spark.createDataFrame([tuple(row[c] for c in RUNS.columns)], RUNS.ddl), ctx.lake, RUNS,
              merge_schema=True)
