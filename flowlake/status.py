"""``flowlake status --lake ...``: the lake at a glance for an operator, without a JVM.

The last runs with their windows and the freshness of the newest data
(_meta/runs), quality-gate results (_quality/), quarantined files
(quarantine/files), capture completeness per instance (silver/capture_completeness,
when the lake has it), each Delta table's size and file count from its log, and
whether the writer lock (_meta/writer.lock) is held and by whom. Text by default,
``--json`` for monitoring.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

import click
import pandas as pd

from flowlake import lakeread
from flowlake.insight_config import load_insight_config
from flowlake.storage import exit_on_storage_failure, resolve

COMPLETENESS = "silver/capture_completeness"


def _iso(ms) -> str | None:
    """Epoch ms as ISO 8601 UTC to the second (``2025-06-02T02:00:00Z``), for JSON."""
    if ms is None or pd.isna(ms):
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _h(iso: str | None) -> str:
    """The JSON's ISO time as text: ``2025-06-02 02:00:00 UTC``."""
    return "–" if not iso else iso.replace("T", " ").replace("Z", " UTC")


def _int(v) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def runs_status(root: str, *, last: int, now_ms: int) -> tuple[list[dict], dict]:
    """The ``last`` runs (newest first; a run of some stages is listed with them) and the freshness of
    the lake's newest complete window (a run that finished gold)."""
    runs = lakeread.read_table(root, "_meta/runs")
    if runs is None or runs.empty:
        return [], {"newest_data_end": None, "lag_s": None, "last_run_finished": None}
    runs = runs.sort_values("finished_at_ms", ascending=False)
    out = []
    for r in runs.head(last).to_dict("records"):
        out.append({
            "run_id": r["run_id"], "stages": lakeread.stage_list(r.get("stages")),
            "window_start": _iso(r["start_ms"]), "window_end": _iso(r["end_ms"]),
            "recomputed_from": _iso(r["recomputed_from_ms"]), "finished_at": _iso(r["finished_at_ms"]),
            "seconds": round((r["finished_at_ms"] - r["started_at_ms"]) / 1000, 1)
            if pd.notna(r["finished_at_ms"]) and pd.notna(r["started_at_ms"]) else None,
            "flow_files": _int(r["flow_files"]), "flow_rows": _int(r["flow_rows"]),
            "attributed_rows": _int(r["attributed_rows"]), "quarantined_files": _int(r["quarantined_files"]),
        })
    complete = lakeread.complete_runs(runs)
    if complete.empty:
        return out, {"newest_data_end": None, "lag_s": None, "last_run_finished": None}
    newest = int(complete.end_ms.max())
    fresh = {"newest_data_end": _iso(newest), "newest_data_end_ms": newest,
             "lag_s": round((now_ms - newest) / 1000), "last_run_finished": _iso(complete.finished_at_ms.max()),
             "runs": int(complete.run_id.nunique())}
    return out, fresh


def quarantine_status(root: str, *, last: int) -> dict:
    q = lakeread.read_table(root, "quarantine/files")
    if q is None:
        return {"files": 0, "recent": []}
    if "detected_at_ms" in q:
        q = q.sort_values("detected_at_ms", ascending=False)
    cols = [c for c in ("source_file", "kind", "reason", "quarantine_path", "run_id") if c in q]
    recent = [{c: (None if pd.isna(v) else str(v)) for c, v in zip(cols, row)}
              for row in q[cols].head(last).itertuples(index=False)]
    return {"files": len(q), "by_reason": {str(k): int(v) for k, v in q.reason.value_counts().items()}
            if "reason" in q else {}, "recent": recent}


def completeness_status(root: str) -> list[dict] | None:
    """Per instance: the newest and lowest completeness, when silver/capture_completeness exists."""
    c = lakeread.read_table(root, COMPLETENESS)
    if c is None:
        return None
    share = next((col for col in c.columns if "complete" in col and pd.api.types.is_float_dtype(c[col])), None)
    time_col = next((col for col in c.columns if col.endswith("_ms") and pd.api.types.is_numeric_dtype(c[col])), None)
    if "instance_id" not in c or share is None:
        return [{"rows": len(c), "columns": list(c.columns)}]
    out = []
    for inst, g in c.groupby("instance_id"):
        g = g.sort_values(time_col) if time_col else g
        out.append({"instance_id": inst, "latest": round(float(g[share].iloc[-1]), 4),
                    "lowest": round(float(g[share].min()), 4), "rows": len(g),
                    "latest_at": _iso(g[time_col].iloc[-1]) if time_col else None})
    return sorted(out, key=lambda d: d["latest"])


def lock_status(root: str, *, now_ms: int) -> dict:
    info = lakeread.writer_lock(root)
    if info is None:
        return {"held": False}
    out = {"held": True, **info}
    if info.get("acquired_at_ms") is not None:
        out["acquired_at"] = _iso(info["acquired_at_ms"])
        out["age_s"] = round((now_ms - info["acquired_at_ms"]) / 1000)
    return out


