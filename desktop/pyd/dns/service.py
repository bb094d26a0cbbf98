"""The agent's part that answers the guest's DNS: HostDns, a thread owner.

The guest's relay (guest-image/overlay/usr/lib/pyd/dns-relay) listens on a root-only Unix
socket; HostDns keeps one channel open to it over the agent's SSH link (direct-streamlocal,
as for Docker's socket) and answers the A and AAAA queries the relay sends through it, each
framed as DNS over TCP is (RFC 1035 4.2.2: a 2-byte length, then the message).

Why this way and not a DNS server on a host loopback port (10.0.2.2:PORT from the guest):
nothing listens on the host, so no other user of this machine can query it and
network.host_access = false needs no hole; the channel is authenticated by the link itself;
and the relay learns the agent is gone the moment the link drops or the agent stops (its
socket sees the end), so it falls back to QEMU's DNS at once, not after a timeout.
"""

from __future__ import annotations

import logging
import struct
import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Protocol

import paramiko

from pyd.dns.answer import Resolve, answer
from pyd.dns.coalesce import Coalesced
from pyd.dns.lookup import host_lookup
from pyd.dns.wire import FORMERR, WireError, error_response, parse_query
from pyd.errors import PydError
from pyd.host.threads import Deadline, join_threads
from pyd.ssh.link_errors import LINK_ERRORS
from pyd.ssh.streamlocal import open_streamlocal

log = logging.getLogger("pyd.dns")

RELAY_SOCKET = "/run/pyd/dns.sock"  # the guest relay's; root's only, containers see none
RETRY = 1.0  # the first wait after a failed attempt (the link down, the relay not up yet)
MAX_RETRY = 10.0  # the waits double up to this (an older image has no relay at all)
MAX_INFLIGHT = 32  # lookups at once; more wait (getaddrinfo blocks its thread)
_LENGTH = struct.Struct("!H")


class Stream(Protocol):
    """A paramiko Channel, or a test's socket."""

    def recv(self, size: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def close(self) -> None: ...


Connect = Callable[[], Stream]


class HostDns:
    """Serves the guest relay's queries through `resolve` (pyd.dns.lookup.host_lookup).
    start(); set_enabled() follows config.toml (off: the channel closes and the relay asks
    QEMU's DNS); close(), join(deadline)."""

    def __init__(self, connect: Connect, resolve: Resolve, enabled: bool = True) -> None:
        self._connect = connect
        self._resolve = resolve
        self._cond = threading.Condition()
        self._enabled = enabled
        self._closed = False
        self._stream: Stream | None = None
        self._send_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_INFLIGHT)
        self._retry = RETRY
        self.answered = 0  # for tests and the log
        self._thread = threading.Thread(target=self._run, name="pyd-dns", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def set_enabled(self, enabled: bool) -> None:
        with self._cond:
            if enabled == self._enabled:
                return
            self._enabled = enabled
            stream = self._stream
            self._cond.notify_all()
        log.info("host resolver in the guest: %s", "on" if enabled else "off")
        if not enabled and stream is not None:
            stream.close()  # the relay sees the end and asks QEMU's DNS from now on

    def close(self) -> None:
        with self._cond:
            self._closed = True
            stream = self._stream
            self._cond.notify_all()
        if stream is not None:
            stream.close()

    def join(self, deadline: Deadline) -> bool:
        return join_threads([self._thread], deadline)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._enabled:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                stream = self._connect()
            except PydError as e:
                self._failed(e.message)
                continue
            except LINK_ERRORS as e:
                self._failed(str(e))
                continue
            with self._cond:
                if self._closed or not self._enabled:
                    stream.close()
                    continue
                self._stream = stream
            log.info("answering the guest's DNS through this host's resolver")
            self._retry = RETRY
            try:
                self._serve(stream)
            finally:
                with self._cond:
                    self._stream = None
                stream.close()

    def _failed(self, detail: str) -> None:
        """Waits before the next attempt, each wait twice the last; logged once per outage."""
        if self._retry == RETRY:
            log.info("no channel to the guest's DNS relay (%s); QEMU's DNS answers", detail)
        with self._cond:
            if not self._closed and self._enabled:
                self._cond.wait(self._retry)
        self._retry = min(self._retry * 2, MAX_RETRY)

    def _serve(self, stream: Stream) -> None:
        """Reads queries until the channel ends; each is answered from a thread of its own,
        as a slow name (a VPN's server) must not hold up the next."""
        while True:
            try:
                head = _read_exact(stream, _LENGTH.size)
                message = _read_exact(stream, _LENGTH.unpack(head)[0]) if head else b""
            except LINK_ERRORS:
                return
            if not message:
                return
            self._slots.acquire()
            threading.Thread(
                target=self._answer, args=(stream, message), name="pyd-dns-lookup", daemon=True
            ).start()

    def _answer(self, stream: Stream, message: bytes) -> None:
        try:
            try:
                reply: bytes | None = answer(parse_query(message), self._resolve)
            except WireError:
                reply = error_response(message, FORMERR)
            if reply is None:
                return
            with self._send_lock:
                stream.sendall(_LENGTH.pack(len(reply)) + reply)
                self.answered += 1
        except LINK_ERRORS:
            pass  # the channel ended: the relay asks QEMU's DNS for what is left
        finally:
            self._slots.release()


def _read_exact(stream: Stream, size: int) -> bytes:
    """`size` bytes, or b"" when the stream ends first."""
    parts: list[bytes] = []
    left = size
    while left:
        chunk = stream.recv(left)
        if not chunk:
            return b""
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def for_guest(transport: Callable[[float], paramiko.Transport], enabled: bool) -> HostDns:
    """The agent's HostDns: the guest relay's socket over the link, this host's resolver."""

    def connect() -> Stream:
        channel: Stream = open_streamlocal(transport(RETRY), RELAY_SOCKET, timeout=10)
        return channel

    return HostDns(connect, Coalesced(partial(host_lookup, platform=sys.platform)), enabled)
