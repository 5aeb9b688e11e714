"""The analysts' helper: open the lake named in conf/insight.yaml and draw the insight tables.

    from flowlake.notebook import open_lake
    lake = open_lake()                      # conf/insight.yaml `lake`, or FLOWLAKE_INSIGHT__LAKE
    deps = lake.table("app_dependencies")   # a pandas DataFrame, read by delta-rs (no JVM)
    lake.spark()                            # a local Spark session, started on first call, for silver-sized work

Gold tables are small: they are read with delta-rs in well under a second. The
plotting functions take those pandas frames and a matplotlib Axes; the notebooks
and ``flowlake report`` use the same ones.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.dataset as pads  # noqa: E402

from flowlake import lakeread  # noqa: E402
from flowlake.insight_config import InsightConfig, load_insight_config  # noqa: E402
from flowlake.lake import QUARANTINE_FILES, TABLES  # noqa: E402
from flowlake.timeutil import DAY_MS  # noqa: E402

# short names -> table under the lake root (the catalog's last path part, "quarantine" for quarantine/files);
# any other short name is gold/<name>, a name with "/" is taken as is
ALIASES = {**{name.rsplit("/", 1)[1]: name for name in TABLES if not name.startswith("bronze/")},
           "quarantine": QUARANTINE_FILES.name, "capture_completeness": "silver/capture_completeness"}
NO_SEGMENT = "(no segment)"


@dataclass
class LakeView:
    """Read access to one lake: tables as pandas through delta-rs, Spark on demand."""

    root: str
    config: InsightConfig
    _spark: object = field(default=None, repr=False)

    def path(self, name: str) -> str:
        """Table path under the lake root for a short name (``app_dependencies``) or ``layer/table``."""
        return name if "/" in name else ALIASES.get(name, f"gold/{name}")

    def has(self, name: str) -> bool:
        return lakeread.open_table(self.root, self.path(name)) is not None

    def table(self, name: str, *, columns: list[str] | None = None, filters=None) -> pd.DataFrame:
        """A table as pandas, read by delta-rs; ``filters`` is a pyarrow expression (``pyarrow.dataset.field``)."""
        df = lakeread.read_table(self.root, self.path(name), columns=columns, filters=filters)
        if df is None:
            raise FileNotFoundError(
                f"table {self.path(name)} is missing under {self.root} (tables there: "
                f"{', '.join(lakeread.list_tables(self.root)) or 'none'}): run `flowlake pipeline run` first")
        return df

    def spark(self):
        """A small local Spark session (started on first call) for queries too big for pandas."""
        if self._spark is None:
            from flowlake.spark import get_spark
            from flowlake.storage import spark_s3a_conf

            extra = spark_s3a_conf() if self.root.startswith("s3") else None
            self._spark = get_spark(app_name="flowlake-notebook", master="local[2]", shuffle_partitions=2,
                                    extra_conf=extra)
        return self._spark

    def spark_table(self, name: str):
        """A table as a Spark DataFrame (silver-sized queries)."""
        from flowlake.storage import join, spark_path

        return self.spark().read.format("delta").load(spark_path(join(self.root, self.path(name))))


def open_lake(root: str | None = None, *, config: InsightConfig | None = None, spark=None) -> LakeView:
    """Open a lake (default: ``lake`` of conf/insight.yaml); no JVM unless ``spark`` is given or asked for."""
    config = config or load_insight_config()
    root = root or config.lake
    view = LakeView(root=root, config=config, _spark=spark)
    if not view.has("app_dependencies"):
        raise FileNotFoundError(f"no lake at {root} (no gold/app_dependencies): build one with "
                                "`flowlake simulate` and `flowlake pipeline run`, or set FLOWLAKE_INSIGHT__LAKE")
    return view


# ---------------------------------------------------------------- numbers


def human_bytes(n) -> str:
    """1234567 -> '1.2 MB' (decimal units); "–" for null."""
    if n is None or pd.isna(n):
        return "–"
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


MIN_EPOCH_MS = 946_684_800_000  # 2000-01-01: an *_ms column whose values are all above this is a time


def is_time_ms(name: str, s: pd.Series) -> bool:
    """Whether a column holds epoch-millisecond times (``*_ms``, every value after 2000)."""
    if not name.endswith("_ms") or not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return False
    v = s.dropna()
    return len(v) > 0 and bool((v >= MIN_EPOCH_MS).all())


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """A copy for display: epoch-ms columns as UTC times (``hour_start_ms`` -> ``hour_start``)."""
    out = df.copy()
    for c in df.columns:
        if is_time_ms(c, df[c]):
            out[c] = pd.to_datetime(df[c], unit="ms", utc=True)
            out = out.rename(columns={c: c.removesuffix("_ms")})
    return out


def attribution_shares(root: str) -> pd.DataFrame:
    """Records of silver/flows_attributed per ``remote_attribution`` with their share: one column,
    counted batch by batch (memory stays flat however big silver is)."""
    dt = lakeread.open_table(root, "silver/flows_attributed")
    counts: dict[str, int] = {}
    if dt is not None:
        for batch in dt.to_pyarrow_dataset().to_batches(columns=["remote_attribution"]):
            for item in pc.value_counts(batch.column(0)).to_pylist():
                key = item["values"] if item["values"] is not None else "unattributed"
                counts[key] = counts.get(key, 0) + item["counts"]
    out = pd.DataFrame({"remote_attribution": list(counts), "records": list(counts.values())})
    out = out.sort_values("records", ascending=False, ignore_index=True)
    out["share"] = out["records"] / out["records"].sum() if len(out) else []
    return out


def who_called(view: LakeView, workload: str, *, days: int = 7, until_ms: int | None = None) -> tuple[pd.DataFrame, float]:
    """Who called ``workload`` in the ``days`` before ``until_ms`` (default: the end of the newest complete run's window),
    and how much: callers with connections and bytes each way, heaviest first; plus the seconds it took.

    Read from silver/flows_attributed with delta-rs (partition and row filters pushed down). Each
    connection is counted once, as gold/app_dependencies does: from the caller's outbound record, or
    from the server's inbound record when the caller has no sidecar.
    """
    t0 = time.perf_counter()
    if until_ms is None:
        runs = lakeread.complete_runs(view.table("runs"))
        until_ms = int(runs.end_ms.max()) if len(runs) else int(time.time() * 1000)
    since_ms = until_ms - days * DAY_MS
    f = pads.field
    window = (f("interval_start_ms") >= since_ms) & (f("interval_start_ms") < until_ms)
    silver = lakeread.open_table(view.root, view.path("flows_attributed"))
    if silver is not None and "dt" in silver.metadata().partition_columns:  # prune day partitions
        dt_type = pa.schema(silver.schema().to_arrow()).field("dt").type
        first_day = pd.Timestamp(since_ms, unit="ms", tz="UTC").strftime("%Y-%m-%d")
        window = window & (f("dt") >= pads.scalar(first_day).cast(dt_type))
    out_rows = (f("direction") == "outbound") & (f("remote_workload") == workload)
    in_rows = ((f("direction") == "inbound") & (f("local_workload_resolved") == workload)
               & (f("remote_attribution") != "heartbeat"))
    cols = ["direction", "local_workload_resolved", "remote_workload", "connections_opened",
            "bytes_sent", "bytes_received"]
    rows = view.table("flows_attributed", columns=cols, filters=window & (out_rows | in_rows))
    outbound = rows.direction == "outbound"
    calls = pd.DataFrame({
        "caller": np.where(outbound, rows.local_workload_resolved, rows.remote_workload),
        "connections": rows.connections_opened.astype("int64"),
        "bytes_to_callee": np.where(outbound, rows.bytes_sent, rows.bytes_received),
        "bytes_to_caller": np.where(outbound, rows.bytes_received, rows.bytes_sent),
    })
    calls["caller"] = calls["caller"].fillna("unattributed")
    res = calls.groupby("caller", as_index=False).sum()
    res["bytes_total"] = res.bytes_to_callee + res.bytes_to_caller
    res = res.sort_values("bytes_total", ascending=False, ignore_index=True)
    return res, time.perf_counter() - t0


# ---------------------------------------------------------------- graph data


def edge_totals(deps: pd.DataFrame) -> pd.DataFrame:
    """Dependency rows summed per (src, dst): connections and bytes."""
    d = deps.assign(bytes=deps["bytes_to_dst"] + deps["bytes_to_src"],
                    src_workload=deps["src_workload"].fillna("unattributed"),
                    dst_workload=deps["dst_workload"].fillna("unattributed"))
    return d.groupby(["src_workload", "dst_workload"], as_index=False)[["connections", "bytes"]].sum()


def neighbourhood(deps: pd.DataFrame, workload: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(upstreams: who calls ``workload``, downstreams: whom it calls), heaviest first."""
    e = edge_totals(deps)
    up = e[e.dst_workload == workload].sort_values("bytes", ascending=False)
    down = e[e.src_workload == workload].sort_values("bytes", ascending=False)
    return up, down


def segment_of(segments: pd.DataFrame | None) -> dict[str, str]:
    return dict(zip(segments.workload, segments.segment)) if segments is not None and len(segments) else {}


def graph_edges(deps: pd.DataFrame, *, segments: pd.DataFrame | None = None, max_nodes: int = 30,
                max_edges: int = 60) -> tuple[pd.DataFrame, dict[str, str], str]:
    """The edges the dependency graph draws, each node's segment, and the rule that chose them.

    Rule: the ``max_nodes`` workloads with the most bytes (in + out) are drawn by name; every
    other workload is merged into one node per segment, ``other (<segment>)``; then the
    ``max_edges`` heaviest edges by bytes are drawn.
    """
    e = edge_totals(deps)
    seg = segment_of(segments)
    weight = pd.concat([e.groupby("src_workload").bytes.sum(), e.groupby("dst_workload").bytes.sum()])
    weight = weight.groupby(level=0).sum().sort_values(ascending=False)
    kept = set(weight.index[:max_nodes])
    merged = len(weight) - len(kept)

    others: dict[str, str] = {}  # merged node -> its segment

    def node(w: str) -> str:
        if w in kept:
            return w
        s = seg.get(w, NO_SEGMENT)
        name = f"other ({s.strip('()')})"
        others[name] = s
        return name

    g = e.assign(src=e.src_workload.map(node), dst=e.dst_workload.map(node))
    g = g.groupby(["src", "dst"], as_index=False)[["connections", "bytes"]].sum()
    total_edges = len(g)
    g = g.sort_values("bytes", ascending=False, ignore_index=True).head(max_edges)
    node_seg = {n: others.get(n, seg.get(n, NO_SEGMENT)) for n in set(g.src) | set(g.dst)}
    rule = (f"{len(weight)} workloads: the {min(max_nodes, len(weight))} with the most bytes are drawn by name"
            + (f", the other {merged} merged into one node per segment" if merged else "")
            + f"; the {len(g)} heaviest of {total_edges} edges are drawn (width ~ bytes).")
    return g, node_seg, rule


def _segment_colours(names) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab20")
    ordered = sorted(n for n in set(names) if n != NO_SEGMENT)
    colours = {n: cmap(i % 20) for i, n in enumerate(ordered)}
    colours[NO_SEGMENT] = (0.75, 0.75, 0.75, 1.0)
    return colours


def _circle_positions(nodes: list[str], node_seg: dict[str, str]) -> dict[str, np.ndarray]:
    """Nodes on a circle, grouped by segment (a gap between segments)."""
    order = sorted(nodes, key=lambda n: (node_seg.get(n, NO_SEGMENT) == NO_SEGMENT, node_seg.get(n, ""), n))
    groups = [node_seg.get(n) for n in order]
    gaps = sum(1 for a, b in zip(groups, groups[1:]) if a != b)
    slots = len(order) + gaps
    pos, k, prev = {}, 0, None
    for n, grp in zip(order, groups):
        if prev is not None and grp != prev:
            k += 1
        angle = 2 * math.pi * k / max(slots, 1)
        pos[n] = np.array([math.cos(angle), math.sin(angle)])
        k, prev = k + 1, grp
    return pos


def plot_dependency_graph(deps: pd.DataFrame, ax, *, segments: pd.DataFrame | None = None,
                          focus: str | None = None, max_nodes: int = 30, max_edges: int = 60) -> str:
    """Workloads on a circle grouped and coloured by segment, labels outward along the radius (they
    cannot overlap), the heaviest edges as arrows (width ~ bytes). Returns the rule that chose what
    is drawn (see :func:`graph_edges`); ``focus`` draws only one workload's edges, it in the middle."""
    if focus is not None:
        deps = deps[(deps.src_workload == focus) | (deps.dst_workload == focus)]
    g_edges, node_seg, rule = graph_edges(deps, segments=segments, max_nodes=max_nodes, max_edges=max_edges)
    ax.axis("off")
    if g_edges.empty:
        ax.text(0.5, 0.5, "no dependencies", ha="center", transform=ax.transAxes)
        return "no dependencies"
    g = nx.DiGraph()
    for r in g_edges.itertuples():
        g.add_edge(r.src, r.dst, bytes=r.bytes)
    ring = [n for n in g.nodes if n != focus]
    pos = _circle_positions(ring, node_seg)
    if focus is not None and focus in g:
        pos[focus] = np.array([0.0, 0.0])
    colours = _segment_colours(node_seg.values())
    top = max(d["bytes"] for _, _, d in g.edges(data=True)) or 1
    edges = list(g.edges(data=True))
    nx.draw_networkx_edges(g, pos, ax=ax, edgelist=[(a, b) for a, b, _ in edges],
                           width=[0.4 + 5 * d["bytes"] / top for _, _, d in edges], alpha=0.45,
                           edge_color=[colours[node_seg.get(a, NO_SEGMENT)] for a, _, _ in edges],
                           arrowsize=8, connectionstyle="arc3,rad=0.08", node_size=160)
    nodes = list(g.nodes)
    nx.draw_networkx_nodes(g, pos, ax=ax, nodelist=nodes, node_size=[500 if n == focus else 160 for n in nodes],
                           node_color=[colours[node_seg.get(n, NO_SEGMENT)] for n in nodes],
                           edgecolors="#333", linewidths=0.5)
    for n in ring:
        x, y = pos[n]
        angle = math.degrees(math.atan2(y, x))
        right = -90 <= angle <= 90
        ax.text(1.07 * x, 1.07 * y, n, fontsize=7, rotation=angle if right else angle - 180,
                rotation_mode="anchor", ha="left" if right else "right", va="center", gid="node-label")
    if focus is not None and focus in g:
        ax.text(0, -0.1, focus, fontsize=9, ha="center", va="top", weight="bold", gid="node-label")
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.6, 1.6)
    ax.set_aspect("equal")
    seg_names = sorted({node_seg.get(n, NO_SEGMENT) for n in nodes})
    handles = [matplotlib.patches.Patch(color=colours[s], label=s) for s in seg_names]
    ax.legend(handles=handles, title="segment", fontsize=7, title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(f"who calls {focus} and whom it calls" if focus else "workload dependencies (colour = segment)")
    return rule


def segment_matrix(deps: pd.DataFrame, segments: pd.DataFrame | None) -> pd.DataFrame:
    """Bytes (both directions) from each client segment (rows) to each server segment (columns)."""
    seg = segment_of(segments)
    e = edge_totals(deps)
    e = e.assign(src_segment=e.src_workload.map(lambda w: seg.get(w, NO_SEGMENT)),
                 dst_segment=e.dst_workload.map(lambda w: seg.get(w, NO_SEGMENT)))
    m = e.pivot_table(index="src_segment", columns="dst_segment", values="bytes", aggfunc="sum", fill_value=0)
    names = sorted(set(m.index) | set(m.columns), key=lambda s: (s == NO_SEGMENT, s))
    return m.reindex(index=names, columns=names, fill_value=0)


def plot_segment_matrix(matrix: pd.DataFrame, ax) -> None:
    """Segment x segment traffic as a heat map (log colour scale), each cell labelled in bytes."""
    if matrix.empty:
        ax.text(0.5, 0.5, "no segments", ha="center", transform=ax.transAxes)
        ax.axis("off")
        return
    values = matrix.to_numpy(dtype=float)
    shown = np.log10(np.where(values > 0, values, np.nan))
    im = ax.imshow(shown, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix.index)), matrix.index, fontsize=8)
    ax.set_xlabel("server segment")
    ax.set_ylabel("client segment")
    hi = np.nanmax(shown) if np.isfinite(shown).any() else 0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if values[i, j] > 0:
                dark = shown[i, j] > hi - 1.0
                ax.text(j, i, human_bytes(values[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if dark else "#222")
    ax.figure.colorbar(im, ax=ax, label="log10 bytes", shrink=0.8)
    ax.set_title("traffic between segments (bytes, both directions)")


def plot_top_talkers(deps: pd.DataFrame, ax, *, n: int = 15) -> None:
    """The ``n`` heaviest app edges by bytes (both directions)."""
    e = edge_totals(deps).sort_values("bytes", ascending=False).head(n).iloc[::-1]
    ax.barh(e.src_workload + " → " + e.dst_workload, e.bytes / 1e6)
    ax.set_xlabel("MB (both directions)")
    ax.set_title(f"top {len(e)} workload pairs by bytes")
    ax.tick_params(axis="y", labelsize=7)


def plot_attribution(shares: pd.DataFrame, ax) -> None:
    """Share of records per attribution method (heartbeat, event, cidr, unattributed)."""
    order = ["heartbeat", "event", "cidr", "unattributed"]
    s = shares.set_index("remote_attribution")
    s = s.reindex([o for o in order if o in s.index] + [o for o in s.index if o not in order])
    colours = {"heartbeat": "C2", "event": "C0", "cidr": "C7", "unattributed": "C3"}
    ax.barh(s.index[::-1], s["share"][::-1] * 100, color=[colours.get(i, "C4") for i in s.index[::-1]])
    for y, (name, r) in enumerate(s.iloc[::-1].iterrows()):
        ax.text(r["share"] * 100, y, f" {r['share']:.2%} ({int(r['records']):,})", va="center", fontsize=8)
    ax.set_xlim(0, 118)
    ax.set_xlabel("% of records")
    ax.set_title("how each record's remote address was attributed")


def _utc_axis(ax) -> None:
    loc = mdates.AutoDateLocator(tz="UTC")
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc, tz="UTC"))
    ax.set_xlabel("UTC")


