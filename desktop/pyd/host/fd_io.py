"""Blocking writes to raw descriptors, and the daemon threads that do them.

`pyd docker` (host side, over SSH or through the agent) and the agent's exec server each copy
streams between descriptors on small threads; they share these so that a non-blocking stdout
(one shared with another process) is handled the same way everywhere.
"""

from __future__ import annotations

import os
import select
import sys
import threading
from collections.abc import Callable


def daemon_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """Start `target` on a daemon thread: a stream copy never keeps the process alive."""
    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data`, waiting whenever the descriptor is non-blocking and full."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:  # a non-blocking stdout shared with another process
            wait_writable(fd)
            continue
        view = view[n:]


def wait_writable(fd: int) -> None:
    if sys.platform == "win32":  # select() there takes sockets only: retry shortly
        threading.Event().wait(0.01)
        return
    wait_for([], [fd])


def wait_for(readable: list[int], writable: list[int]) -> set[int]:
    """The descriptors ready. select() first: it takes every kind (regular files, and ttys
    on macOS, where poll() refuses devices), but only numbers below FD_SETSIZE (1024), which
    the agent, holding many clients' descriptors, may pass; poll() then."""
    try:
        r, w, _ = select.select(readable, writable, [])
        return set(r) | set(w)
    except ValueError:
        if sys.platform == "win32":  # select() there takes sockets only, and has no limit
            raise
        poller = select.poll()
        for fd in readable:
            poller.register(fd, select.POLLIN)
        for fd in writable:
            poller.register(fd, select.POLLOUT)
        return {fd for fd, _ in poller.poll()}
