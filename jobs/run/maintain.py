"""The maintain stage: compaction, clustering, checkpoints and VACUUM, so per-run cost stays flat.

Runs for windows whose end is a multiple of ``maintenance.every_hours`` (keyed
on the data interval, so a backfill maintains as it goes), and always from
``flowlake pipeline maintain``. For each table of the catalog that exists:

* checkpoints every ``checkpoint_interval`` commits (the table property);
* OPTIMIZE once it holds ``compact_min_files`` files: dt-partitioned tables
  only for the days of the run's span; silver/flows_attributed Z-ordered by
  ``cluster_flows_by`` within each day;
* VACUUM keeping ``vacuum_retain_hours`` of time travel;

and deletes run plans (``_meta/plans``) older than ``vacuum_retain_hours``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from flowlake.jobs.config import MaintenanceParams
from flowlake.jobs.run import io
from flowlake.jobs.run.context import RunContext
from flowlake.jobs.run.plan import PLANS_DIR, prune_plans
from flowlake.lake import FLOWS_ATTRIBUTED, TABLES, Lake
from flowlake.spark import jvm_console_captured
from flowlake.timeutil import HOUR_MS, day_of

# Delta's VACUUM says what it did only on the JVM's stdout: "Deleted 3 files and directories in a total of ..."
_VACUUM_DELETED = re.compile(r"Deleted (\d+) files")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Maintained:
    """What maintenance did to one table."""

    table: str
    compacted: tuple[int, int] | None  # (files removed, files added), None: below compact_min_files
    deleted: int  # files VACUUM deleted
    retain_hours: int

    def __str__(self) -> str:
        did = f"compacted {self.compacted[0]} file(s) into {self.compacted[1]}" if self.compacted else \
            "no compaction needed"
        return f"{self.table}: {did}; vacuumed (keeping {self.retain_hours} h, {self.deleted} file(s) deleted)"


def summary(done: list[Maintained]) -> str:
    """One line for a whole maintenance (the per-table lines go to the run's log)."""
    plans = sum(m.deleted for m in done if m.table == PLANS_DIR)
    done = [m for m in done if m.table != PLANS_DIR]
    compacted = [m for m in done if m.compacted and m.compacted[0]]  # OPTIMIZE found files to rewrite
    removed, added = (sum(m.compacted[i] for m in compacted) for i in (0, 1))
    retain = f"keeping {done[0].retain_hours} h" if done else "nothing to vacuum"
    did = f"compacted {len(compacted)} ({removed} file(s) into {added})" if compacted else "nothing to compact"
    return (f"maintain: {len(done)} table(s); {did}; vacuumed ({retain}, {sum(m.deleted for m in done)} file(s) "
            "deleted)" + (f"; {plans} old run plan(s) deleted" if plans else ""))


def maintain_stage(ctx: RunContext) -> None:
    """Maintain the lake when the window's end is due (see the module doc)."""
    params, span = ctx.config.maintenance, ctx.the_span
    if span.end_ms % (params.every_hours * HOUR_MS):
        ctx.echo(f"  maintain: not due (every {params.every_hours} h of data; `flowlake pipeline maintain` forces it)")
        return
    done = maintain(ctx.spark, ctx.lake, params=params, days=(day_of(span.day_from_ms), day_of(span.day_to_ms)))
    ctx.counts["maintain"] = len(done)
    for m in done:
        log.info("%s", m)
    ctx.echo(f"  {summary(done)}")


def maintain(spark: SparkSession, lake: Lake, *, params: MaintenanceParams,
             days: tuple[str, str] | None = None) -> list[Maintained]:
    """Maintain every existing table; ``days`` = [first, last) limits dt-partitioned compaction.

    Returns what was done to each table (``str()`` of each is one line)."""
    out = []
    for table in TABLES.values():
        if not io.exists(spark, lake, table):
            continue
        path = lake.path(table)
        delta = DeltaTable.forPath(spark, path)
        detail = delta.detail().select("numFiles", "properties").first()
        # Delta 4 ignores VACUUM's own retention argument (other than 0) in favour of this property
        want = {"delta.checkpointInterval": str(params.checkpoint_interval),
                "delta.deletedFileRetentionDuration": f"interval {params.vacuum_retain_hours} hours",
                **table.properties}  # a lake from before a table named its statistics columns gets them here
        change = {k: v for k, v in want.items() if detail["properties"].get(k) != v}
        if change:
            spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ("
                      + ", ".join(f"'{k}' = '{v}'" for k, v in change.items()) + ")")
        compacted = None
        if detail["numFiles"] >= params.compact_min_files:
            optimize = delta.optimize()
            if "dt" in table.partition_by and days is not None:
                optimize = optimize.where(f"dt >= '{days[0]}' AND dt < '{days[1]}'")
            if table == FLOWS_ATTRIBUTED and params.cluster_flows_by:
                metrics = optimize.executeZOrderBy(*params.cluster_flows_by)
            else:
                metrics = optimize.executeCompaction()
            m = metrics.select("metrics.numFilesRemoved", "metrics.numFilesAdded").first()
            compacted = (int(m[0]), int(m[1]))
        deleted = vacuum(spark, delta, retain_hours=params.vacuum_retain_hours)
        out.append(Maintained(table.name, compacted, deleted, params.vacuum_retain_hours))
    pruned = prune_plans(lake, older_than_hours=params.vacuum_retain_hours)
    if pruned:  # run plans no retry will read again (jobs/run/plan.py)
        out.append(Maintained(PLANS_DIR, None, pruned, params.vacuum_retain_hours))
    return out


def vacuum(spark: SparkSession, delta: DeltaTable, *, retain_hours: int) -> int:
    """VACUUM one table; returns the files it deleted (its console line is kept off the terminal)."""
    with jvm_console_captured(spark) as printed:
        delta.vacuum(retain_hours)
    return sum(int(m.group(1)) for line in printed for m in [_VACUUM_DELETED.search(line)] if m)
