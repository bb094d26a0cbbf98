"""Whether anything still listens on a TCP address, as a client finds out."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


def nobody_listens(address: tuple[str, int]) -> bool:
    """True when a connection to `address` is refused. A connect to a free loopback port
    can pick that very port as its own source and connect to itself (TCP simultaneous
    open): nobody listens then either."""
    try:
        s = socket.create_connection(address, timeout=5)
    except ConnectionRefusedError:
        return True
    with s:
        return bool(s.getsockname()[:2] == s.getpeername()[:2])


def accept_each(sock: socket.socket, handle: Callable[[socket.socket], None]) -> threading.Thread:
    """Serve a listening test socket on a daemon thread: `handle` each connection in turn,
    until the socket is closed."""

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread
