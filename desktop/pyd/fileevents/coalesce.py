"""Bursts of host changes become one batch for the guest: pure, the clock a parameter.

An editor's save is several events (write, close, rename of a temporary), `git checkout` or
a build thousands: each distinct replay is kept once, and the batch goes when the changes
settle for SETTLE seconds, or at the latest MAX_WAIT after the first, so a steady stream
(a log written line by line) is still replayed several times a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pyd.fileevents.changes import Replay

SETTLE = 0.05  # quiet this long after the last change: the burst is over
MAX_WAIT = 0.25  # never hold the first change longer than this (the event target is 0.5 s)


class Coalescer:
    """Pending replays, deduplicated, in the order first seen. Not thread-safe: the owner
    holds its lock around every call."""

    def __init__(
        self,
        settle: float = SETTLE,
        max_wait: float = MAX_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settle = settle
        self.max_wait = max_wait
        self.clock = clock
        self._pending: dict[Replay, None] = {}
        self._first = 0.0
        self._last = 0.0

    def add(self, replay: Replay) -> None:
        now = self.clock()
        if not self._pending:
            self._first = now
        self._last = now
        self._pending[replay] = None

    def __len__(self) -> int:
        return len(self._pending)

    def wait(self) -> float | None:
        """Seconds until the batch is due (0: now); None while nothing is pending."""
        if not self._pending:
            return None
        due = min(self._last + self.settle, self._first + self.max_wait)
        return max(0.0, due - self.clock())

    def take(self) -> list[Replay]:
        """The batch, if due (else nothing), and pending starts afresh."""
        if self.wait() != 0.0:
            return []
        batch = list(self._pending)
        self._pending.clear()
        return batch
