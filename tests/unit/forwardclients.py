"""Host clients of a forward under test (TCP port or Unix socket alike): what they get back,
and what the forward still counts as live. The tests assert on the results."""

from __future__ import annotations

import contextlib
import socket

from pyd.host.threads import Deadline
from pyd.relay.connections import ServedForward
from tests.unit.polling import until

CLOSE_WAIT = 10.0


def pings_answered(clients: list[socket.socket]) -> list[bytes]:
    """Sends b"ping" on each client; what each got back (an echo answers b"ping")."""
    answers = []
    for c in clients:
        c.sendall(b"ping")
        answers.append(c.recv(4))
    return answers


def close_under(fwd: ServedForward, clients: list[socket.socket]) -> list[bytes]:
    """Closes `fwd` while `clients` are connected, and waits for its threads; what each client
    then reads (b"": it was told the connection ended). Closes the clients."""
    fwd.close()
    reads = []
    for c in clients:
        reads.append(c.recv(100))
        c.close()
    assert fwd.join(Deadline(CLOSE_WAIT)), "the forward's threads did not end"
    return reads


def settled_live_connections(fwd: ServedForward, timeout: float = 5) -> int:
    """The forward's live connections once none are left, or after `timeout` seconds (the
    count then, for the caller's assertion to show)."""
    with contextlib.suppress(AssertionError):
        until(lambda: fwd.live_connections() == 0, timeout, what="no live connection left")
    return fwd.live_connections()
