"""Waiting for an event in a test: poll a condition until it holds, with a deadline that
fails the test (never a fixed sleep, never an assertion on how long something took)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``condition`` every 50 ms until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
