"""HTTP on a channel to the guest's Docker socket (pyd.engine.api): the one definition
the engine's ping, the JSON GETs and the event stream share. A socket pair stands in for the
channel: the code uses only sendall, recv and close."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import cast

import paramiko
import pytest

from pyd.engine.api import DockerAPIError, events, get_json, http_get


class Answering:
    """Our end of a socket pair whose other end reads one request and sends `reply`."""

    def __init__(self, reply: bytes) -> None:
        self.ours, theirs = socket.socketpair()
        self.ours.settimeout(5)
        self.request = b""
        self._thread = threading.Thread(target=self._answer, args=(theirs, reply), daemon=True)
        self._thread.start()

    def _answer(self, theirs: socket.socket, reply: bytes) -> None:
        with theirs:
            while b"\r\n\r\n" not in self.request:
                data = theirs.recv(4096)
                if not data:
                    return
                self.request += data
            theirs.sendall(reply)

    @property
    def chan(self) -> paramiko.Channel:
        return cast(paramiko.Channel, self.ours)

    def closed(self) -> bool:
        return self.ours.fileno() == -1


@pytest.fixture
def answering() -> Iterator[list[Answering]]:
    made: list[Answering] = []
    yield made
    for a in made:
        a.ours.close()


def test_the_head_is_read_and_the_body_left_on_the_channel(answering: list[Answering]) -> None:
    a = Answering(
        b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nApi-Version: 1.45\r\n\r\n"
        b'[{"Id": "x"}]\nmore'
    )
    answering.append(a)
    response = http_get(a.chan, "/containers/json")
    assert a.request == b"GET /containers/json HTTP/1.0\r\nHost: docker\r\n\r\n"
    assert (response.status, response.status_line) == (200, "HTTP/1.0 200 OK")
    assert response.headers == {"content-type": "application/json", "api-version": "1.45"}
    assert response.body.line() == b'[{"Id": "x"}]'
    assert response.body.rest() == b"more"


@pytest.mark.parametrize("reply", [b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.0 OK\r\n\r\n", b""])
def test_an_answer_that_is_no_http_has_status_0(answering: list[Answering], reply: bytes) -> None:
    a = Answering(reply)
    answering.append(a)
    assert http_get(a.chan, "/_ping").status == 0


def test_an_engine_error_is_raised_with_its_message_and_the_channel_closed(
    answering: list[Answering],
) -> None:
    a = Answering(
        b'HTTP/1.0 404 Not Found\r\nContent-Type: application/json\r\n\r\n{"message":"no"}'
    )
    answering.append(a)
    with pytest.raises(DockerAPIError, match=r'/nope: HTTP/1.0 404 Not Found \{"message":"no"\}'):
        get_json(lambda: a.chan, "/nope")
    assert a.closed()


def test_json_and_events_are_read_from_the_body(answering: list[Answering]) -> None:
    a = Answering(b"HTTP/1.0 200 OK\r\n\r\n[1, 2]")
    answering.append(a)
    assert get_json(lambda: a.chan, "/containers/json") == [1, 2]
    assert a.closed()
    b = Answering(b'HTTP/1.0 200 OK\r\n\r\n{"a": 1}\n\n{"b": 2}\n')
    answering.append(b)
    assert list(events(lambda: b.chan, {"type": ["container"]})) == [{"a": 1}, {"b": 2}]
    assert b.request.startswith(b"GET /events?filters=%7B%22type%22")
    assert b.closed()
