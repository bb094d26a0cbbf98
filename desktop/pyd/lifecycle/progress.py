"""How lifecycle steps report progress; the CLI renders it, tests record it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Protocol


class Progress(Protocol):
    def begin(self, phase: str) -> None: ...

    def done(self, phase: str, seconds: float) -> None: ...

    def info(self, message: str) -> None: ...


@contextlib.contextmanager
def phase(progress: Progress, name: str) -> Iterator[None]:
    progress.begin(name)
    t0 = time.monotonic()
    yield
    progress.done(name, time.monotonic() - t0)
