"""Time as the API shows it: RFC 3339 UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now() -> float:
    return time.time()


def rfc3339(timestamp: float | str | None) -> str | None:
    if timestamp in (None, ""):
        return None
    moment = datetime.fromtimestamp(float(timestamp), UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_day(timestamp: float) -> str:
    """The UTC calendar day of ``timestamp`` as ``YYYY-MM-DD`` (budgets count by it)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
