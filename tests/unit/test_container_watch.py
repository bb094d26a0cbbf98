"""ContainerWatch against a fake engine: each channel is one end of a socket pair, the other
end answered by a thread that speaks just enough HTTP/1.0 (a container list, an events
stream that the test feeds or cuts)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from pyd.host.threads import Deadline
from pyd.ports import container_watch
from pyd.ports.container_watch import ContainerWatch
from tests.unit.polling import until


class FakeChannel:
    """The part of paramiko.Channel that engine.api and ContainerWatch use."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.closed = False

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def recv(self, n: int) -> bytes:
        return self._sock.recv(n)

    def close(self) -> None:
        # As paramiko's: wakes a recv blocked in another thread.
        self.closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class FakeEngine:
    """Serves /containers/json and /events; `containers` is what the next list returns."""

    def __init__(self) -> None:
        self.containers: list[dict[str, Any]] = []
        self.reachable = True
        self.lists = 0  # container lists served
        self._lock = threading.Lock()
        self._streams: list[socket.socket] = []  # open events streams, engine side
        self.subscriptions = 0
        self.requests: list[str] = []  # "events" or "list", in the order they were answered
        self.channels: list[FakeChannel] = []
        self._threads: list[threading.Thread] = []

    def open_channel(self) -> FakeChannel:
        if not self.reachable:
            raise ConnectionRefusedError("the engine is down")
        ours, theirs = socket.socketpair()
        thread = threading.Thread(target=self._answer, args=(theirs,), daemon=True)
        thread.start()
        chan = FakeChannel(ours)
        with self._lock:
            self._threads.append(thread)
            self.channels.append(chan)
        return chan

    def _answer(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = sock.recv(4096)
                if not chunk:
                    sock.close()
                    return
                request += chunk
            path = request.split(b" ")[1].decode()
            head = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"
            if path.startswith("/events?"):
                sock.sendall(head)
                with self._lock:
                    self._streams.append(sock)
                    self.subscriptions += 1
                    self.requests.append("events")
                return  # open until cut() or the client closes it
            with self._lock:
                self.lists += 1
                self.requests.append("list")
                body = json.dumps(self.containers).encode()
            sock.sendall(head + body)
            sock.close()

    def event(self, action: str = "start") -> None:
        """One event on every open stream."""
        line = json.dumps({"Type": "container", "Action": action}).encode() + b"\n"
        with self._lock:
            streams = list(self._streams)
        for s in streams:
            with contextlib.suppress(OSError):
                s.sendall(line)

    def cut(self) -> None:
        """Ends every events stream, as an engine restart or an SSH drop does."""
        with self._lock:
            streams, self._streams = self._streams, []
        for s in streams:
            s.close()

    def close(self) -> None:
        self.cut()
        for t in self._threads:
            t.join(5)


class Seen:
    def __init__(self) -> None:
        self.lists: list[list[Mapping[str, Any]]] = []

    def __call__(self, containers: list[Mapping[str, Any]]) -> None:
        self.lists.append(containers)

    def names(self) -> list[str]:
        return [c["Names"][0] for c in self.lists[-1]] if self.lists else []


def _named(name: str) -> dict[str, Any]:
    return {"Id": name * 4, "Names": [f"/{name}"], "State": "running", "Ports": []}


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(container_watch, "RETRY", (0.01,))


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    engine = FakeEngine()
    yield engine
    engine.close()


@pytest.fixture
def seen() -> Seen:
    return Seen()


@contextlib.contextmanager
def watching(engine: FakeEngine, seen: Seen) -> Iterator[ContainerWatch]:
    watch = ContainerWatch(engine.open_channel, seen)
    watch.start()
    try:
        yield watch
    finally:
        watch.close()
        assert watch.join(Deadline(5))


def test_lists_the_containers_once_subscribed(engine: FakeEngine, seen: Seen) -> None:
    engine.containers = [_named("web")]
    with watching(engine, seen):
        until(lambda: seen.names() == ["/web"], 5, what="the first list")
        # Subscribed before listing: a container started in between is not missed.
        assert engine.requests == ["events", "list"]


def test_every_event_brings_a_fresh_list(engine: FakeEngine, seen: Seen) -> None:
    with watching(engine, seen):
        until(lambda: seen.lists, 5, what="the first list")
        engine.containers = [_named("web")]
        engine.event("start")
        until(lambda: seen.names() == ["/web"], 5, what="the list after the start event")
        engine.containers = []
        engine.event("die")
        until(lambda: len(seen.lists) == 3 and seen.names() == [], 5, what="after die")


def test_a_cut_stream_is_followed_again_with_a_fresh_list(engine: FakeEngine, seen: Seen) -> None:
    with watching(engine, seen):
        until(lambda: engine.subscriptions == 1 and seen.lists, 5, what="subscribed")
        engine.containers = [_named("api")]  # changed while nobody listened
        engine.cut()
        until(lambda: engine.subscriptions == 2, 5, what="a second subscription")
        until(lambda: seen.names() == ["/api"], 5, what="the list after the reconnect")
        engine.containers = []
        engine.event("die")
        until(lambda: seen.names() == [], 5, what="events on the new stream")


def test_an_unreachable_engine_is_tried_again(engine: FakeEngine, seen: Seen) -> None:
    engine.reachable = False
    with watching(engine, seen):
        time.sleep(0.1)  # the thing under test: nothing is listed while the engine is down
        assert seen.lists == []
        engine.containers = [_named("web")]
        engine.reachable = True
        until(lambda: seen.names() == ["/web"], 5, what="the list once the engine is back")


def test_close_ends_the_watch_blocked_on_the_stream(engine: FakeEngine, seen: Seen) -> None:
    watch = ContainerWatch(engine.open_channel, seen)
    watch.start()
    until(lambda: engine.subscriptions == 1 and seen.lists, 5, what="blocked on the stream")
    t0 = time.monotonic()
    watch.close()
    assert watch.join(Deadline(1.0)), "the watch's thread is still blocked"
    assert time.monotonic() - t0 < 1.0
    assert all(c.closed for c in engine.channels)
    # No list after close, whatever the engine still says.
    lists = len(seen.lists)
    engine.event("start")
    time.sleep(0.05)  # the thing under test: nothing more arrives
    assert len(seen.lists) == lists
