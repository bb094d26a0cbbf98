"""Running one test function many times at once, each call in a thread of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any


def run_in_threads(
    target: Callable[..., None], calls: Iterable[tuple[Any, ...]], timeout: float
) -> None:
    """Calls `target(*args)` for every `args` in `calls`, all at once; returns when all have
    ended, or after `timeout` seconds for each. `target` records its own failures."""
    threads = [threading.Thread(target=target, args=args) for args in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