def _times(ms: pd.Series) -> pd.Series:
    return pd.to_datetime(ms, unit="ms", utc=True)


def plot_forecast(history: pd.DataFrame, forecast: pd.DataFrame, summary: pd.DataFrame, ax, *,
                  link_kind: str, link: str, metric: str = "bytes_total") -> None:
    """One link's hourly history, its forecast and prediction band, and the backtest MAPE in the title."""
    h = history[(history.link_kind == link_kind) & (history.link == link)].sort_values("hour_start_ms")
    f = forecast[(forecast.link_kind == link_kind) & (forecast.link == link) & (forecast.metric == metric)]
    f = f.sort_values("hour_start_ms")
    s = summary[(summary.link_kind == link_kind) & (summary.link == link) & (summary.metric == metric)]
    ax.plot(_times(h.hour_start_ms), h[metric], lw=0.9, color="C0", label="history")
    title = f"{link_kind} {link}: {metric}"
    width = None
    if len(s):
        r = s.iloc[0]
        width = r.get("interval_width")
        if r.status == "ok":
            title += f" — backtest MAPE {r.backtest_mape:.1%} over {int(r.backtest_hours)} h"
            naive = r.get("backtest_naive_mape")  # lakes written before the column have none
            if naive is not None and pd.notna(naive):
                title += f" (seasonal naive {naive:.1%})"
        else:
            title += f" — {r.status}"
    if len(f):
        t = _times(f.hour_start_ms)
        band = f"{width:.0%} interval" if width is not None and pd.notna(width) else "interval"
        ax.plot(t, f.yhat, lw=0.9, color="C1", label="forecast")
        ax.fill_between(t, f.yhat_lower, f.yhat_upper, color="C1", alpha=0.25, label=band)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(metric)
    per_s = "/s" if metric.endswith("_per_s") else ""
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: human_bytes(v) + per_s))
    ax.legend(fontsize=7, loc="upper left")
    _utc_axis(ax)


