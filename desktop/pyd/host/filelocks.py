"""Cross-process locks that fail with a PydError, not a filelock.Timeout traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from pyd.errors import PydError


@contextlib.contextmanager
def holding(
    path: Path, wait: float, what: str, waiting: Callable[[], None] | None = None
) -> Iterator[None]:
    """Holds the lock file `path` for the with-block. When another process holds it,
    calls `waiting` (to tell the user) and waits up to `wait` seconds; after that, a
    PydError saying that another pyd command has held `what` that long."""
    lock = FileLock(str(path), mode=0o600)  # in an instance directory: the owner's alone
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if waiting is not None:
            waiting()
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            raise PydError(
                f"another pyd command has held {what} for {wait:.0f} s",
                hint=f"check running pyd processes; the lock is {path}",
            ) from None
    try:
        yield
    finally:
        lock.release()
