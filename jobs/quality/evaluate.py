"""``flowlake evaluate``: score a lake against the simulator's ground truth.

For flowlake's attribution and for a naive baseline that applies IP events in
arrival order (as a streaming consumer would: the state at a flow's start is
the last event *published* before it), report per method how many records it
attributed, how many of those name the wrong workload, and how many stay
unattributed (for flowlake, by ``attribution_note``). The **floor** is the
share of records whose owner no evidence names (simulator ``truth_evidence``
``none``): no attributor can go below it without guessing. Also checks that
no record was lost or duplicated.

The naive baseline knows only the tracker's events: it has no CIDR classes, so
records to external peers (``truth_evidence`` ``cidr``) count as unattributed
for it, and it has no heartbeats either.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowlake.contracts import ACTION_ASSIGN, RECORD_KEY
from flowlake.jobs.silver.asof import asof_join

TRUTH_DDL = ", ".join(
    ["instance_id string", "interval_start_ms bigint", "local_ip string", "local_port int", "remote_ip string",
     "remote_port int", "direction string", "true_remote_workload string", "true_remote_kind string",
     "truth_evidence string"]
)
EVIDENCE_NONE = "none"
NAIVE_LEAVES_OUT = ("the naive baseline applies tracker events in arrival order only: it has no CIDR classes "
                    "(external peers count as unattributed for it) and no heartbeats")


@dataclass
class Score:
    """Counts for one attribution approach."""

    records: int = 0
    unattributed: int = 0
    misattributed: int = 0
    by_method: dict[str, dict[str, int]] = field(default_factory=dict)
    by_note: dict[str, int] = field(default_factory=dict)  # unattributed records by attribution_note

    @property
    def misattributed_pct(self) -> float:
        return 100.0 * self.misattributed / max(self.records, 1)

    @property
    def unattributed_pct(self) -> float:
        return 100.0 * self.unattributed / max(self.records, 1)


@dataclass
class Evaluation:
    truth_records: int
    lake_records: int
    missing: int
    extra: int
    duplicated: int
    flowlake: Score
    naive: Score
    floor: int = 0  # records no evidence names (truth_evidence none)
    floor_unattributed: int = 0  # of those, left unattributed by flowlake

    @property
    def floor_pct(self) -> float:
        return 100.0 * self.floor / max(self.flowlake.records, 1)

    def as_dict(self) -> dict:
        d = asdict(self)
        for name in ("flowlake", "naive"):
            s: Score = getattr(self, name)
            d[name].update(misattributed_pct=s.misattributed_pct, unattributed_pct=s.unattributed_pct)
        d.update(floor_pct=self.floor_pct, naive_leaves_out=NAIVE_LEAVES_OUT)
        return d

    def table(self) -> str:
        lines = [
            f"records: truth {self.truth_records}, lake {self.lake_records}, missing {self.missing}, "
            f"extra {self.extra}, duplicated {self.duplicated}",
            f"{'approach':<10} {'method':<13} {'records':>10} {'misattributed':>14} {'share':>8}",
        ]
        for name in ("flowlake", "naive"):
            s: Score = getattr(self, name)
            for method, c in sorted(s.by_method.items()):
                lines.append(f"{name:<10} {method:<13} {c['records']:>10} {c['misattributed']:>14} "
                             f"{100.0 * c['records'] / max(s.records, 1):>7.2f}%")
            lines.append(f"{name:<10} {'TOTAL':<13} {s.records:>10} {s.misattributed:>14}   "
                         f"misattributed {s.misattributed_pct:.3f}%, unattributed {s.unattributed_pct:.3f}%")
        f = self.flowlake
        lines.append(f"flowlake unattributed by note: " + (", ".join(
            f"{note} {n} ({100.0 * n / max(f.records, 1):.3f}%)" for note, n in sorted(f.by_note.items())) or "none"))
        lines.append(f"floor (no evidence names the owner, truth_evidence none): {self.floor} records "
                     f"({self.floor_pct:.3f}%), {self.floor_unattributed} of them unattributed; flowlake unattributed "
                     f"{f.unattributed_pct:.3f}% = floor + {f.unattributed_pct - self.floor_pct:.3f} pp")
        lines.append(f"note: {NAIVE_LEAVES_OUT}")
        return "\n".join(lines)


def naive_attribution(flows: DataFrame, events: DataFrame) -> DataFrame:
    """Flows with ``naive_workload``: the last event published at or before first_start_ms."""
    right = events.select(
        F.col("ip").alias("remote_ip"), F.col("published_ms"),
        F.when(F.col("action") == ACTION_ASSIGN, F.col("workload")).alias("naive_workload"),
        F.col("event_ms").alias("naive_event_ms"),
    )
    joined = asof_join(flows, right, on="remote_ip", left_ts="first_start_ms", right_ts="published_ms",
                       right_prefix="", tie_breaker=[F.col("naive_event_ms").desc()])
    return joined.drop("published_ms", "naive_event_ms")


def score(labelled: DataFrame, *, workload_col: str, method_col: str | None) -> Score:
    """Score rows carrying truth columns and a predicted workload (null = unattributed)."""
    method = F.col(method_col) if method_col else F.when(F.col(workload_col).isNull(), "unattributed").otherwise("event")
    rows = labelled.groupBy(method.alias("method")).agg(
        F.count(F.lit(1)).alias("records"),
        F.sum((F.col(workload_col).isNotNull()
               & ~F.col(workload_col).eqNullSafe(F.col("true_remote_workload"))).cast("long")).alias("mis"),
        F.sum(F.col(workload_col).isNull().cast("long")).alias("unattr"),
    ).collect()
    s = Score()
    for r in rows:
        s.by_method[r["method"]] = {"records": r["records"], "misattributed": r["mis"] or 0}
        s.records += r["records"]
        s.misattributed += r["mis"] or 0
        s.unattributed += r["unattr"] or 0
    return s


def transform(attributed: DataFrame, truth: DataFrame, events: DataFrame, bronze: DataFrame) -> Evaluation:
    """Compare the lake's attributed records, and the naive baseline, with the truth."""
    truth = truth.select(*RECORD_KEY, "true_remote_workload", "true_remote_kind", "truth_evidence")
    dup = attributed.groupBy(*RECORD_KEY).count().where("count > 1").count()
    joined = attributed.join(truth, RECORD_KEY, "inner")
    missing = truth.join(attributed.select(*RECORD_KEY), RECORD_KEY, "left_anti").count()
    extra = attributed.select(*RECORD_KEY).join(truth, RECORD_KEY, "left_anti").count()
    ours = score(joined, workload_col="remote_workload", method_col="remote_attribution")
    if "attribution_note" in attributed.columns:
        ours.by_note = {r[0] or "(none)": r[1] for r in joined.where(F.col("remote_workload").isNull())
                        .groupBy("attribution_note").count().collect()}
    floor = joined.where(F.col("truth_evidence") == EVIDENCE_NONE).agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.col("remote_workload").isNull().cast("long")).alias("u")).first()
    naive = naive_attribution(bronze.select(*RECORD_KEY, "first_start_ms"), events).join(truth, RECORD_KEY, "inner")
    theirs = score(naive, workload_col="naive_workload", method_col=None)
    return Evaluation(
        truth_records=truth.count(), lake_records=attributed.count(), missing=missing, extra=extra,
        duplicated=dup, flowlake=ours, naive=theirs, floor=int(floor["n"] or 0), floor_unattributed=int(floor["u"] or 0),
    )


def adjusted_rand_index(found: dict[str, str], truth: dict[str, str]) -> float:
    """Agreement of two labelings over their common keys (1 = identical split, ~0 = chance)."""
    keys = sorted(set(found) & set(truth))
    n = len(keys)
    if n < 2:
        raise ValueError("need at least two workloads present in both labelings to compare them")

    def c2(x: int) -> float:
        return x * (x - 1) / 2

    pairs = Counter((found[k], truth[k]) for k in keys)
    a, b = Counter(found[k] for k in keys), Counter(truth[k] for k in keys)
    index = sum(c2(v) for v in pairs.values())
    sa, sb = sum(c2(v) for v in a.values()), sum(c2(v) for v in b.values())
    expected = sa * sb / c2(n)
    top = (sa + sb) / 2
    return 1.0 if top == expected else (index - expected) / (top - expected)