def busiest_links(history: pd.DataFrame, summary: pd.DataFrame, *, n: int = 6) -> pd.DataFrame:
    """The links to draw (``link_kind``, ``link``): the ``n`` with a forecast that carried the most bytes,
    or, when no series has a forecast yet, the ``n`` busiest AZ pairs."""
    volume = history.groupby(["link_kind", "link"], as_index=False).bytes_total.sum()
    ok = summary[(summary.status == "ok") & (summary.metric == "bytes_total")][["link_kind", "link"]]
    pool = volume.merge(ok.drop_duplicates(), on=["link_kind", "link"]) if len(ok) else \
        volume[volume.link_kind == "az_pair"]
    return pool.sort_values("bytes_total", ascending=False, ignore_index=True).head(n)[["link_kind", "link"]]


def plot_link_history(history: pd.DataFrame, links: pd.DataFrame, ax, *, metric: str = "bytes_total") -> None:
    """Several links' hourly history on one chart (for a lake too short to forecast)."""
    for r in links.itertuples():
        h = history[(history.link_kind == r.link_kind) & (history.link == r.link)].sort_values("hour_start_ms")
        ax.plot(_times(h.hour_start_ms), h[metric], marker="o", lw=1, label=f"{r.link_kind} {r.link}")
    ax.set_ylim(bottom=0)
    ax.set_ylabel(metric)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: human_bytes(v)))
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(f"hourly {metric} of the busiest links (no forecast yet)", fontsize=9)
    _utc_axis(ax)


