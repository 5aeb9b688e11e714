"""``flowlake report --lake ... --out report.html``: one static HTML page people look at.

It opens with a summary (window, records, attribution shares, quality gates,
quarantine, capture completeness where the lake has it), then one section per
question, each led by a chart with the table behind it trimmed to its top rows:
dependencies, segments, declared policy, capacity forecasts, cross-zone cost.
Times are ISO UTC, missing values "–". Pictures are PNG in data: URIs, so the
file opens in a browser with no server. Reads the lake with delta-rs: no JVM.
"""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd

from flowlake import lakeread
from flowlake import notebook as nb
from flowlake.insight_config import load_insight_config

DASH = "–"


# ---------------------------------------------------------------- formatting


def _png(fig, *, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    nb.plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>'


def _cell(v, *, kind: str) -> str:
    if isinstance(v, np.ndarray):  # array columns (e.g. missing_seq_ranges) come back from Arrow as arrays
        v = v.tolist()
    if v is None or (not isinstance(v, (list, tuple, dict)) and pd.isna(v)):
        return DASH
    if kind == "time":
        return lakeread.utc(v)
    if kind == "id":
        return str(int(v)) if isinstance(v, (float, np.floating, int, np.integer)) else str(v)
    if kind == "bytes":
        return nb.human_bytes(v)
    if kind == "pct":
        return f"{float(v):.1%}"
    if kind == "usd":
        return usd(v)
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, pd.Timestamp):
        return v.tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC") if v.tzinfo else v.strftime("%Y-%m-%d %H:%M")
    return str(v)


def usd(v) -> str:
    """Dollars: cents from $1 up, three significant digits below ($0.00383)."""
    v = float(v)
    return f"${v:,.2f}" if abs(v) >= 1 or v == 0 else f"${v:.3g}"


def _kind(name: str, s: pd.Series) -> str:
    if nb.is_time_ms(name, s):
        return "time"
    if name.endswith("port") or name.endswith("_id"):
        return "id"
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        if name.startswith("bytes") or name.endswith("bytes") or name == "bytes":
            return "bytes"
        if name.endswith("_usd") or name == "cost_usd":
            return "usd"
        if name.endswith(("_share", "_mape", "_coverage", "share")):
            return "pct"
    return "plain"


def table_html(df: pd.DataFrame, *, n: int = 15, order: str = "", source: str = "") -> str:
    """The top ``n`` rows as an HTML table with times in UTC, bytes and shares in human form, no NaN;
    a caption says how many rows there are when it is trimmed."""
    if df.empty:
        return "<p class='note'>none</p>"
    kinds = {c: _kind(c, df[c]) for c in df.columns}
    numeric = {c for c in df.columns if kinds[c] != "plain" or (pd.api.types.is_numeric_dtype(df[c])
                                                                 and not pd.api.types.is_bool_dtype(df[c]))}
    head = "".join(f"<th>{html.escape(str(c).removesuffix('_ms') if kinds[c] == 'time' else str(c))}</th>"
                   for c in df.columns)
    body = []
    for row in df.head(n).itertuples(index=False):
        texts = [(c, _cell(v, kind=kinds[c])) for c, v in zip(df.columns, row)]
        cells = "".join(
            f"<td{' class=num' if c in numeric else (' class=wrap' if len(t) > 60 else '')}>{html.escape(t)}</td>"
            for c, t in texts)
        body.append(f"<tr>{cells}</tr>")
    caption = ""
    if len(df) > n:
        caption = (f"<caption>top {n} of {len(df):,} rows{' by ' + order if order else ''}"
                   f"{'; all rows: <code>' + html.escape(source) + '</code>' if source else ''}</caption>")
    return (f"<div class='scroll'><table class='t'>{caption}<thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _section(anchor: str, title: str, *parts: str) -> str:
    return f"<section id='{anchor}'><h2>{html.escape(title)}</h2>{''.join(parts)}</section>"


def _p(text: str, cls: str = "note") -> str:
    return f"<p class='{cls}'>{text}</p>"


# ---------------------------------------------------------------- sections


def summary_section(view: nb.LakeView, *, now_ms: int) -> str:
    """Window, records, attribution, quality gates, quarantine, completeness."""
    facts: list[tuple[str, str]] = []
    runs = lakeread.complete_runs(view.table("runs")) if view.has("runs") else pd.DataFrame()
    if len(runs):  # complete runs (a run id of the DAG has a row a stage; its gold row completes the window)
        newest, n = int(runs.end_ms.max()), runs.run_id.nunique()
        facts.append(("window", f"{lakeread.utc(runs.start_ms.min())} → {lakeread.utc(newest)} "
                               f"({n} run{'s' if n != 1 else ''})"))
        last = runs.sort_values("finished_at_ms").iloc[-1]
        facts.append(("last run", f"<code>{html.escape(str(last.run_id))}</code> finished "
                                  f"{lakeread.utc(last.finished_at_ms)}"))
        facts.append(("freshness", f"newest data ends {_age(now_ms - newest)} ago"))
    shares = nb.attribution_shares(view.root)
    total = int(shares.records.sum()) if len(shares) else 0
    facts.append(("records", f"{total:,} in silver/flows_attributed"))
    un = shares[shares.remote_attribution == "unattributed"]
    un_n = int(un.records.sum()) if len(un) else 0
    facts.append(("unattributed", f"{un_n:,} ({un_n / total:.2%})" if total else "0"))
    facts.append(("attribution", ", ".join(f"{r.remote_attribution} {r.share:.2%}" for r in shares.itertuples())
                  or DASH))
    quality = lakeread.quality_reports(view.root)
    latest_run = quality[0]["run_id"] if quality else None
    latest = [q for q in reversed(quality) if q["run_id"] == latest_run]  # in the order they ran
    if latest:
        failed = sum(q["failed"] for q in latest)
        warned = sum(q["warnings"] for q in latest)
        passed = sum(q["passed"] for q in latest)
        state = "<b class='bad'>FAILED</b>" if failed else "<b class='ok'>passed</b>"
        facts.append(("quality gates", f"{state}: {passed} checks passed, {failed} blocking failures, "
                                       f"{warned} warnings in run <code>{html.escape(str(latest_run))}</code>"))
    else:
        facts.append(("quality gates", "no reports under _quality/"))
    if view.has("quarantine"):
        q = view.table("quarantine", columns=["source_file"])
        facts.append(("quarantined files", f"{len(q):,} (quarantine/files)"))
    parts = []
    if len(shares):
        fig, ax = nb.plt.subplots(figsize=(9, 2.2))
        nb.plot_attribution(shares, ax)
        parts.append(_png(fig, alt="attribution shares"))
    dl = "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in facts)
    parts.append(f"<dl class='facts'>{dl}</dl>")
    if latest:
        qt = pd.DataFrame([{k: q[k] for k in ("stage", "passed", "failed", "warnings")}
                           | {"failures": ", ".join(q["failures"]) or DASH} for q in latest])
        parts.append("<h3>Quality gates of the latest run</h3>" + table_html(qt, n=20))
    if view.has("capture_completeness"):
        parts.append(completeness_html(view.table("capture_completeness")))
    return _section("summary", "Summary", *parts)


COMPLETENESS_COLUMNS = ["instance_id", "hour_start_ms", "files", "missing_files", "missing_seq_ranges", "restarts",
                        "late_files", "files_without_metadata", "drops_lost", "records"]


def completeness_html(comp: pd.DataFrame) -> str:
    """silver/capture_completeness: instances with missing files or lost records first."""
    if {"files", "missing_files", "drops_lost"} <= set(comp.columns) and len(comp):  # the table ingest writes
        comp = comp[[c for c in COMPLETENESS_COLUMNS if c in comp.columns]]
        comp = comp.sort_values(["missing_files", "drops_lost", "restarts"], ascending=False)
        text = _p(f"capture completeness: {int(comp['files'].sum()):,} file(s) from {comp['instance_id'].nunique():,} "
                  f"instance(s); {int(comp['missing_files'].sum()):,} missing by sequence number, "
                  f"{int(comp['drops_lost'].sum()):,} record(s) lost by the sidecars")
        return "<h3>Capture completeness</h3>" + text + table_html(
            comp, n=10, order="most missing files, lost records, restarts", source="silver/capture_completeness")
    share = next((c for c in comp.columns if "complete" in c and pd.api.types.is_float_dtype(comp[c])), None)
    text = ""
    if share is not None and len(comp):
        comp = comp.sort_values(share)
        text = _p(f"capture completeness: mean {comp[share].mean():.2%}, lowest {comp[share].min():.2%} "
                  f"over {len(comp):,} rows")
    return "<h3>Capture completeness</h3>" + text + table_html(
        comp, n=10, order=f"lowest {share}" if share else "", source="silver/capture_completeness")


def dependencies_section(view: nb.LakeView, deps: pd.DataFrame, segments: pd.DataFrame, *,
                         max_nodes: int, max_edges: int, top_rows: int) -> str:
    fig, ax = nb.plt.subplots(figsize=(12, 9))
    rule = nb.plot_dependency_graph(deps, ax, segments=segments, max_nodes=max_nodes, max_edges=max_edges)
    parts = [_png(fig, alt="dependency graph"), _p(f"What the graph shows: {html.escape(rule)}")]
    fig, ax = nb.plt.subplots(figsize=(10, 4.5))
    nb.plot_top_talkers(deps, ax)
    parts.append(_png(fig, alt="top talkers"))
    edges = nb.edge_totals(deps).sort_values("bytes", ascending=False, ignore_index=True)
    parts.append(table_html(edges, n=top_rows, order="bytes", source="gold/app_dependencies"))
    return _section("dependencies", "Dependencies", *parts)


def segments_section(view: nb.LakeView, deps: pd.DataFrame, segments: pd.DataFrame, *, top_rows: int) -> str:
    if segments.empty:
        return _section("segments", "Segments", _p("no gold/segments table yet"))
    matrix = nb.segment_matrix(deps, segments)
    fig, ax = nb.plt.subplots(figsize=(12, 7))
    nb.plot_segment_graph(matrix, segments, ax)
    parts = [_png(fig, alt="segment graph")]
    k = len(matrix)
    fig, ax = nb.plt.subplots(figsize=(min(4 + 0.9 * k, 13), min(3 + 0.7 * k, 11)))
    nb.plot_segment_matrix(matrix, ax)
    parts.append(_png(fig, alt="segment matrix"))
    parts.append(_p(f"{NO_SEGMENT_NOTE}"))
    members = (segments.groupby("segment").workload.agg(lambda s: ", ".join(sorted(s))).reset_index()
               .rename(columns={"workload": "workloads"}))
    members.insert(1, "size", segments.groupby("segment").workload.count().values)
    parts.append(table_html(members.sort_values("size", ascending=False), n=top_rows, order="size",
                            source="gold/segments"))
    if view.has("segment_quality"):
        parts.append("<h3>Quality of the split</h3>" + table_html(view.table("segment_quality")))
    return _section("segments", "Segments", *parts)


NO_SEGMENT_NOTE = (f"Workloads outside every segment (external addresses, the NAT gateway and other "
                   f"excluded classes) are counted as {html.escape(nb.NO_SEGMENT)}.")


def policy_section(view: nb.LakeView, *, top_rows: int) -> str:
    parts = []
    if view.has("policy_breaches"):
        b = view.table("policy_breaches").groupby(["policy", "src_workload", "dst_workload", "dst_port"],
                                                  dropna=False, as_index=False)["connections"].sum()
        b = b.sort_values("connections", ascending=False, ignore_index=True)
        fig, ax = nb.plt.subplots(figsize=(9, 0.6 + 0.35 * max(1, b.policy.nunique())))
        per = b.groupby("policy").connections.sum().sort_values()
        if len(per):
            ax.barh(per.index, per.values, color="C3")
            ax.set_xlabel("connections")
            ax.set_title("connections that broke a declared policy")
        else:
            ax.text(0.5, 0.5, "no declared-policy breaches", ha="center", transform=ax.transAxes)
            ax.axis("off")
        parts.append(_png(fig, alt="policy breaches"))
        parts.append(f"<h3>Breaches ({len(b):,})</h3>"
                     + table_html(b, n=top_rows, order="connections", source="gold/policy_breaches"))
    if view.has("path_validation"):
        parts.append("<h3>Declared paths</h3>" + table_html(view.table("path_validation"), n=top_rows))
    if view.has("allow_rules"):
        rules = view.table("allow_rules").sort_values("connections", ascending=False, ignore_index=True)
        parts.append(f"<h3>Suggested allow rules ({len(rules):,}, {int((rules.scope == 'segment').sum())} "
                     f"segment-wide)</h3>"
                     + table_html(rules, n=top_rows, order="connections", source="gold/allow_rules"))
    return _section("policy", "Declared policy and allow rules", *(parts or [_p("no policy tables yet")]))


def capacity_section(view: nb.LakeView, *, max_forecasts: int, top_rows: int) -> str:
    if not view.has("capacity_forecast_summary"):
        return _section("capacity", "Capacity", _p("no gold/capacity_forecast_summary table yet"))
    summary = view.table("capacity_forecast_summary")
    fc = view.table("capacity_forecast") if view.has("capacity_forecast") else pd.DataFrame(
        columns=["link_kind", "link", "metric", "hour_start_ms", "yhat", "yhat_lower", "yhat_upper"])
    hist = view.table("link_hourly")
    ok = summary[summary.status == "ok"]
    short = summary[summary.status != "ok"]
    parts = []
    picks = nb.busiest_links(hist, summary, n=max_forecasts)
    if len(ok):
        lead = (f"History, forecast and {_band(ok)} prediction band of the {len(picks)} busiest links "
                f"(of {ok[['link_kind', 'link']].drop_duplicates().shape[0]} forecast); the title gives each "
                f"forecast's backtest MAPE over its held-out hours, and the MAPE of a seasonal naive forecast "
                f"(the last week repeated) over the same hours: a forecast worth reading beats it.")
        if "fit_until_ms" in ok.columns and ok.fit_until_ms.notna().any():
            fitted = pd.Timestamp(int(ok.fit_until_ms.max()), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")
            lead += f" Fitted on the hours before {fitted} (refitted once a UTC day)."
    else:
        lead = (f"No forecast yet: history of the {len(picks)} busiest AZ pairs. Forecasts need "
                f"{view.config.forecast.min_history_hours + view.config.forecast.min_backtest_hours} hours of "
                f"history per link.")
    parts.append(_p(lead))
    if len(ok):
        for r in picks.itertuples():
            fig, ax = nb.plt.subplots(figsize=(12, 3.2))
            nb.plot_forecast(hist, fc, summary, ax, link_kind=r.link_kind, link=r.link)
            parts.append(_png(fig, alt=f"forecast {r.link_kind} {r.link}"))
    else:
        fig, ax = nb.plt.subplots(figsize=(12, 3.5))
        nb.plot_link_history(hist, picks, ax)
        parts.append(_png(fig, alt="link history"))
    if len(short):
        hours = int(short.history_hours.max()) if short.history_hours.notna().any() else 0
        reasons = ", ".join(f"{n} {s}" for s, n in short.status.value_counts().items())
        parts.append(_p(f"{len(short)} of {len(summary)} series have no forecast ({reasons}; the longest holds "
                        f"{hours} h of history)."))
    if len(ok):
        cols = ["link_kind", "link", "metric", "backtest_mape", "backtest_naive_mape", "backtest_interval_coverage",
                "backtest_hours",
                "history_from_ms", "history_to_ms"]
        t = ok[[c for c in cols if c in ok.columns]].sort_values("backtest_mape", ascending=False,
                                                                   ignore_index=True)
        parts.append(table_html(t, n=top_rows, order="backtest MAPE, worst first",
                                source="gold/capacity_forecast_summary"))
    return _section("capacity", "Capacity", *parts)


def _band(ok: pd.DataFrame) -> str:
    w = ok.interval_width.dropna() if "interval_width" in ok else pd.Series(dtype=float)
    return f"{w.iloc[0]:.0%}" if len(w) else "the"


def crosszone_section(view: nb.LakeView, *, top_rows: int) -> str:
    if not view.has("crosszone_cost"):
        return _section("crosszone", "Cross-zone cost", _p("no gold/crosszone_cost table yet"))
    cost = view.table("crosszone_cost")
    fig, ax = nb.plt.subplots(figsize=(10, 3.5))
    nb.plot_cost_per_day(cost, ax)
    parts = [_png(fig, alt="cross-zone cost per day")]
    fig, ax = nb.plt.subplots(figsize=(10, 5))
    nb.plot_crosszone_cost(cost, ax, n=top_rows)
    parts.append(_png(fig, alt="cross-zone cost per pair"))
    by_scope = cost.groupby("scope", as_index=False)[["bytes_total", "cost_usd"]].sum()
    parts.append(_p("Total per scope: " + "; ".join(
        f"{r.scope} {nb.human_bytes(r.bytes_total)}, {usd(r.cost_usd)}" for r in by_scope.itertuples())))
    pairs = (cost[cost.cost_usd > 0].groupby(["src_workload", "dst_workload", "scope"], dropna=False,
                                               as_index=False)[["bytes_total", "cost_usd"]].sum()
             .sort_values("cost_usd", ascending=False, ignore_index=True))
    parts.append(table_html(pairs, n=top_rows, order="cost", source="gold/crosszone_cost"))
    return _section("crosszone", "Cross-zone cost", *parts)


def _age(ms: int) -> str:
    s = max(0, ms) / 1000
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= size:
            return f"{s / size:,.1f} {unit}"
    return f"{s:.0f} seconds"


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1300px;margin:0 auto;padding:0 16px;color:#222}
h1{margin-bottom:0} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
img{max-width:100%;display:block;margin:8px 0}
nav a{margin-right:14px}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:4px 16px;font-size:15px}
dl.facts dt{font-weight:600;color:#555} dl.facts dd{margin:0}
p.note{color:#555;font-size:14px} b.bad{color:#b00} b.ok{color:#070}
div.scroll{overflow-x:auto;max-width:100%}
table.t{border-collapse:collapse;font-size:12px;margin:8px 0}
table.t caption{text-align:left;color:#555;padding:4px 0;caption-side:top;white-space:nowrap}
table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top;white-space:nowrap}
table.t td.wrap{white-space:normal}
table.t td.num{text-align:right;font-variant-numeric:tabular-nums}
table.t th{background:#f4f4f4}
"""


def build(view: nb.LakeView, *, max_forecasts: int = 6, top_rows: int = 15, max_nodes: int = 30,
          max_edges: int = 60, now_ms: int | None = None) -> str:
    """The report's HTML for one lake."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    deps = view.table("app_dependencies")
    segments = view.table("segments") if view.has("segments") else pd.DataFrame(columns=["workload", "segment"])
    sections = [
        summary_section(view, now_ms=now_ms),
        dependencies_section(view, deps, segments, max_nodes=max_nodes, max_edges=max_edges, top_rows=top_rows),
        segments_section(view, deps, segments, top_rows=top_rows),
        policy_section(view, top_rows=top_rows),
        capacity_section(view, max_forecasts=max_forecasts, top_rows=top_rows),
        crosszone_section(view, top_rows=top_rows),
    ]
    nav = "".join(f"<a href='#{a}'>{t}</a>" for a, t in (
        ("summary", "Summary"), ("dependencies", "Dependencies"), ("segments", "Segments"),
        ("policy", "Policy"), ("capacity", "Capacity"), ("crosszone", "Cross-zone cost")))
    head = (f"<h1>flowlake report</h1><p class='note'>lake <code>{html.escape(view.root)}</code>, "
            f"written {lakeread.utc(now_ms)}</p><nav>{nav}</nav>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>flowlake report</title>"
            f"<style>{STYLE}</style></head><body>{head}{''.join(sections)}</body></html>")


@click.command()
@click.option("--lake", default=None, help="Lake root (local folder or s3://); default: `lake` in conf/insight.yaml.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="insight config (default conf/insight.yaml).")
def report(lake: str | None, out_path: str, config_path: str | None) -> None:
    """Write one static HTML page with the insight pictures of a lake (no JVM: delta-rs reads the tables)."""
    try:
        view = nb.open_lake(lake, config=load_insight_config(config_path))
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from e
    Path(out_path).write_text(build(view), encoding="utf-8")
    click.echo(f"wrote {out_path}")
