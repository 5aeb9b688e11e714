"""Segmentation, least-privilege allow rules and pathway validation from gold/app_dependencies.

* ``workload_graph``: the undirected workload graph (Spark aggregate).
* ``detect``: Louvain communities (networkx) weighted by traffic, made stable run to
  run: new communities take the id of the previous segment they overlap most, and a
  workload whose segment changed moves back unless that costs more than
  ``stickiness`` modularity. ``transform`` collects the graph (one row per workload
  pair: a small aggregate) to the driver to run it.
* ``allow_rules``: observed (source workload or whole segment) -> (destination, port)
  with first seen, last seen and connections.
* ``breaches`` / ``path_validation``: flows a declared policy denies, and declared
  paths that saw no traffic.
"""

from __future__ import annotations

import re
from collections import Counter

import networkx as nx
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from flowlake.jobs.config import DeclaredPath, PolicyRule, SegmentationParams

HOUR_MS = 3_600_000
SEGMENTS_DDL = "workload string, segment string, segment_size int, previous_segment string, degree double"
QUALITY_DDL = (
    "computed_from_ms bigint, computed_to_ms bigint, workloads int, edges int, segments int, modularity double, "
    "coverage double, performance double, intra_weight_share double, kept_segment_share double, weight string"
)


def glob_regex(pattern: str) -> str:
    """A workload glob (``*``, ``?``) as an anchored regex usable by Spark's RLIKE."""
    out = []
    for ch in pattern:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return "^" + "".join(out) + "$"


def _matches(column: str, pattern: str) -> Column:
    return F.coalesce(F.col(column), F.lit("")).rlike(glob_regex(pattern))


def workload_graph(dependencies: DataFrame, *, params: SegmentationParams) -> DataFrame:
    """Undirected weighted edges (a, b, weight) between attributed workloads, a < b."""
    excluded = F.lit(False)
    for pattern in params.exclude:
        excluded = excluded | _matches("src_workload", pattern) | _matches("dst_workload", pattern)
    edges = dependencies.where(
        F.col("src_workload").isNotNull() & F.col("dst_workload").isNotNull()
        & (F.col("src_workload") != F.col("dst_workload")) & ~excluded
    ).select(
        F.least("src_workload", "dst_workload").alias("a"), F.greatest("src_workload", "dst_workload").alias("b"),
        "connections", (F.col("bytes_to_dst") + F.col("bytes_to_src")).alias("bytes"),
    ).groupBy("a", "b").agg(F.sum("connections").alias("connections"), F.sum("bytes").alias("bytes"))
    weight = {
        "connections": F.col("connections").cast("double"),
        "bytes": F.col("bytes").cast("double"),
        "log_bytes": F.log1p(F.col("bytes").cast("double")),
    }[params.weight]
    return edges.select("a", "b", weight.alias("weight")).where(F.col("weight") > 0)


def _communities(graph: nx.Graph, labels: dict[str, str]) -> list[set[str]]:
    groups: dict[str, set[str]] = {}
    for node, label in labels.items():
        groups.setdefault(label, set()).add(node)
    return list(groups.values())


def _modularity(graph: nx.Graph, labels: dict[str, str], *, resolution: float) -> float:
    return nx.community.modularity(graph, _communities(graph, labels), weight="weight", resolution=resolution)


