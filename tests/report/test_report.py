"""flowlake report on a delta-rs lake (no JVM): summary, charts first, trimmed tables, human times, no NaN."""

from __future__ import annotations

import itertools
import re
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from tests.report.lake import END, N_WORKLOADS, SEGMENTS, write

from flowlake import notebook as nb
from flowlake import report
from flowlake.insight_config import InsightConfig

IMG = re.compile(r"<img [^>]*>")
EPOCH_MS = re.compile(r"(?<![\w.])1\d{12}(?![\w])")  # 13-digit epoch ms (2001..2286)
MISSING = re.compile(r">\s*(NaN|nan|None|NaT|<NA>|null)\s*<")


@pytest.fixture(scope="module")
def view(lake):
    return nb.open_lake(str(lake), config=InsightConfig())


@pytest.fixture(scope="module")
def page(report_file) -> str:
    return report_file.read_text(encoding="utf-8")


def text_of(page: str) -> str:
    return IMG.sub("<img/>", page)


def section(page: str, anchor: str) -> str:
    m = re.search(rf"<section id='{anchor}'>(.*?)</section>", page, re.S)
    assert m, f"no section {anchor}"
    return m.group(1)


def test_no_epoch_ms_and_no_nan_cells(page):
    text = text_of(page)
    assert not EPOCH_MS.findall(text), EPOCH_MS.findall(text)[:5]
    assert not MISSING.findall(text)
    # segment_quality.kept_segment_share is NaN in the lake: shown as a dash
    assert "<td class=num>–</td>" in section(page, "segments")


def test_the_checks_would_catch_an_epoch_or_a_nan():
    # edge case: the table renderer itself, fed the raw values the old report dumped
    html = report.table_html(pd.DataFrame({"hour_start_ms": [1748822400000], "x": [float("nan")], "s": [None]}))
    assert "2025-06-02 00:00 UTC" in html and not EPOCH_MS.findall(html) and not MISSING.findall(html)
    assert EPOCH_MS.findall("<td>1748822400000</td>") and MISSING.findall("<td>NaN</td>")


def test_summary_opens_the_page(page):
    body = page.split("<body>", 1)[1]
    assert body.index("id='summary'") < body.index("id='dependencies'")
    s = section(page, "summary")
    assert s.index("<img") < s.index("<dl")  # the chart leads
    assert "2025-06-02 00:00 UTC → 2025-06-23 00:00 UTC (3 runs)" in s
    assert "6 in silver/flows_attributed" in s
    assert "unattributed</dt><dd>1 (16.67%)" in s
    assert "heartbeat 66.67%" in s and "event 16.67%" in s
    assert "FAILED" in s and "1 blocking failures, 1 warnings" in s and "silver.attributed_share" in s
    assert "1 (quarantine/files)" in s
    assert "Capture completeness" not in s  # the table does not exist: skipped quietly


def test_completeness_shown_when_the_table_exists(lake, tmp_path):
    import shutil

    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    write(copy, "silver/capture_completeness", pd.DataFrame({
        "instance_id": ["i-1", "i-2"], "hour_start_ms": [END, END], "completeness": [0.5, 1.0]}))
    s = report.summary_section(nb.open_lake(str(copy), config=InsightConfig()), now_ms=END)
    assert "Capture completeness" in s and "mean 75.00%, lowest 50.00%" in s


def test_every_section_leads_with_a_chart(page):
    for anchor in ("summary", "dependencies", "segments", "policy", "capacity", "crosszone"):
        s = section(page, anchor)
        first_table = s.find("<table")
        assert "<img" in s, anchor
        assert first_table == -1 or s.index("<img") < first_table, anchor


def test_tables_are_trimmed_and_say_so(page):
    deps = section(page, "dependencies")
    assert re.search(r"top 15 of [\d,]+ rows by bytes; all rows: <code>gold/app_dependencies</code>", deps)
    for t in re.findall(r"<table.*?</table>", page, re.S):
        assert t.count("<tr>") <= 1 + 20  # header + at most 20 rows


def test_capacity_forecast_charts_and_insufficient_history_in_one_line(page, view):
    cap = section(page, "capacity")
    assert cap.count("<img") == 2  # the two links with a forecast
    assert "90% prediction band" in cap
    assert "50 of 54 series have no forecast (50 insufficient_history" in cap
    assert "short-0" not in cap  # the NaN rows themselves are not listed
    assert "5.5%" in cap and "6.5%" in cap  # backtest MAPE


