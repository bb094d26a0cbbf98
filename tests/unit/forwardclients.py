"""Host clients of a forward under test (TCP port or Unix socket alike): what they get back,
and what the forward still counts as live. The tests assert on the results."""

from __future__ import annotations

import socket
import time

from pyd.relay.connections import ServedForward


def pings_answered(clients: list[socket.socket]) -> list[bytes]:
    """Sends b"ping" on each client; what each got back (an echo answers b"ping")."""
    answers = []
    for c in clients:
        c.sendall(b"ping")
        answers.append(c.recv(4))
    return answers


def close_under(fwd: ServedForward, clients: list[socket.socket]) -> list[bytes]:
    """Closes `fwd` while `clients` are connected; what each then reads (b"": it was told the
    connection ended). Closes the clients."""
    fwd.close()
    reads = []
    for c in clients:
        reads.append(c.recv(100))
        c.close()
    return reads


def settled_live_connections(fwd: ServedForward, timeout: float = 5) -> int:
    """The forward's live connections once none are left, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while fwd.live_connections() and time.monotonic() < deadline:
        time.sleep(0.01)
    return fwd.live_connections()