def plot_cost_per_day(cost: pd.DataFrame, ax) -> None:
    """Cross-zone cost per UTC day (USD), stacked by scope."""
    if cost.empty or cost.cost_usd.sum() == 0:
        ax.text(0.5, 0.5, "no priced cross-zone traffic", ha="center", transform=ax.transAxes)
        ax.axis("off")
        return
    p = cost.pivot_table(index="day", columns="scope", values="cost_usd", aggfunc="sum", fill_value=0.0)
    p = p.loc[:, p.sum() > 0].sort_index()
    p.index = [str(d)[:10] for d in p.index]
    p.plot.bar(stacked=True, ax=ax, rot=0 if len(p) <= 10 else 45)
    ax.set_xlabel("day (UTC)")
    ax.set_ylabel("USD")
    ax.set_title("cross-zone cost per day")
    ax.legend(fontsize=7, title="scope")


def plot_crosszone_cost(cost: pd.DataFrame, ax, *, n: int = 15) -> None:
    """Cross-zone cost per workload pair (USD), stacked by scope."""
    c = cost[cost.cost_usd > 0].assign(pair=lambda d: d.src_workload.fillna("?") + " → " + d.dst_workload.fillna("?"))
    if c.empty:
        ax.text(0.5, 0.5, "no priced cross-zone traffic", ha="center", transform=ax.transAxes)
        ax.axis("off")
        return
    p = c.pivot_table(index="pair", columns="scope", values="cost_usd", aggfunc="sum", fill_value=0.0)
    p = p.loc[p.sum(axis=1).sort_values(ascending=False).index[:n]].iloc[::-1]
    p.plot.barh(stacked=True, ax=ax)
    ax.set_xlabel("USD")
    ax.set_ylabel("")
    ax.set_title(f"cross-zone cost, top {len(p)} workload pairs")
    ax.tick_params(axis="y", labelsize=7)