def collect(root: str, *, last: int = 5, now_ms: int | None = None) -> dict[str, Any]:
    """Everything ``flowlake status`` shows, as one JSON-ready dict."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    loc = resolve(root)
    if loc.fs.get_file_info(loc.path).type.name == "NotFound":
        raise FileNotFoundError(f"no lake at {root}: give the root that `flowlake pipeline run --lake` wrote")
    runs, fresh = runs_status(root, last=last, now_ms=now_ms)
    quality = lakeread.quality_reports(root)
    latest_run = quality[0]["run_id"] if quality else None
    tables = []
    for name in lakeread.list_tables(root):
        s = lakeread.table_stats(root, name)
        if s is not None:
            tables.append({"table": name, "version": s.version, "files": s.files, "bytes": s.bytes, "rows": s.rows,
                           "last_commit": _iso(s.last_commit_ms)})
    return {
        "lake": root, "checked_at": _iso(now_ms), "freshness": fresh, "runs": runs,
        "quality": {"latest_run": latest_run, "stages": [q for q in reversed(quality) if q["run_id"] == latest_run],
                    "runs_with_blocking_failures": sorted({q["run_id"] for q in quality if q["failed"]})},
        "quarantine": quarantine_status(root, last=last),
        "completeness": completeness_status(root),
        "tables": tables,
        "lock": lock_status(root, now_ms=now_ms),
    }


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _age(s) -> str:
    if s is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(s) >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.0f} s"


def render_text(st: dict[str, Any]) -> str:
    """The status as a few plain-text blocks."""
    lines = [f"lake {st['lake']} (checked {_h(st['checked_at'])})"]
    lock = st["lock"]
    if lock["held"]:
        lines.append(f"writer lock: HELD by run {lock['owner']} (pid {lock['pid']} on {lock['host']}, "
                     f"since {_h(lock.get('acquired_at'))}, {_age(lock.get('age_s'))} ago)"
                     + (f" [{lock['error']}]" if lock.get("error") else ""))
    else:
        lines.append("writer lock: free")
    f = st["freshness"]
    if f["newest_data_end"]:
        lines.append(f"freshness: data up to {_h(f['newest_data_end'])} ({_age(f['lag_s'])} ago); "
                     f"last complete run finished {_h(f['last_run_finished'])}; {f['runs']} complete runs in all")
    else:
        lines.append("freshness: " + ("no complete run (one that finished gold) in _meta/runs yet" if st["runs"]
                                      else "no run recorded in _meta/runs"))
    if st["runs"]:
        lines.append("\nlast runs:")
        for r in st["runs"]:
            took_in = "" if r["flow_rows"] is None else (
                f"; {r['flow_rows']:,} flow rows from {r['flow_files'] or 0:,} files, "
                f"{r['quarantined_files'] or 0} quarantined")
            lines.append(f"  {r['run_id']} ({r['stages']}): {_h(r['window_start'])} → {_h(r['window_end'])}, "
                         f"finished {_h(r['finished_at'])} in {r['seconds']} s{took_in}")
    q = st["quality"]
    lines.append("\nquality gates:" + ("" if q["stages"] else " no reports under _quality/"))
    for s in q["stages"]:
        state = "FAILED" if s["failed"] else "ok"
        lines.append(f"  {s['run_id']} {s['stage']}: {state}, {s['passed']} passed, {s['failed']} blocking, "
                     f"{s['warnings']} warnings" + (f" ({', '.join(s['failures'])})" if s["failures"] else ""))
    if q["runs_with_blocking_failures"]:
        lines.append(f"  runs with blocking failures: {', '.join(q['runs_with_blocking_failures'])}")
    qa = st["quarantine"]
    lines.append(f"\nquarantined files: {qa['files']}"
                 + (" (" + ", ".join(f"{k}: {v}" for k, v in qa.get("by_reason", {}).items()) + ")"
                    if qa.get("by_reason") else ""))
    for r in qa["recent"]:
        lines.append(f"  {r.get('source_file')}: {r.get('reason')} -> {r.get('quarantine_path')}")
    comp = st["completeness"]
    if comp is not None:
        lines.append("\ncapture completeness per instance (lowest first):")
        for c in comp[:20]:
            if "instance_id" in c:
                lines.append(f"  {c['instance_id']}: latest {c['latest']:.2%} ({_h(c['latest_at'])}), "
                             f"lowest {c['lowest']:.2%}")
            else:
                lines.append(f"  {c['rows']} rows (columns: {', '.join(c['columns'])})")
        if len(comp) > 20:
            lines.append(f"  ... {len(comp) - 20} more instances (--json for all)")
    lines.append("\ntables:")
    width = max((len(t["table"]) for t in st["tables"]), default=10)
    for t in st["tables"]:
        rows = f"{t['rows']:,} rows" if t["rows"] is not None else "rows unknown"
        lines.append(f"  {t['table']:<{width}}  {_size(t['bytes']):>9}  {t['files']:>5} files  {rows:>16}  "
                     f"v{t['version']}, last commit {_h(t['last_commit'])}")
    return "\n".join(lines)


@click.command()
@click.option("--lake", default=None, help="Lake root (local folder or s3://); default: `lake` in conf/insight.yaml.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for monitoring) instead of text.")
@click.option("--runs", "last", default=5, show_default=True, type=click.IntRange(1, 1000),
              help="How many recent runs (and quarantined files) to list.")
def status(lake: str | None, as_json: bool, last: int) -> None:
    """The lake at a glance: runs and freshness, quality gates, quarantine, tables, writer lock. No JVM.

    Exit 5: the object store failed (one line says what, where and what to try; the trace goes to a
    temp file the line names)."""
    if lake is None:
        lake = load_insight_config().lake
    try:
        st = collect(lake, last=last)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from e
    except Exception as e:  # noqa: BLE001 - a storage failure is one line (exit 5), the rest propagate
        exit_on_storage_failure(e, roots=(lake,),
                                log_to=os.path.join(tempfile.gettempdir(), f"flowlake-status-{os.getpid()}.log"))
        raise
    click.echo(json.dumps(st, indent=2) if as_json else render_text(st))
