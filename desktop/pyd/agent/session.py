"""The agent's one SSH connection to the guest, watched and re-made when it dies. Forwards ask
it for the current transport, so a reconnect restores them without their knowing.

A heartbeat (pyd.ssh.heartbeat) notices a dead link within seconds; the dead transport is
closed at once, which fails every channel open still waiting on it and ends the relays on it
(in the guest, sshd then drops their channels too, once the link carries the reset). A
keeper thread then reconnects on a fresh socket every RETRY seconds, each TCP connect bounded
by CONNECT_TIMEOUT: never waiting on the old connection's TCP backoff."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable

import paramiko

from pyd.errors import PydError
from pyd.host.threads import Deadline, join_threads
from pyd.ssh.connect import HostKeyMismatchError, SSHTarget, connect, ssh_while_booting
from pyd.ssh.heartbeat import Heartbeat
from pyd.ssh.link_errors import LINK_ERRORS

log = logging.getLogger("pyd.agent")

CONNECT_TIMEOUT = 0.5  # a loopback connect answers in microseconds, or its SYN was dropped
HANDSHAKE_TIMEOUT = 10.0  # a guest under emulation, busy, may take seconds to answer
RETRY = 0.5  # between reconnect attempts


class SSHDown(PydError):
    """No SSH connection to the guest right now (it is being re-made)."""


class SSHSession:
    def __init__(
        self,
        target: SSHTarget,
        heartbeat: Callable[[paramiko.Transport, Callable[[str], None]], Heartbeat] = Heartbeat,
    ) -> None:
        self.target = target
        self._heartbeat_for = heartbeat
        self._client: paramiko.SSHClient | None = None
        self._heartbeat: Heartbeat | None = None
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._dead = threading.Event()  # the current link died: the keeper reconnects
        self.down_reason = ""  # why the link is down, "" while it is up
        self.down_since = 0.0  # time.time() of the drop
        self._down_at = 0.0  # time.monotonic() of the drop
        self._keeper: threading.Thread | None = None
        self._beats: list[Heartbeat] = []  # closed ones whose threads may still run
        self._attempt: socket.socket | None = None  # the reconnect attempt's socket
        self._retry_now = threading.Event()
        # The last reconnect attempt was refused: nothing listens on the port any more. QEMU
        # holds it for as long as it lives (paused too), so this says QEMU is gone, before
        # its backend (libvirtd cleans up for a second or so) does.
        self.refused = False

    def connect(
        self,
        deadline: float,
        check_alive: Callable[[], None] = lambda: None,
        guest_up: bool = False,
    ) -> None:
        """The first connection, before `deadline` (time.monotonic()), to a guest that may be
        booting; `check_alive` raises when the VM is gone; `guest_up`: its sshd runs already
        (ssh.connect.wait_for_ssh). HostKeyMismatchError and PydError pass through."""
        wait = max(0.0, deadline - time.monotonic())
        try:
            client = ssh_while_booting(
                self.target, wait, check_alive, cancelled=self._closed, guest_up=guest_up
            )
        except HostKeyMismatchError:
            raise
        except PydError:
            if self._closed.is_set():  # close() cut the wait short
                raise SSHDown("the SSH session was closed") from None
            raise
        if self._closed.is_set():  # closed while connecting: nobody will use it
            client.close()
            raise SSHDown("the SSH session was closed")
        self._install(client)

    def keep(
        self,
        on_down: Callable[[str], None],
        on_up: Callable[[float], None],
        on_fatal: Callable[[PydError], None],
        on_refused: Callable[[], None] = lambda: None,
    ) -> None:
        """Reconnects by itself from now on: `on_down(reason)` when the link dies, `on_up(
        seconds down)` once back, `on_fatal(error)` when it must not be re-made (a different
        host key answers), `on_refused()` when an attempt is first refused (see `refused`).
        The session is a thread owner (pyd.host.threads): close(), then join()."""
        self._keeper = threading.Thread(
            target=self._keep,
            args=(on_down, on_up, on_fatal, on_refused),
            name="pyd-ssh-keeper",
            daemon=True,
        )
        self._keeper.start()

    def start(self) -> None:
        """Reconnects by itself from now on, telling nobody (keep() tells)."""
        self.keep(lambda reason: None, lambda seconds: None, lambda error: None)

    def _install(self, client: paramiko.SSHClient) -> None:
        transport = client.get_transport()
        assert transport is not None
        heartbeat = self._heartbeat_for(transport, lambda reason: self.link_dead(transport, reason))
        with self._cond:
            old, self._client = self._client, client
            old_beat, self._heartbeat = self._heartbeat, heartbeat
            self.down_reason, self.down_since = "", 0.0
            self._dead.clear()
            self._cond.notify_all()
        heartbeat.start()
        if old_beat is not None:
            old_beat.close()
        if old is not None:
            old.close()
        with self._cond:  # join() waits for the closed ones that still run
            if old_beat is not None and old_beat not in self._beats:
                self._beats.append(old_beat)
            self._beats = [b for b in self._beats if not b.join(Deadline(0))]

    def link_dead(self, transport: paramiko.Transport | None, reason: str) -> None:
        """The link carrying `transport` (None: whatever link there is) is dead: close it now,
        so nothing waits on it, and let the keeper re-make it. Any thread."""
        with self._cond:
            client = self._client
            current = client.get_transport() if client is not None else None
            if transport is not None and transport is not current:
                return  # an old link's late verdict
            if not self.down_reason:
                self.down_reason, self.down_since = reason, time.time()
                self._down_at = time.monotonic()
            beat = self._heartbeat
            if beat is not None:
                self._beats.append(beat)
            self._cond.notify_all()
        if beat is not None:
            beat.close()
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        self._dead.set()

    def _keep(
        self,
        on_down: Callable[[str], None],
        on_up: Callable[[float], None],
        on_fatal: Callable[[PydError], None],
        on_refused: Callable[[], None],
    ) -> None:
        while not self._closed.is_set():
            self._dead.wait(1.0)
            if self._closed.is_set():
                return
            if not self._dead.is_set():
                if self.alive() or self._client is None:
                    continue
                self.link_dead(None, "the SSH connection to the VM closed")
            t0 = time.monotonic()
            on_down(self.down_reason)
            last: BaseException | None = None
            while not self._closed.is_set():
                self._retry_now.clear()
                try:
                    client = connect(self.target, HANDSHAKE_TIMEOUT, CONNECT_TIMEOUT, self._trying)
                except HostKeyMismatchError as e:
                    on_fatal(e)
                    return
                except LINK_ERRORS as e:
                    was_refused = self.refused
                    self.refused = isinstance(e, ConnectionRefusedError)
                    if self.refused and not was_refused:
                        on_refused()
                    if type(e) is not type(last):
                        log.info("reconnecting: %s", e or type(e).__name__)
                    last = e
                    self._retry_now.wait(RETRY)
                    continue
                finally:
                    with self._cond:
                        self._attempt = None
                if self._closed.is_set():
                    client.close()
                    return
                self.refused = False
                self._install(client)
                on_up(time.monotonic() - t0)
                break

    def _trying(self, sock: socket.socket) -> None:
        with self._cond:
            self._attempt = sock
            # retry_now() or close() came while this socket connected, too early to cut it
            cut = self._retry_now.is_set() or self._closed.is_set()
        if cut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def retry_now(self) -> None:
        """Gives up the reconnect attempt in progress and makes a fresh one at once: a VM that
        was paused runs again, and the attempt made meanwhile waits on a connection the guest
        will only see after its network stack's retransmission backoff."""
        with self._cond:
            sock = self._attempt
        self._retry_now.set()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def down_for(self) -> float:
        """Seconds since the link was found dead; 0 while it is up."""
        with self._cond:
            return time.monotonic() - self._down_at if self.down_reason else 0.0

    def alive(self) -> bool:
        with self._cond:
            transport = self._client.get_transport() if self._client else None
            return transport is not None and transport.is_active() and not self.down_reason

    def transport(self, wait: float) -> paramiko.Transport:
        """The live transport, waiting up to `wait` seconds for a reconnect."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                transport = self._client.get_transport() if self._client else None
                if transport is not None and transport.is_active() and not self.down_reason:
                    return transport
                left = deadline - time.monotonic()
                if left <= 0 or self._closed.is_set():
                    raise SSHDown(
                        "the SSH connection to the guest is down"
                        + (f": {self.down_reason}" if self.down_reason else "")
                    )
                self._cond.wait(min(left, 0.5))

    def client(self, wait: float) -> paramiko.SSHClient:
        self.transport(wait)
        with self._cond:
            assert self._client is not None
            return self._client

    def drop(self) -> None:
        """Cut the connection (the keeper re-makes it)."""
        self.link_dead(None, "the connection was cut on purpose")

    def close(self) -> None:
        """Closes the link and ends the reconnecting; no waits (join() waits)."""
        self._closed.set()
        self._dead.set()
        self.retry_now()  # an attempt under way ends now
        with self._cond:
            client, self._client = self._client, None
            beat, self._heartbeat = self._heartbeat, None
            if beat is not None:
                self._beats.append(beat)
            self._cond.notify_all()
        if beat is not None:
            beat.close()
        if client is not None:
            client.close()

    def join(self, deadline: Deadline) -> bool:
        """The keeper's and the heartbeats' threads. Not for long: an attempt in its handshake
        closes its own connection when done."""
        with self._cond:
            beats = list(self._beats)
        threads = [self._keeper] if self._keeper is not None else []
        return join_threads(threads, deadline) and all([b.join(deadline) for b in beats])
