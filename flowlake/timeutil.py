"""Epoch-millisecond time helpers shared by every part (contracts: all times are UTC epoch ms)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

SECOND_MS = 1_000
HOUR_MS = 3_600 * SECOND_MS
DAY_MS = 24 * HOUR_MS


def parse_utc(text: str) -> int:
    """ISO-8601 to epoch ms; a time without zone is taken as UTC, any other zone is converted."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp() * 1000)


def utc(ms: int) -> datetime:
    """Epoch ms as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def iso(ms: int) -> str:
    """Epoch ms as ``2025-06-02T00:00:00Z``."""
    return utc(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_of(ms: int) -> str:
    """The UTC day (``YYYY-MM-DD``) an instant falls in."""
    return utc(ms).date().isoformat()


def floor_to(ms: int, step_ms: int) -> int:
    """The start of the ``step_ms`` bucket ``ms`` falls in."""
    return (ms // step_ms) * step_ms


def ceil_to(ms: int, step_ms: int) -> int:
    """The smallest multiple of ``step_ms`` that is >= ``ms``."""
    return -(-ms // step_ms) * step_ms


def days_between(start_ms: int, end_ms: int) -> list[str]:
    """Every UTC day touched by [start, end), oldest first (the start's day for an empty span)."""
    day = utc(start_ms).date()
    last = utc(max(end_ms - 1, start_ms)).date()
    out: list[str] = []
    while day <= last:
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


def day_start_ms(day: str | date) -> int:
    """Epoch ms of 00:00 UTC on a day."""
    d = date.fromisoformat(day) if isinstance(day, str) else day
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp() * 1000)