def detect(edges: list[tuple[str, str, float]], previous: dict[str, str], *,
           params: SegmentationParams) -> dict[str, str]:
    """Workload -> segment id, stable with respect to ``previous`` (see the module doc)."""
    graph = nx.Graph()
    graph.add_weighted_edges_from(edges)
    if graph.number_of_nodes() == 0:
        return {}
    parts = nx.community.louvain_communities(graph, weight="weight", resolution=params.resolution,
                                             seed=params.seed)
    # 1. new communities take the previous id they overlap most (largest overlaps first)
    overlaps = sorted(
        ((len([n for n in part if previous.get(n) == seg]), i, seg)
         for i, part in enumerate(parts) for seg in {previous[n] for n in part if n in previous}),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    names: dict[int, str] = {}
    used: set[str] = set()
    for count, i, seg in overlaps:
        if count > 0 and i not in names and seg not in used:
            names[i], _ = seg, used.add(seg)
    numbers = [int(m.group(1)) for s in set(previous.values()) | used if (m := re.fullmatch(r"seg-(\d+)", s))]
    next_id = max(numbers, default=0) + 1
    for i in sorted(range(len(parts)), key=lambda i: (-len(parts[i]), min(parts[i]))):
        if i not in names:
            names[i], next_id = f"seg-{next_id:02d}", next_id + 1
    labels = {n: names[i] for i, part in enumerate(parts) for n in part}
    # 2. stickiness: undo moves that buy less than params.stickiness modularity
    current = _modularity(graph, labels, resolution=params.resolution)
    for node in sorted(labels):
        old = previous.get(node)
        if old is None or old == labels[node] or old not in set(labels.values()):
            continue
        trial = {**labels, node: old}
        q = _modularity(graph, trial, resolution=params.resolution)
        if current - q <= params.stickiness:
            labels, current = trial, q
    return labels


def quality(edges: list[tuple[str, str, float]], labels: dict[str, str], previous: dict[str, str], *,
            params: SegmentationParams) -> dict[str, float | int]:
    """Modularity, coverage, performance, intra-segment traffic share, share that kept its segment."""
    graph = nx.Graph()
    graph.add_weighted_edges_from(edges)
    if graph.number_of_nodes() == 0:
        return {"workloads": 0, "edges": 0, "segments": 0, "modularity": None, "coverage": None,
                "performance": None, "intra_weight_share": None, "kept_segment_share": None}
    parts = _communities(graph, labels)
    coverage, performance = nx.community.partition_quality(graph, parts)
    total = sum(w for _, _, w in edges)
    intra = sum(w for a, b, w in edges if labels[a] == labels[b])
    known = [n for n in labels if n in previous]
    return {
        "workloads": graph.number_of_nodes(), "edges": graph.number_of_edges(), "segments": len(parts),
        "modularity": _modularity(graph, labels, resolution=params.resolution),
        "coverage": coverage, "performance": performance,
        "intra_weight_share": intra / total if total else None,
        "kept_segment_share": (sum(labels[n] == previous[n] for n in known) / len(known)) if known else None,
    }


def is_current(quality: DataFrame | None, *, from_ms: int, to_ms: int, weight: str, recomputed_from_ms: int) -> bool:
    """Whether the published segments need no recompute: gold/segment_quality says they were found on the
    dependency hours [from_ms, to_ms) with this weight, and this run recomputed no hour before ``to_ms`` (an
    hour with no traffic leaves the lake's latest hour, and so the window, where it was)."""
    if quality is None or recomputed_from_ms < to_ms:
        return False
    rows = quality.select("computed_from_ms", "computed_to_ms", "weight").collect()
    return [tuple(r) for r in rows] == [(from_ms, to_ms, weight)]


def transform(dependencies: DataFrame, previous_segments: DataFrame, *, params: SegmentationParams,
              from_ms: int, to_ms: int) -> tuple[DataFrame, DataFrame]:
    """(gold/segments, gold/segment_quality) from the dependency rows in [from_ms, to_ms)."""
    spark = dependencies.sparkSession
    window = dependencies.where((F.col("hour_start_ms") >= from_ms) & (F.col("hour_start_ms") < to_ms))
    edges = [(r.a, r.b, float(r.weight)) for r in workload_graph(window, params=params).collect()]
    previous = {r.workload: r.segment for r in previous_segments.select("workload", "segment").collect()}
    labels = detect(edges, previous, params=params)
    sizes = Counter(labels.values())
    degree: Counter = Counter()
    for a, b, w in edges:
        degree[a] += w
        degree[b] += w
    rows = [(n, s, sizes[s], previous.get(n), float(degree[n])) for n, s in sorted(labels.items())]
    q = quality(edges, labels, previous, params=params)
    q_row = [(from_ms, to_ms, q["workloads"], q["edges"], q["segments"], q["modularity"], q["coverage"],
              q["performance"], q["intra_weight_share"], q["kept_segment_share"], params.weight)]
    return spark.createDataFrame(rows, SEGMENTS_DDL), spark.createDataFrame(q_row, QUALITY_DDL)


def allow_rules(dependencies: DataFrame, segments: DataFrame) -> DataFrame:
    """Least-privilege allow rules with evidence.

    ``scope='workload'``: one rule per observed (source workload, destination, port).
    ``scope='segment'``: one rule when every member (two or more) of a source segment
    made that call; its workload rules still stand as the evidence."""
    seen = dependencies.where(F.col("src_workload").isNotNull() & F.col("dst_workload").isNotNull()).groupBy(
        "src_workload", "dst_workload", "dst_port").agg(
        F.min("hour_start_ms").alias("first_seen_ms"),
        F.max(F.col("hour_start_ms") + HOUR_MS).alias("last_seen_ms"),
        F.sum("connections").cast("bigint").alias("connections"),
        F.sum(F.col("bytes_to_dst") + F.col("bytes_to_src")).cast("bigint").alias("bytes"),
    ).join(segments.select(F.col("workload").alias("src_workload"), F.col("segment").alias("src_segment"),
                           "segment_size"), "src_workload", "left")
    per_workload = seen.select(
        F.lit("workload").alias("scope"), F.col("src_workload").alias("src"), "src_segment", "dst_workload",
        "dst_port", "first_seen_ms", "last_seen_ms", "connections", "bytes", F.lit(1).alias("src_workloads"),
    )
    per_segment = seen.where(F.col("src_segment").isNotNull()).groupBy(
        "src_segment", "segment_size", "dst_workload", "dst_port").agg(
        F.min("first_seen_ms").alias("first_seen_ms"), F.max("last_seen_ms").alias("last_seen_ms"),
        F.sum("connections").cast("bigint").alias("connections"), F.sum("bytes").cast("bigint").alias("bytes"),
        F.count(F.lit(1)).cast("int").alias("src_workloads"),
    ).where((F.col("src_workloads") == F.col("segment_size")) & (F.col("segment_size") >= 2)).select(
        F.lit("segment").alias("scope"), F.col("src_segment").alias("src"), "src_segment", "dst_workload",
        "dst_port", "first_seen_ms", "last_seen_ms", "connections", "bytes", "src_workloads",
    )
    return per_workload.unionByName(per_segment)


def decision(rules: list[PolicyRule], *, default_action: str) -> tuple[Column, Column]:
    """(action, policy name) of the first rule matching each dependency row."""
    action, name = F.lit(default_action), F.lit("default")
    for rule in reversed(rules):
        hit = _matches("src_workload", rule.src) & _matches("dst_workload", rule.dst)
        if rule.ports:
            hit = hit & F.col("dst_port").isin(rule.ports)
        action = F.when(hit, F.lit(rule.action)).otherwise(action)
        name = F.when(hit, F.lit(rule.name)).otherwise(name)
    return action, name


def breaches(dependencies: DataFrame, *, rules: list[PolicyRule], default_action: str) -> DataFrame:
    """Dependency rows (hourly) a declared policy denies, with the deciding policy's name."""
    action, name = decision(rules, default_action=default_action)
    return dependencies.withColumn("_action", action).withColumn("policy", name).where(
        F.col("_action") == "deny").groupBy("hour_start_ms", "policy", "src_workload", "dst_workload",
                                             "dst_port").agg(
        F.sum("connections").cast("bigint").alias("connections"),
        F.sum("bytes_to_dst").cast("bigint").alias("bytes_to_dst"),
        F.sum("bytes_to_src").cast("bigint").alias("bytes_to_src"),
    )


def path_validation(dependencies: DataFrame, *, paths: list[DeclaredPath], from_ms: int, to_ms: int) -> DataFrame:
    """One row per declared path: observed or no_traffic in [from_ms, to_ms), with evidence."""
    spark = dependencies.sparkSession
    declared = spark.createDataFrame(
        [(p.name, p.src, p.dst, p.port, glob_regex(p.src), glob_regex(p.dst)) for p in paths],
        "path string, src string, dst string, port int, src_re string, dst_re string",
    )
    seen = dependencies.where((F.col("hour_start_ms") >= from_ms) & (F.col("hour_start_ms") < to_ms)).groupBy(
        "src_workload", "dst_workload", "dst_port").agg(
        F.min("hour_start_ms").alias("first_seen_ms"), F.max(F.col("hour_start_ms") + HOUR_MS).alias("last_seen_ms"),
        F.sum("connections").alias("connections"),
        F.sum(F.col("bytes_to_dst") + F.col("bytes_to_src")).alias("bytes"),
    )
    hit = (F.expr("coalesce(src_workload, '') RLIKE src_re") & F.expr("coalesce(dst_workload, '') RLIKE dst_re")
           & (F.col("port").isNull() | (F.col("port") == F.col("dst_port"))))
    joined = declared.join(seen, hit, "left")
    return joined.groupBy("path", "src", "dst", "port").agg(
        F.coalesce(F.sum("connections"), F.lit(0)).cast("bigint").alias("connections"),
        F.coalesce(F.sum("bytes"), F.lit(0)).cast("bigint").alias("bytes"),
        F.min("first_seen_ms").alias("first_seen_ms"), F.max("last_seen_ms").alias("last_seen_ms"),
    ).withColumn("status", F.when(F.col("connections") > 0, F.lit("observed")).otherwise(F.lit("no_traffic"))
    ).withColumn("checked_from_ms", F.lit(from_ms)).withColumn("checked_to_ms", F.lit(to_ms))
