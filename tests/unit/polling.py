"""Waiting in tests: poll for the condition with a deadline, never sleep a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(check: Callable[[], T], timeout: float = 10.0, step: float = 0.01, what: str = "") -> T:
    """The first truthy value of `check()`, polled every `step` s; AssertionError at `timeout`."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"not within {timeout} s: {what or check}")
        time.sleep(step)
