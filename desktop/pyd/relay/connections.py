"""The live connections of one forward (TCP port, Unix socket or named pipe): each accepted
stream gets a channel from the owner and a relay in its own thread; close() aborts them all
and join() waits for their threads. (The agent's exec socket serves its connections in the
same threads: ConnectionThreads.)"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol, Self

import paramiko

from pyd.host.threads import Deadline, join_threads
from pyd.relay.pump import HostStream, Relay

log = logging.getLogger("pyd.relay")

OpenChannel = Callable[[], paramiko.Channel]
Refuse = Callable[[HostStream, Exception], None]
"""Answers a host connection whose channel could not open (and closes it)."""

CLOSE_WAIT = 10.0  # seconds a forward used as a context manager waits for its threads


class Abortable(Protocol):
    def abort(self) -> None: ...


class ConnectionThreads:
    """Accepted streams, each served in a thread of its own by a subclass's _serve();
    close() aborts what they registered with _track(), join() waits for their threads."""

    def __init__(self, label: str, name: str) -> None:
        self.label = label  # the endpoint, for log lines
        self.name = name  # thread names
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._conns: dict[threading.Thread, Abortable | None] = {}

    def spawn(self, stream: HostStream) -> None:
        thread = threading.Thread(
            target=self._handle, args=(stream,), name=f"pyd-forward-{self.name}-conn", daemon=True
        )
        with self._lock:  # join() never sees a thread it cannot join yet
            self._conns[thread] = None
            thread.start()

    def _handle(self, stream: HostStream) -> None:
        try:
            self._serve(stream)
        finally:
            with self._lock:
                self._conns.pop(threading.current_thread(), None)

    def _serve(self, stream: HostStream) -> None:
        raise NotImplementedError

    def _track(self, job: Abortable) -> None:
        """Registers the current thread's `job`, aborted by close() (at once when that has
        run already)."""
        with self._lock:
            closing = self.closing.is_set()
            self._conns[threading.current_thread()] = job
        if closing:
            job.abort()

    def close(self) -> None:
        """Aborts every live connection, and any that registers later; no waits."""
        self.closing.set()
        with self._lock:
            jobs = [job for job in self._conns.values() if job is not None]
        for job in jobs:
            job.abort()

    def join(self, deadline: Deadline) -> bool:
        with self._lock:
            threads = list(self._conns)
        return join_threads(threads, deadline)

    def __len__(self) -> int:
        with self._lock:
            return len(self._conns)


class Connections(ConnectionThreads):
    """Each stream gets a channel from `open_channel` and a relay to it; when none opens, it
    is handed to `refuse` (default: closed)."""

    def __init__(
        self, label: str, name: str, open_channel: OpenChannel, refuse: Refuse | None = None
    ) -> None:
        super().__init__(label, name)
        self.open_channel = open_channel
        self.refuse = refuse

    def _channel_for(self, stream: HostStream) -> paramiko.Channel:
        """The channel `stream` is relayed to; a subclass may pass on what it knows of it."""
        return self.open_channel()

    def _serve(self, stream: HostStream) -> None:
        try:
            chan = self._channel_for(stream)
        except Exception as e:
            log.warning("%s: could not open a channel to the guest: %s", self.label, e)
            if self.refuse is None:
                stream.close()
            else:
                self.refuse(stream, e)
            return
        relay = Relay(stream, chan, name=f"pyd-forward-{self.name}")
        self._track(relay)
        try:
            relay.run()
        except Exception:
            log.exception("%s: relay failed", self.label)


class ServedForward:
    """What the forwards share: the thread-owner shape (pyd.host.threads). As a context
    manager it starts, then closes and waits for its threads."""

    _conns: ConnectionThreads

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stops accepting and aborts live connections; no waits."""
        raise NotImplementedError

    def join(self, deadline: Deadline) -> bool:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self.join(Deadline(CLOSE_WAIT))

    def live_connections(self) -> int:
        return len(self._conns)
