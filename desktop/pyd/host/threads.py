"""The one shape of everything in the agent that owns threads: `start()`, then `close()` to ask
it to stop (quick, never blocking on a peer), then `join(deadline)` to wait for its threads.

Closing every owner first and joining them all against one shared deadline makes stopping N
owners take as long as the slowest of them, not the sum of their timeouts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Protocol


class Deadline:
    """A point in monotonic time that several waits share."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def passed(self) -> bool:
        return self.left() == 0.0


class ThreadOwner(Protocol):
    def start(self) -> None: ...

    def close(self) -> None:
        """Ask the threads to stop and release what wakes them (sockets, channels). No waits."""

    def join(self, deadline: Deadline) -> bool:
        """Wait for the threads until `deadline`; True when all of them ended."""


def join_threads(threads: Iterable[threading.Thread], deadline: Deadline) -> bool:
    """Join each thread within what is left of `deadline`; True when all ended."""
    for thread in threads:
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join(deadline.left())
    return not any(t.is_alive() and t is not threading.current_thread() for t in threads)


def close_all(owners: Iterable[ThreadOwner], seconds: float) -> bool:
    """Close every owner, then join them all against one deadline; True when all ended."""
    owners = list(owners)
    for owner in owners:
        owner.close()
    deadline = Deadline(seconds)
    return all([owner.join(deadline) for owner in owners])
