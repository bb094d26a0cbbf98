"""The thread-owner shape: one deadline shared by all joins, so N slow owners cost one wait."""

from __future__ import annotations

import threading
import time

from pyd.host.threads import Deadline, close_all, join_threads


class Sleeper:
    """Owns one thread that ends `delay` seconds after close() (or never, with delay None)."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.closed.wait()
        if self.delay is None:
            threading.Event().wait()
        time.sleep(self.delay or 0)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.closed.set()

    def join(self, deadline: Deadline) -> bool:
        return join_threads([self.thread], deadline)


def test_close_all_waits_for_the_slowest_not_the_sum() -> None:
    owners = [Sleeper(0.3) for _ in range(5)]
    for owner in owners:
        owner.start()
    began = time.monotonic()
    assert close_all(owners, seconds=5)
    # five owners of 0.3 s each: one shared wait, well under their sum of 1.5 s
    assert time.monotonic() - began < 1.2


def test_close_all_says_when_an_owner_outlives_the_deadline() -> None:
    stuck, quick = Sleeper(None), Sleeper(0)
    stuck.start()
    quick.start()
    began = time.monotonic()
    assert not close_all([stuck, quick], seconds=0.2)
    assert time.monotonic() - began < 1.0
    assert quick.closed.is_set() and not quick.thread.is_alive()


def test_a_passed_deadline_leaves_nothing() -> None:
    deadline = Deadline(0)
    assert deadline.passed() and deadline.left() == 0.0
    assert Deadline(10).left() > 9
