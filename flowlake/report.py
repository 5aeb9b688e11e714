"""``flowlake report --lake ... --out report.html``: one static HTML page with embedded pictures.

Dependency graph, top talkers, forecast charts (or the forecast's
insufficient-history state), cross-zone cost, segments and their quality,
policy breaches and declared paths without traffic. Pictures are PNG in
data: URIs, so the file opens in a browser with no server.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path

import click
import pandas as pd

from flowlake import notebook as nb


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    nb.plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


def _table(df: pd.DataFrame, *, n: int = 20) -> str:
    if df.empty:
        return "<p><i>none</i></p>"
    return df.head(n).to_html(index=False, float_format=lambda v: f"{v:,.4g}", border=0, classes="t")


def _ms(ms) -> str:
    return "-" if pd.isna(ms) else datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def build(view: nb.LakeView, *, max_forecasts: int = 6) -> str:
    """The report's HTML for one lake."""
    deps = view.table("app_dependencies")
    segments = view.table("segments") if view.has("segments") else pd.DataFrame(columns=["workload", "segment"])
    parts: list[str] = []
    lo, hi = deps.hour_start_ms.min(), deps.hour_start_ms.max()
    parts.append(f"<h1>flowlake report</h1><p>lake <code>{html.escape(view.root)}</code>, hours "
                 f"{_ms(lo)} .. {_ms(hi + 3_600_000 if pd.notna(hi) else hi)} UTC, "
                 f"{len(deps):,} dependency rows</p>")

    fig, ax = nb.plt.subplots(figsize=(11, 8))
    nb.plot_dependency_graph(deps, ax, segments=segments)
    parts.append("<h2>Dependency graph</h2>" + _png(fig))
    fig, ax = nb.plt.subplots(figsize=(9, 5))
    nb.plot_top_talkers(deps, ax)
    parts.append("<h2>Top talkers</h2>" + _png(fig))

    parts.append("<h2>Segments</h2>")
    if view.has("segment_quality"):
        parts.append(_table(view.table("segment_quality")))
        seg = segments.groupby("segment")["workload"].apply(lambda s: ", ".join(sorted(s))).reset_index()
        parts.append(_table(seg, n=50))
    if view.has("allow_rules"):
        rules = view.table("allow_rules").sort_values(["scope", "src", "dst_workload"])
        parts.append(f"<h3>Suggested allow rules ({len(rules)})</h3>" + _table(rules, n=30))
    if view.has("policy_breaches"):
        b = view.table("policy_breaches").groupby(["policy", "src_workload", "dst_workload", "dst_port"],
                                                  dropna=False, as_index=False)["connections"].sum()
        parts.append(f"<h3>Declared-policy breaches ({len(b)})</h3>" + _table(b))
    if view.has("path_validation"):
        parts.append("<h3>Declared paths</h3>" + _table(view.table("path_validation")))

    parts.append("<h2>Capacity forecast</h2>")
    if view.has("capacity_forecast_summary"):
        summary = view.table("capacity_forecast_summary")
        fc = view.table("capacity_forecast")
        hist = view.table("link_hourly")
        parts.append(_table(summary.sort_values(["link_kind", "link", "metric"]), n=60))
        ok = summary[(summary.status == "ok") & (summary.metric == "bytes_total")]
        shown = ok if len(ok) else summary[summary.metric == "bytes_total"]
        for r in shown.head(max_forecasts).itertuples():
            fig, ax = nb.plt.subplots(figsize=(10, 3.2))
            nb.plot_forecast(hist, fc, summary, ax, link_kind=r.link_kind, link=r.link)
            parts.append(_png(fig))
    else:
        parts.append("<p><i>no forecast table</i></p>")

    parts.append("<h2>Cross-zone traffic and cost</h2>")
    if view.has("crosszone_cost"):
        cost = view.table("crosszone_cost")
        fig, ax = nb.plt.subplots(figsize=(9, 5))
        nb.plot_crosszone_cost(cost, ax)
        parts.append(_png(fig))
        by_scope = cost.groupby("scope", as_index=False)[["bytes_total", "cost_usd"]].sum()
        parts.append(_table(by_scope))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto} img{max-width:100%} "
             "table.t{border-collapse:collapse;font-size:12px} table.t td,table.t th{padding:2px 6px;"
             "border-bottom:1px solid #ddd}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>flowlake report</title>" \
           f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"


@click.command()
@click.option("--lake", default=None, help="Lake root (local folder or s3://); default: `lake` in conf/insight.yaml.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="insight config (default conf/insight.yaml).")
def report(lake: str | None, out_path: str, config_path: str | None) -> None:
    """Write one static HTML page with the insight pictures of a lake."""
    from flowlake.insight_config import load_insight_config

    view = nb.open_lake(lake, config=load_insight_config(config_path))
    Path(out_path).write_text(build(view), encoding="utf-8")
    click.echo(f"wrote {out_path}")
