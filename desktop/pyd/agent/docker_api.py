"""Just enough of the Docker Engine API for the agent: a JSON GET and the events stream,
each on its own streamlocal channel to the guest's socket (the same way the host's docker
CLI reaches it, without a host socket in between)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import paramiko

from pyd.errors import PydError

OpenChannel = Callable[[], paramiko.Channel]


class DockerAPIError(PydError):
    """The engine answered with an error, or not at all."""


def _request(path: str) -> bytes:
    # HTTP/1.0: the engine answers without chunked encoding and ends the body by closing.
    return f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode()


class _Reader:
    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan
        self.buf = b""

    def line(self) -> bytes | None:
        while b"\n" not in self.buf:
            chunk = self.chan.recv(65536)
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest or None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def rest(self) -> bytes:
        parts = [self.buf]
        while chunk := self.chan.recv(65536):
            parts.append(chunk)
        self.buf = b""
        return b"".join(parts)


def _open(open_channel: OpenChannel, path: str) -> tuple[paramiko.Channel, _Reader]:
    chan = open_channel()
    chan.sendall(_request(path))
    reader = _Reader(chan)
    status = reader.line() or b""
    parts = status.split(b" ", 2)
    while reader.line() not in (None, b"\r", b""):
        continue  # headers: nothing in them matters here
    if len(parts) < 2 or parts[1] != b"200":
        body = reader.rest().decode(errors="replace").strip()
        chan.close()
        raise DockerAPIError(f"docker API {path}: {status.decode(errors='replace')} {body}")
    return chan, reader


def get_json(open_channel: OpenChannel, path: str) -> Any:
    chan, reader = _open(open_channel, path)
    try:
        return json.loads(reader.rest())
    finally:
        chan.close()


def events(open_channel: OpenChannel, filters: dict[str, list[str]]) -> Iterator[dict[str, Any]]:
    """The engine's events from now on, until the stream ends (engine or SSH gone). The
    subscription is made before this returns, so a list taken afterwards misses nothing."""
    query = urllib.parse.urlencode({"filters": json.dumps(filters)})
    chan, reader = _open(open_channel, f"/events?{query}")
    return _follow(chan, reader)


def _follow(chan: paramiko.Channel, reader: _Reader) -> Iterator[dict[str, Any]]:
    try:
        while (line := reader.line()) is not None:
            if line.strip():
                yield json.loads(line)
    finally:
        chan.close()