def test_forecast_chart_draws_history_forecast_band_and_mape(view):
    hist, fc, summary = view.table("link_hourly"), view.table("capacity_forecast"), view.table(
        "capacity_forecast_summary")
    fig, ax = nb.plt.subplots()
    nb.plot_forecast(hist, fc, summary, ax, link_kind="az_pair", link="us-east-1a->us-east-1b")
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["history", "forecast"]
    assert len(ax.get_lines()[0].get_xdata()) == 21 * 24 and len(ax.get_lines()[1].get_xdata()) == 168
    assert [c.get_label() for c in ax.collections] == ["90% interval"]
    assert "backtest MAPE 5.5% over 168 h" in ax.get_title()
    assert ax.get_xlabel() == "UTC"
    nb.plt.close(fig)


def test_capacity_without_forecasts_shows_history(lake, tmp_path):
    import shutil

    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    v = nb.open_lake(str(copy), config=InsightConfig())
    summary = v.table("capacity_forecast_summary")
    write(copy, "gold/capacity_forecast_summary", summary[summary.status != "ok"])
    cap = report.capacity_section(v, max_forecasts=6, top_rows=15)
    assert "No forecast yet: history of the 2 busiest AZ pairs" in cap and cap.count("<img") == 1


def test_crosszone_cost_per_day_and_top_pairs(page):
    cz = section(page, "crosszone")
    assert cz.count("<img") == 2
    assert "cross_az 1.4 TB, $27.90" in cz  # 3 days x sum(1..30) GB x 0.02 per GB
    assert re.search(r"top 15 of 30 rows by cost", cz)
    assert "$1.80" in cz  # the top pair: 3 days x 0.60


def test_dependency_graph_rule_stated_and_bounded(view):
    deps, segments = view.table("app_dependencies"), view.table("segments")
    edges, node_seg, rule = nb.graph_edges(deps, segments=segments, max_nodes=30, max_edges=60)
    assert len(edges) == 60
    named = {n for n in node_seg if not n.startswith("other (")}
    assert len(named) <= 30 and {n for n in node_seg if n.startswith("other (")} <= {
        f"other (seg-{k})" for k in range(SEGMENTS)} | {"other (no segment)"}
    assert rule.startswith(f"{N_WORKLOADS + 1} workloads: the 30 with the most bytes are drawn by name, the other "
                           f"{N_WORKLOADS + 1 - 30} merged into one node per segment; the 60 heaviest of")
    # the bytes drawn plus the bytes left out equal the lake's
    all_edges, _, _ = nb.graph_edges(deps, segments=segments, max_nodes=30, max_edges=10**6)
    assert all_edges.bytes.sum() == (deps.bytes_to_dst + deps.bytes_to_src).sum()


def _corners(t, renderer) -> np.ndarray:
    """A label's rotated rectangle in display coordinates (rotation_mode="anchor": about its anchor)."""
    angle = t.get_rotation()
    t.set_rotation(0)
    box = t.get_window_extent(renderer)
    t.set_rotation(angle)
    anchor = t.get_transform().transform(t.get_position())
    pts = np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]]) - anchor
    a = np.radians(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return pts @ rot.T + anchor


def _intersect(p: np.ndarray, q: np.ndarray) -> bool:
    """Separating-axis test for two convex quadrilaterals."""
    for poly in (p, q):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            a, b = p @ axis, q @ axis
            if a.max() <= b.min() or b.max() <= a.min():
                return False
    return True


def _overlaps(texts, renderer) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), _corners(t, renderer)) for t in texts]
    return [(a, b) for (a, pa), (b, pb) in itertools.combinations(boxes, 2) if _intersect(pa, pb)]


@pytest.mark.parametrize("max_nodes", [30, 60])
def test_dependency_graph_labels_do_not_overlap_at_120_workloads(view, max_nodes):
    fig, ax = nb.plt.subplots(figsize=(12, 9))
    nb.plot_dependency_graph(view.table("app_dependencies"), ax, segments=view.table("segments"),
                             max_nodes=max_nodes, max_edges=200)
    fig.canvas.draw()
    labels = [t for t in ax.texts if t.get_gid() == "node-label"]
    assert len(labels) >= max_nodes
    assert _overlaps(labels, fig.canvas.get_renderer()) == []
    nb.plt.close(fig)


