"""A stand-in for the guest's Docker engine on one SSH channel: as much as the agent asks of
it (/_ping, an empty container list, an event stream that stays open without a word)."""

from __future__ import annotations

import contextlib

import paramiko


def engine(chan: paramiko.Channel) -> None:
    request = b""
    try:
        while b"\r\n\r\n" not in request:
            data = chan.recv(4096)
            if not data:
                return
            request += data
        if request.startswith(b"GET /events"):
            chan.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n")
            chan.recv(1)  # until the client closes it
        elif request.startswith(b"GET /containers/json"):
            chan.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[]")
        else:
            chan.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nOK")
    except (OSError, EOFError):
        pass  # the link was cut under it
    finally:
        # close() sends a message: EOFError when the link is already gone.
        with contextlib.suppress(OSError, EOFError):
            chan.close()
