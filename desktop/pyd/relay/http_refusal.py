"""An HTTP error answer for a Docker client whose connection cannot reach the engine.

Closing the connection would leave the docker CLI with "connection reset by peer" or, worse,
a hang; an HTTP response with a JSON `message` is what the engine itself sends on errors,
and the CLI prints it ("Error response from daemon: pyd: the SSH link to the VM is down…").
The request's head is read first (briefly): a socket closed with unread data resets, and the
client might never see the answer."""

from __future__ import annotations

import contextlib
import json
import socket

from pyd.relay.pump import HostStream

READ_WAIT = 0.5  # the client writes its request as it connects; a silent one gets the answer
MAX_HEAD = 64 * 1024
STATUS = b"503 Service Unavailable"


def refusal_response(message: str, head: bytes) -> bytes:
    """The bytes answering the request whose head is `head` (possibly partial)."""
    body = json.dumps({"message": message}).encode()
    head_only = head.split(b" ", 1)[0].upper() == b"HEAD"
    lines = [
        b"HTTP/1.1 " + STATUS,
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        b"Connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)


def refuse_http(stream: HostStream, message: str) -> None:
    """Reads the request's head (at most READ_WAIT s), answers it with `message`, closes."""
    settimeout = getattr(stream, "settimeout", None)
    head = b""
    try:
        if settimeout is not None:
            settimeout(READ_WAIT)
        while b"\r\n\r\n" not in head and len(head) < MAX_HEAD:
            chunk = stream.recv(65536)
            if not chunk:
                break
            head += chunk
    except OSError:
        pass  # timed out or gone: answer what there is
    with contextlib.suppress(OSError):
        stream.sendall(refusal_response(message, head))
        stream.shutdown(socket.SHUT_WR)
    with contextlib.suppress(OSError):
        stream.close()
