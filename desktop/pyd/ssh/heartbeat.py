"""Noticing a dead SSH link within seconds.

A link can die without a word: packets dropped (a firewall rule, a suspended laptop), the VM
paused, the guest's sshd stuck. TCP notices none of that until its retransmissions give up,
minutes later, and paramiko's own keepalive expects no answer, so nothing ever fails. Here a
global request with want-reply goes out every `interval` seconds (OpenSSH answers
"keepalive@openssh.com" with REQUEST_FAILURE at once, which is all we need: an answer); when
one stays unanswered for `timeout` seconds the link is declared dead and `on_dead(reason)` is
called once. So a dead link is noticed within `interval + timeout` seconds. Bytes arriving
count as an answer too (pyd.ssh.connect's socket notes when they last came): a reply queued
behind a stream of channel data is late, but the link is alive.

Two threads: paramiko's global_request() blocks until the answer or the end of the transport
(it has no timeout of its own), so one thread asks and another watches the clock; the
watcher's verdict closes the transport (the caller's on_dead does), which also ends the wait.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import paramiko

from pyd.host.threads import Deadline, join_threads
from pyd.ssh.link_errors import LINK_ERRORS

log = logging.getLogger("pyd.ssh")

KEEPALIVE = "keepalive@openssh.com"
INTERVAL = 1.0
# An answer is a few packets of sshd's time; 3 s leaves a loaded, emulated guest ample room.
# A dead link is declared within INTERVAL + TIMEOUT + TICK = 4.25 s, so `pyd status` shows it
# within 5 s even when its own run takes half a second (3.5 s measured 5.02 s once in CI).
TIMEOUT = 3.0
TICK = 0.25  # how often the watcher looks at the clock


class Heartbeat:
    def __init__(
        self,
        transport: paramiko.Transport,
        on_dead: Callable[[str], None],
        interval: float = INTERVAL,
        timeout: float = TIMEOUT,
    ) -> None:
        self.transport = transport
        self.on_dead = on_dead
        self.interval = interval
        self.timeout = timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._asked_at: float | None = None  # the unanswered request's send time
        self.answered = 0  # answers seen (tests, logs)
        self._threads = (
            threading.Thread(target=self._ask, name="pyd-ssh-heartbeat", daemon=True),
            threading.Thread(target=self._watch, name="pyd-ssh-heartbeat-watch", daemon=True),
        )

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def close(self) -> None:
        """No verdict after this (the owner is closing the transport itself). No waits."""
        self._stop.set()

    def join(self, deadline: Deadline) -> bool:
        """The asking thread ends once its request is answered or the transport closes."""
        return join_threads(self._threads, deadline)

    def _ask(self) -> None:
        while not self._stop.is_set() and self.transport.is_active():
            with self._lock:
                self._asked_at = time.monotonic()
            with contextlib.suppress(*LINK_ERRORS):
                self.transport.global_request(KEEPALIVE, wait=True)
            if not self.transport.is_active():
                # It returns within 0.1 s of the transport's end (QEMU gone, sshd gone):
                # say so now rather than at the watcher's next look.
                self._conclude("the SSH connection to the VM closed")
                return
            with self._lock:
                self._asked_at = None
                self.answered += 1
            self._stop.wait(self.interval)

    def _watch(self) -> None:
        while not self._stop.wait(TICK):
            reason = self._verdict()
            if reason:
                self._conclude(reason)
                return

    def _conclude(self, reason: str) -> None:
        """The verdict, once (either thread may reach it first), unless stopped."""
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
        log.warning("SSH link dead: %s", reason)
        self.on_dead(reason)

    def _verdict(self) -> str:
        if not self.transport.is_active():
            return "the SSH connection to the VM closed"
        with self._lock:
            asked = self._asked_at
        now = time.monotonic()
        if asked is None or now - asked <= self.timeout:
            return ""
        heard = getattr(self.transport.sock, "last_recv", None)
        if isinstance(heard, float) and now - heard <= self.timeout:
            return ""
        return f"the VM's SSH server stopped answering (no reply in {self.timeout:g} s)"
