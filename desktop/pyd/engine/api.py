"""Just enough of the Docker Engine API for the agent: HTTP on an SSH channel to the guest's
socket (the same way the host's docker CLI reaches it, without a host socket in between),
for the engine's /_ping, a JSON GET and the events stream, each on a channel of its own."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import paramiko

from pyd.errors import PydError

GUEST_DOCKER_SOCKET = "/var/run/docker.sock"

OpenChannel = Callable[[], paramiko.Channel]


class DockerAPIError(PydError):
    """The engine answered with an error, or not at all."""


class Body:
    """What follows the head on the channel, by line or all of it."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan
        self.buf = b""

    def line(self) -> bytes | None:
        """The next line without its "\\n"; None at the end of the stream."""
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


@dataclass(frozen=True)
class Response:
    status: int  # 0 when the answer is no HTTP
    status_line: str
    headers: dict[str, str]  # names in lower case
    body: Body  # still on the channel: read it, or close the channel


def http_get(chan: paramiko.Channel, path: str) -> Response:
    """GET `path` on `chan`; returns once the head is read. HTTP/1.0: the engine answers
    without chunked encoding and ends the body by closing the channel."""
    chan.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
    body = Body(chan)
    status_line = (body.line() or b"").decode(errors="replace").strip()
    version, _, rest = status_line.partition(" ")
    code = rest.partition(" ")[0]
    status = int(code) if version.startswith("HTTP/1.") and code.isdigit() else 0
    headers: dict[str, str] = {}
    while (line := body.line()) not in (None, b"\r", b""):
        name, _, value = line.decode(errors="replace").partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(status, status_line, headers, body)


def _get(open_channel: OpenChannel, path: str) -> tuple[paramiko.Channel, Body]:
    """The channel and the body of a 200 answer to GET `path`; DockerAPIError for others."""
    chan = open_channel()
    try:
        response = http_get(chan, path)
        if response.status != 200:
            body = response.body.rest().decode(errors="replace").strip()
            raise DockerAPIError(f"docker API {path}: {response.status_line} {body}")
    except BaseException:
        chan.close()
        raise
    return chan, response.body


def get_json(open_channel: OpenChannel, path: str) -> Any:
    chan, body = _get(open_channel, path)
    try:
        return json.loads(body.rest())
    finally:
        chan.close()


def events(open_channel: OpenChannel, filters: dict[str, list[str]]) -> Iterator[dict[str, Any]]:
    """The engine's events from now on, until the stream ends (engine or SSH gone). The
    subscription is made before this returns, so a list taken afterwards misses nothing."""
    query = urllib.parse.urlencode({"filters": json.dumps(filters)})
    chan, body = _get(open_channel, f"/events?{query}")
    return _follow(chan, body)


def _follow(chan: paramiko.Channel, body: Body) -> Iterator[dict[str, Any]]:
    try:
        while (line := body.line()) is not None:
            if line.strip():
                yield json.loads(line)
    finally:
        chan.close()
