"""The live connections of one forward (TCP port, Unix socket or named pipe): each accepted
stream gets a channel from the owner and a relay in its own thread; close() ends them all."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Self

import paramiko

from pyd.forward.relay import HostStream, Relay

log = logging.getLogger("pyd.forward")

OpenChannel = Callable[[], paramiko.Channel]


class Connections:
    def __init__(self, label: str, name: str, open_channel: OpenChannel) -> None:
        self.label = label  # the endpoint, for log lines
        self.name = name  # thread names
        self.open_channel = open_channel
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._conns: dict[threading.Thread, Relay | None] = {}

    def spawn(self, stream: HostStream) -> None:
        thread = threading.Thread(
            target=self._handle, args=(stream,), name=f"pyd-forward-{self.name}-conn", daemon=True
        )
        with self._lock:  # close_all() never sees a thread it cannot join yet
            self._conns[thread] = None
            thread.start()

    def _handle(self, stream: HostStream) -> None:
        me = threading.current_thread()
        try:
            try:
                chan = self.open_channel()
            except Exception as e:
                log.warning("%s: could not open a channel to the guest: %s", self.label, e)
                stream.close()
                return
            relay = Relay(stream, chan, name=f"pyd-forward-{self.name}")
            with self._lock:
                closing = self.closing.is_set()
                self._conns[me] = relay
            if closing:
                relay.abort()
            try:
                relay.run()
            except Exception:
                log.exception("%s: relay failed", self.label)
        finally:
            with self._lock:
                self._conns.pop(me, None)

    def close_all(self, timeout: float = 10) -> None:
        self.closing.set()
        with self._lock:
            conns = list(self._conns.items())
        for _thread, relay in conns:
            if relay is not None:
                relay.abort()
        for thread, _relay in conns:
            thread.join(timeout)

    def __len__(self) -> int:
        with self._lock:
            return len(self._conns)


class ServedForward:
    """What the forwards share around start() and close()."""

    _conns: Connections

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def live_connections(self) -> int:
        return len(self._conns)
