"""Peak memory of a process during a block, for tests and benchmarks that bound it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import psutil


@contextlib.contextmanager
def rss_growth(process: psutil.Process, grew: list[int]) -> Iterator[None]:
    """Appends to `grew` the peak RSS of `process` during the block over its RSS before
    (sampled every 20 ms)."""
    before = peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        done.set()
        sampler.join()
        grew.append(peak - before)
