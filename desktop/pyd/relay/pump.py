"""Moving bytes both ways between a host connection and an SSH channel.

Docker's attach and exec hijack the HTTP connection and rely on half-close: `echo hi | docker
run -i busybox cat` only ends because the CLI shuts its write side when stdin ends and the
daemon still answers afterwards. So each direction ends on its own (an EOF becomes
shutdown(SHUT_WR) on the other side) and the relay ends once both have; an error in either
direction aborts both.

One thread per direction, both blocked in recv while idle, so an idle connection costs no CPU.
(A selector would save a thread per connection but not a wake-up: paramiko already delivers
channel data from its own transport thread, and a paramiko channel becomes selectable only
through a pipe it creates per channel.) bench/docker_socket.py measures the whole path.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Protocol

from pyd.ssh.link_errors import LINK_ERRORS

log = logging.getLogger("pyd.relay")

# Large reads: one recv per SSH window's worth of buffered data, not one per packet.
BUFSIZE = 256 * 1024
_PACKET = 32 * 1024  # paramiko's (and OpenSSH's) maximum packet payload

# What ends a direction normally or abnormally but is never a bug of ours.
_CONNECTION_ERRORS = LINK_ERRORS


class HostStream(Protocol):
    """The host side: a socket, or an adapter with the same few methods (Windows named pipe)."""

    def recv(self, bufsize: int, /) -> bytes: ...
    def sendall(self, data: bytes, /) -> None: ...
    def shutdown(self, how: int, /) -> None: ...
    def close(self) -> None: ...


class ChannelStream(Protocol):
    """The guest side: what the relay uses of paramiko.Channel."""

    def recv(self, nbytes: int) -> bytes: ...
    def send(self, s: bytes) -> int: ...
    def shutdown_write(self) -> None: ...
    def close(self) -> None: ...


class ChannelClosedError(ConnectionError):
    """The channel stopped taking data (closed by the other side) while we still had some."""


def send_all(chan: ChannelStream, data: bytes) -> None:
    """Sends all of `data` on `chan`; ChannelClosedError once the channel takes no more.

    Every writer to a channel uses this one (the relay, `pyd docker`'s stdin)."""
    # Not Channel.sendall: once the channel has sent EOF, Channel.send returns 0 for ever and
    # sendall would spin on it. Slices of one SSH packet's size: paramiko sends at most that
    # per call, and slicing the whole rest each time would copy it again and again.
    off = 0
    while off < len(data):
        n = chan.send(data[off : off + _PACKET])
        if n == 0:
            raise ChannelClosedError("the SSH channel was closed")
        off += n


class Relay:
    """One host connection tied to one channel. `run()` blocks until both directions have
    ended, then closes both ends; `abort()` (any thread) makes it end now."""

    def __init__(self, host: HostStream, chan: ChannelStream, name: str = "relay") -> None:
        self.host = host
        self.chan = chan
        self.name = name
        self._lock = threading.Lock()
        self._aborted = False
        self._error: BaseException | None = None

    def run(self) -> None:
        """Relays until both directions end. Connection errors end the relay quietly (logged
        at debug level); anything else is re-raised here, after both ends are closed."""
        try:
            other = threading.Thread(
                target=self._guard,
                args=(self._guest_to_host, "guest->host"),
                name=f"{self.name}-in",
                daemon=True,
            )
            other.start()
            self._guard(self._host_to_guest, "host->guest")
            other.join()
        finally:
            self._close_both()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Ends both directions at once: blocked reads and writes on either end return."""
        with self._lock:
            if self._aborted:
                return
            self._aborted = True
        # shutdown, not close: close() would not wake a thread blocked in recv on the socket,
        # and would free its fd number for reuse while that thread still holds it.
        with contextlib.suppress(OSError):
            self.host.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(*_CONNECTION_ERRORS):
            self.chan.close()

    def _guard(self, pump: Callable[[], None], direction: str) -> None:
        try:
            pump()
        except _CONNECTION_ERRORS as e:
            log.debug("%s: %s ended: %s", self.name, direction, e)
            self.abort()
        except BaseException as e:
            self._error = e
            self.abort()

    def _host_to_guest(self) -> None:
        while True:
            data = self.host.recv(BUFSIZE)
            if not data:
                self.chan.shutdown_write()
                return
            send_all(self.chan, data)

    def _guest_to_host(self) -> None:
        while True:
            data = self.chan.recv(BUFSIZE)
            if not data:
                if getattr(self.chan, "closed", False):
                    # Closed, not just EOF: nothing the client still sends can arrive, so
                    # don't leave it waiting (say, an idle `docker run -i` after the guest
                    # dropped the connection).
                    self.abort()
                else:
                    self.host.shutdown(socket.SHUT_WR)
                return
            self.host.sendall(data)

    def _close_both(self) -> None:
        with contextlib.suppress(*_CONNECTION_ERRORS):
            self.chan.close()
        with contextlib.suppress(OSError):
            self.host.close()