def plot_segment_graph(matrix: pd.DataFrame, segments: pd.DataFrame | None, ax) -> None:
    """Segments as nodes on a circle (size ~ members, colour = segment, labels outward along the
    radius), edges between them with width ~ bytes both ways."""
    names = [s for s in matrix.index if s != NO_SEGMENT]
    ax.axis("off")
    if not names:
        ax.text(0.5, 0.5, "no segments", ha="center", transform=ax.transAxes)
        return
    members = segments.groupby("segment").workload.count() if segments is not None and len(segments) else {}
    colours = _segment_colours(names)
    pos = _circle_positions(names, {n: n for n in names})
    pair = {}
    for a in names:
        for b in names:
            if a < b:
                pair[(a, b)] = float(matrix.loc[a, b] + matrix.loc[b, a])
    top = max(pair.values(), default=0) or 1
    for (a, b), v in pair.items():
        if v > 0:
            (x0, y0), (x1, y1) = pos[a], pos[b]
            ax.plot([x0, x1], [y0, y1], color="#555", alpha=0.5, lw=0.5 + 8 * v / top, zorder=1)
    sizes = [200 + 60 * int(members.get(n, 0)) for n in names]
    ax.scatter([pos[n][0] for n in names], [pos[n][1] for n in names], s=sizes,
               c=[colours[n] for n in names], edgecolors="#333", linewidths=0.5, zorder=2)
    for n in names:  # few nodes: horizontal labels, pushed outward on their side
        x, y = pos[n]
        inside = human_bytes(matrix.loc[n, n])
        ax.text(1.18 * x, 1.18 * y, f"{n}\n{int(members.get(n, 0))} workloads, {inside} inside", fontsize=8,
                ha="center" if abs(x) < 0.35 else ("left" if x > 0 else "right"),
                va="center" if abs(y) < 0.35 else ("bottom" if y > 0 else "top"), gid="node-label")
    ax.set_xlim(-2.4, 2.4)
    ax.set_ylim(-1.5, 1.5)
    ax.set_aspect("equal")
    ax.set_title("segments (size = workloads, line width = bytes between them)")
