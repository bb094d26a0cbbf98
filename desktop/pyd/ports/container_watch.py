"""Follows the engine: subscribe to container and network events, list the running
containers, and again after every event. On any break (SSH drop, engine restart) it
starts over, so the list is fresh within moments of the connection coming back. close()
closes the channel the reader is blocked on, so its thread ends at once; join() waits for it."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import paramiko

from pyd.engine.api import OpenChannel, events, get_json
from pyd.errors import PydError
from pyd.host.threads import Deadline, join_threads
from pyd.ssh.link_errors import LINK_ERRORS

_WATCH_ERRORS: tuple[type[Exception], ...] = (PydError, ValueError, *LINK_ERRORS)

log = logging.getLogger("pyd.ports")

FILTERS = {
    "type": ["container", "network"],
    "event": ["start", "die", "destroy", "pause", "unpause", "connect", "disconnect"],
}
RETRY = (0.2, 0.5, 1.0, 2.0)  # seconds between attempts while the engine is unreachable


class ContainerWatch:
    """Calls `on_containers` with the running containers, in its own thread (a thread owner:
    pyd.host.threads)."""

    def __init__(
        self,
        open_channel: OpenChannel,
        on_containers: Callable[[list[Mapping[str, Any]]], None],
    ) -> None:
        self.open_channel = open_channel
        self.on_containers = on_containers
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._channels: set[paramiko.Channel] = set()  # open ones, closed by close()
        self._thread = threading.Thread(target=self._run, name="pyd-container-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        with self._lock:
            channels = list(self._channels)
        for chan in channels:
            with contextlib.suppress(*LINK_ERRORS):
                chan.close()

    def join(self, deadline: Deadline) -> bool:
        return join_threads([self._thread], deadline)

    def _open(self) -> paramiko.Channel:
        """A channel from the owner, remembered until close() or its end."""
        chan = self.open_channel()
        with self._lock:
            self._channels = {c for c in self._channels if not c.closed}
            self._channels.add(chan)
            stopping = self.stop.is_set()
        if stopping:  # close() ran while this one was opening
            chan.close()
        return chan

    def _run(self) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                stream = events(self._open, FILTERS)
                self._refresh()
                failures = 0
                for _event in stream:
                    if self.stop.is_set():
                        return
                    self._refresh()
            except _WATCH_ERRORS as e:
                if not self.stop.is_set():
                    log.info("following the engine's events: %s; again shortly", e)
            delay = RETRY[min(failures, len(RETRY) - 1)]
            failures += 1
            self.stop.wait(delay)

    def _refresh(self) -> None:
        containers = get_json(self._open, "/containers/json")
        self.on_containers(containers)
