"""Whether anything still listens on a TCP address, as a client finds out."""

from __future__ import annotations

import socket


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