def test_a_crowded_graph_would_fail_the_overlap_check(view):
    # edge case: the check itself: labels at one spot overlap
    fig, ax = nb.plt.subplots()
    texts = [ax.text(0.5, 0.5, f"svc-{i}") for i in range(3)]
    fig.canvas.draw()
    assert _overlaps(texts, fig.canvas.get_renderer())
    nb.plt.close(fig)


def test_segment_graph_labels_do_not_overlap_and_colours_are_segments(view):
    deps, segments = view.table("app_dependencies"), view.table("segments")
    matrix = nb.segment_matrix(deps, segments)
    fig, ax = nb.plt.subplots(figsize=(12, 7))
    nb.plot_segment_graph(matrix, segments, ax)
    fig.canvas.draw()
    labels = [t for t in ax.texts if t.get_gid() == "node-label"]
    assert len(labels) == SEGMENTS and _overlaps(labels, fig.canvas.get_renderer()) == []
    colours = {tuple(c) for c in ax.collections[0].get_facecolors()}
    assert len(colours) == SEGMENTS
    nb.plt.close(fig)


def test_segment_matrix_adds_up(view):
    deps, segments = view.table("app_dependencies"), view.table("segments")
    m = nb.segment_matrix(deps, segments)
    assert list(m.index) == list(m.columns) and m.index[-1] == nb.NO_SEGMENT
    assert m.to_numpy().sum() == (deps.bytes_to_dst + deps.bytes_to_src).sum()
    # svc-000 (seg-0) -> external:internet is the only traffic into "(no segment)"
    assert m.loc["seg-0", nb.NO_SEGMENT] == 123457 and m[nb.NO_SEGMENT].sum() == 123457


def test_report_cli_starts_no_jvm(report_file):
    # the page every test here reads was written by `flowlake report` in a new process that
    # asserted it never imported pyspark (conftest.report_file)
    assert report_file.read_text(encoding="utf-8").startswith("<!doctype html>")


def test_report_on_a_missing_lake_says_what_to_do(tmp_path):
    res = CliRunner().invoke(report.report, ["--lake", str(tmp_path / "nope"), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 1 and "no lake at" in res.output and "flowlake pipeline run" in res.output


def test_the_overlap_check_fails_on_a_graph_too_crowded_to_read(view):
    # edge case: every one of 121 names on a 4-inch figure: the radial labels must collide
    fig, ax = nb.plt.subplots(figsize=(4, 3))
    nb.plot_dependency_graph(view.table("app_dependencies"), ax, segments=view.table("segments"),
                             max_nodes=200, max_edges=500)
    fig.canvas.draw()
    labels = [t for t in ax.texts if t.get_gid() == "node-label"]
    assert len(labels) > 100 and _overlaps(labels, fig.canvas.get_renderer())
    nb.plt.close(fig)


def test_small_costs_are_not_rounded_to_zero():
    assert report.usd(0.00383) == "$0.00383" and report.usd(1234.5) == "$1,234.50" and report.usd(0) == "$0.00"


def test_ports_are_not_thousands_separated(page):
    policy = section(page, "policy")
    assert "<td class=num>7001</td>" in policy and "7,001" not in policy


def test_durations_in_ms_stay_numbers():
    # edge case: an *_ms column that is a duration (values far below 2000-01-01 in epoch ms) is not a time
    html = report.table_html(pd.DataFrame({"lag_ms": [1500], "hour_start_ms": [1748822400000]}))
    assert "<th>lag_ms</th>" in html and "<td class=num>1,500</td>" in html
    assert "<th>hour_start</th>" in html and "2025-06-02 00:00 UTC" in html


def test_completeness_as_ingest_writes_it_with_array_columns_renders(lake, tmp_path):
    """The real silver/capture_completeness has array columns (seqs, missing_seq_ranges): they render as text
    and the instance with a gap comes first."""
    import shutil

    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    write(copy, "silver/capture_completeness", pd.DataFrame({
        "instance_id": ["i-ok", "i-gap"], "hour_start_ms": [END, END], "files": [12, 11], "missing_files": [0, 1],
        "missing_seq_ranges": [[], ["4"]], "restarts": [0, 1], "late_files": [0, 0],
        "files_without_metadata": [0, 0], "drops_lost": [0, 3], "records": [1200, 1100],
        "seqs": [list(range(12)), [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11]]}))
    s = report.summary_section(nb.open_lake(str(copy), config=InsightConfig()), now_ms=END)
    assert "23 file(s) from 2 instance(s); 1 missing by sequence number, 3 record(s) lost" in s
    assert s.index("i-gap") < s.index("i-ok") and "seqs" not in s
