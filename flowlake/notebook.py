"""The analysts' helper: open the lake named in conf/insight.yaml and draw the insight tables.

    from flowlake.notebook import open_lake
    lake = open_lake()                      # conf/insight.yaml `lake`, or FLOWLAKE_INSIGHT__LAKE
    deps = lake.table("app_dependencies")   # a pandas DataFrame (gold tables are small)

The plotting functions take those pandas frames and a matplotlib Axes; the notebooks
and ``flowlake report`` use the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import pandas as pd  # noqa: E402

from flowlake.insight_config import InsightConfig, load_insight_config  # noqa: E402
from flowlake.lake import TABLES, Lake  # noqa: E402

# short names analysts use: "segments" for gold/segments, "runs" for _meta/runs
SHORT_NAMES = {name.split("/", 1)[1]: name for name in TABLES if name.startswith(("gold/", "_meta/"))}


@dataclass
class LakeView:
    """Read access to one lake's gold tables as pandas frames."""

    root: str
    config: InsightConfig
    spark: object = field(repr=False)

    def path(self, name: str) -> str:
        if name not in SHORT_NAMES:
            raise KeyError(f"unknown table {name!r}: use one of {sorted(SHORT_NAMES)}")
        return Lake(self.root).path(SHORT_NAMES[name])

    def has(self, name: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, self.path(name))

    def table(self, name: str, *, where: str | None = None) -> pd.DataFrame:
        """A gold table as pandas (optionally filtered by a Spark SQL ``where``)."""
        if not self.has(name):
            raise FileNotFoundError(
                f"table {name} is missing under {self.root}: run `flowlake pipeline run --lake {self.root} ...` first")
        df = self.spark.read.format("delta").load(self.path(name))
        return (df.where(where) if where else df).toPandas()


def open_lake(root: str | None = None, *, config: InsightConfig | None = None, spark=None) -> LakeView:
    """Open a lake (default: ``lake`` of conf/insight.yaml) with a small local Spark session."""
    config = config or load_insight_config()
    root = root or config.lake
    if spark is None:
        from flowlake.spark import get_spark
        from flowlake.storage import spark_s3a_conf

        extra = spark_s3a_conf() if root.startswith("s3") else None
        spark = get_spark(app_name="flowlake-notebook", master="local[2]", shuffle_partitions=2, extra_conf=extra)
    view = LakeView(root=root, config=config, spark=spark)
    if not view.has("app_dependencies"):
        raise FileNotFoundError(f"no lake at {root} (no gold/app_dependencies): build one with "
                                "`flowlake simulate` and `flowlake pipeline run`, or set FLOWLAKE_INSIGHT__LAKE")
    return view


# ---------------------------------------------------------------- pictures

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


def plot_dependency_graph(deps: pd.DataFrame, ax, *, segments: pd.DataFrame | None = None,
                          focus: str | None = None, max_edges: int = 80) -> None:
    """Workloads as nodes (coloured by segment), the heaviest edges as arrows (width ~ bytes)."""
    e = edge_totals(deps)
    if focus is not None:
        e = e[(e.src_workload == focus) | (e.dst_workload == focus)]
    e = e.sort_values("bytes", ascending=False).head(max_edges)
    g = nx.DiGraph()
    for r in e.itertuples():
        g.add_edge(r.src_workload, r.dst_workload, bytes=r.bytes)
    if g.number_of_nodes() == 0:
        ax.text(0.5, 0.5, "no dependencies", ha="center")
        ax.axis("off")
        return
    seg = dict(zip(segments.workload, segments.segment)) if segments is not None and len(segments) else {}
    names = sorted(set(seg.values()))
    cmap = plt.get_cmap("tab20")
    colors = [cmap(names.index(seg[n]) % 20) if n in seg else (0.8, 0.8, 0.8, 1.0) for n in g.nodes]
    pos = nx.spring_layout(g, seed=7, k=1.2 / max(1, g.number_of_nodes()) ** 0.5)
    top = max(d["bytes"] for _, _, d in g.edges(data=True)) or 1
    widths = [0.5 + 4 * d["bytes"] / top for _, _, d in g.edges(data=True)]
    nx.draw_networkx_edges(g, pos, ax=ax, width=widths, alpha=0.5, arrowsize=8, edge_color="#555")
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colors, node_size=[900 if n == focus else 300 for n in g])
    nx.draw_networkx_labels(g, pos, ax=ax, font_size=7)
    ax.set_title(f"dependencies of {focus}" if focus else "workload dependencies (colour = segment)")
    ax.axis("off")


def plot_top_talkers(deps: pd.DataFrame, ax, *, n: int = 15) -> None:
    """The ``n`` heaviest app edges by bytes (both directions)."""
    e = edge_totals(deps).sort_values("bytes", ascending=False).head(n).iloc[::-1]
    ax.barh(e.src_workload + " -> " + e.dst_workload, e.bytes / 1e6)
    ax.set_xlabel("MB (both directions)")
    ax.set_title(f"top {n} talkers")
    ax.tick_params(axis="y", labelsize=7)


def plot_forecast(history: pd.DataFrame, forecast: pd.DataFrame, summary: pd.DataFrame, ax, *,
                  link_kind: str, link: str, metric: str = "bytes_total") -> None:
    """History of one link's series and its forecast with the prediction interval."""
    h = history[(history.link_kind == link_kind) & (history.link == link)].sort_values("hour_start_ms")
    f = forecast[(forecast.link_kind == link_kind) & (forecast.link == link) & (forecast.metric == metric)]
    f = f.sort_values("hour_start_ms")
    s = summary[(summary.link_kind == link_kind) & (summary.link == link) & (summary.metric == metric)]
    ax.plot(pd.to_datetime(h.hour_start_ms, unit="ms"), h[metric], lw=0.8, label="history")
    title = f"{link_kind} {link}: {metric}"
    if len(f):
        t = pd.to_datetime(f.hour_start_ms, unit="ms")
        ax.plot(t, f.yhat, lw=0.8, color="C1", label="forecast")
        ax.fill_between(t, f.yhat_lower, f.yhat_upper, color="C1", alpha=0.25, label="interval")
    if len(s):
        r = s.iloc[0]
        title += (f"\nbacktest MAPE {r.backtest_mape:.1%} over {r.backtest_hours} h" if r.status == "ok"
                  else f"\n{r.status}: {r.message}")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", labelsize=7, rotation=30)


def plot_crosszone_cost(cost: pd.DataFrame, ax, *, n: int = 15) -> None:
    """Cross-zone cost per workload pair (USD), stacked by scope."""
    c = cost[cost.cost_usd > 0].assign(pair=lambda d: d.src_workload.fillna("?") + " -> " + d.dst_workload.fillna("?"))
    if c.empty:
        ax.text(0.5, 0.5, "no priced cross-zone traffic", ha="center")
        ax.axis("off")
        return
    p = c.pivot_table(index="pair", columns="scope", values="cost_usd", aggfunc="sum", fill_value=0.0)
    p = p.loc[p.sum(axis=1).sort_values(ascending=False).index[:n]].iloc[::-1]
    p.plot.barh(stacked=True, ax=ax)
    ax.set_xlabel("USD")
    ax.set_title(f"cross-zone cost, top {n} workload pairs")
    ax.tick_params(axis="y", labelsize=7)
