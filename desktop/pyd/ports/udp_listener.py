"""A host UDP port whose datagrams are relayed to a UDP port in the guest over SSH: what makes
`docker run -p 5353:53/udp` answer on the host's port 5353.

SSH carries streams, so the datagrams travel framed (udp_frames) on one exec channel per port,
running the guest's udp-relay; it sends each host peer's datagrams from a socket of their own,
so replies come back to the right peer. The channel is opened on the port's first datagram
(an unused port costs the guest nothing) and again after the link drops. Two threads: one reads
the host socket (and expires quiet flows), one reads the channel; neither waits on the other,
so a flood in one direction cannot stall the other.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable

import paramiko

from pyd.errors import PydError
from pyd.host.loopback import address_text
from pyd.host.threads import Deadline, join_threads
from pyd.ports.forwards import Forward, describe
from pyd.ports.listener import PortInUseError, bind_error, port_socket
from pyd.ports.udp_flows import FLOW_IDLE, FlowTable, Peer
from pyd.ports.udp_frames import MAX_PAYLOAD, FrameKind, FrameReader, encode
from pyd.ssh.link_errors import LINK_ERRORS

log = logging.getLogger("pyd.relay")

RELAY = "/usr/lib/pyd/udp-relay"  # guest-image/overlay/usr/lib/pyd/udp-relay
# Datagrams that arrive while the channel opens (a second or two under emulation) wait in
# the socket's buffer: room for a burst rather than the OS's ~200 KiB default.
RECEIVE_BUFFER = 1024 * 1024
_WSAEADDRINUSE = 10048
# A burst of datagrams goes to the channel in writes of up to this many bytes: one SSH packet
# (paramiko's and OpenSSH's maximum payload), one wake-up of sshd and the relay for many.
BATCH = 32 * 1024

# Opening the channel: the link's errors, and a PydError from the owner (no link to wait for).
_OPEN_ERRORS: tuple[type[Exception], ...] = (PydError, *LINK_ERRORS)
# Reading it: the link's errors, and a ValueError from a stream out of step.
_READ_ERRORS: tuple[type[Exception], ...] = (ValueError, *LINK_ERRORS)

OpenRelay = Callable[[Forward], paramiko.Channel]
"""forward -> an exec channel running udp-relay for (forward.guest_ip, forward.guest_port)."""


def relay_command(forward: Forward, relay: str = RELAY) -> str:
    """The guest command the channel of `forward` runs."""
    return shlex.join([relay, forward.guest_ip, str(forward.guest_port)])


def open_udp_relay(
    transport: paramiko.Transport, forward: Forward, timeout: float, relay: str = RELAY
) -> paramiko.Channel:
    """An exec channel running udp-relay (`relay`) for `forward`. Raises the link's errors."""
    chan = transport.open_session(timeout=timeout)
    try:
        chan.exec_command(relay_command(forward, relay))
    except BaseException:
        chan.close()
        raise
    return chan


def bind_udp(host_ip: str, port: int, platform: str = sys.platform) -> socket.socket:
    """A UDP socket bound to exactly `host_ip`:`port`. Raises PortInUseError or PortBindError.

    As for TCP (listener.bind_listener): IPv6 never takes the IPv4 side too (V6ONLY), and on
    Windows SO_EXCLUSIVEADDRUSE keeps others off the port. Never SO_REUSEADDR: on UDP it
    lets two sockets share a port, each getting part of its datagrams.
    """
    address = (host_ip, port)
    try:
        sock = port_socket(host_ip, socket.SOCK_DGRAM, platform)
    except OSError as e:
        raise bind_error(address, e, platform) from e
    try:
        with contextlib.suppress(OSError):  # best effort: the OS may cap it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE or getattr(e, "winerror", None) == _WSAEADDRINUSE:
            # port_holder looks at TCP listeners only: no name for a UDP holder.
            where = address_text(host_ip, port)
            raise PortInUseError(
                f"cannot listen on {where}/udp: it is already in use", address, None
            ) from e
        raise bind_error(address, e, platform) from e
    except BaseException:
        sock.close()
        raise
    return sock


class UdpPortForward:
    """Receives on `forward.host_ip`:`forward.host_port` (UDP) and relays each datagram to the
    guest through `open_relay(forward)`'s channel, replies back to their peer. A thread owner
    (pyd.host.threads), with the PortListener shape the manager holds."""

    def __init__(
        self,
        forward: Forward,
        open_relay: OpenRelay,
        idle: float = FLOW_IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.forward = forward
        self._open_relay = open_relay
        self._label = describe(forward)
        self._clock = clock
        self._flows = FlowTable(idle)
        self._lock = threading.Lock()  # the flow table and the channel, shared by both threads
        self._chan: paramiko.Channel | None = None
        self._readers: list[threading.Thread] = []
        self._closing = threading.Event()
        self._sock: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The address received on (the port the OS chose when host_port is 0)."""
        if self._sock is None:
            return (self.forward.host_ip, self.forward.host_port)
        host, port = self._sock.getsockname()[:2]
        return (str(host), int(port))

    @property
    def flows(self) -> int:
        with self._lock:
            return len(self._flows)

    def start(self) -> None:
        """Binds the host address and serves it in a thread. Raises PortInUseError or
        PortBindError."""
        sock = bind_udp(self.forward.host_ip, self.forward.host_port)
        sock.setblocking(False)
        self._sock = sock
        self._wake = socket.socketpair()
        self._thread = threading.Thread(
            target=self._serve, name=f"pyd-forward-udp{self.forward.host_port}", daemon=True
        )
        self._thread.start()
        log.debug("receiving for %s", self._label)

    def close(self) -> None:
        """Stops receiving and closes the channel (the guest's relay ends with it); no waits."""
        self._closing.set()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"x")
        with self._lock:
            chan, self._chan = self._chan, None
        if chan is not None:
            with contextlib.suppress(*LINK_ERRORS):
                chan.close()

    def join(self, deadline: Deadline) -> bool:
        threads = [self._thread] if self._thread is not None else []
        with self._lock:
            threads += self._readers
        return join_threads(threads, deadline)

    # --- host socket -> guest ---------------------------------------------------------------

    def _serve(self) -> None:
        sock, wake = self._sock, self._wake
        assert sock is not None and wake is not None
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(sock, selectors.EVENT_READ)
                sel.register(wake[0], selectors.EVENT_READ)
                while not self._closing.is_set():
                    with self._lock:
                        timeout = self._flows.next_expiry(self._clock())
                    sel.select(timeout)
                    self._expire()
                    self._drain(sock)
        finally:
            sock.close()
            for end in wake:
                end.close()

    def _expire(self) -> None:
        with self._lock:
            gone = self._flows.expire(self._clock())
            chan = self._chan
        if gone and chan is not None:
            log.debug("%s: %d quiet flow(s) expired", self._label, len(gone))
            self._send(chan, b"".join(encode(FrameKind.CLOSE, flow) for flow in gone))

    def _drain(self, sock: socket.socket) -> None:
        """Relays every datagram waiting on the host socket, many to an SSH packet in a burst."""
        chan: paramiko.Channel | None = None
        batch: list[bytes] = []
        size = 0
        while not self._closing.is_set():
            try:
                data, peer = sock.recvfrom(MAX_PAYLOAD)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                # Windows reports an ICMP port unreachable for an earlier reply as a
                # reset on the next receive (WSAECONNRESET): nothing to stop for.
                log.debug("%s: receive: %s", self._label, e)
                continue
            # The channel before the flow: a new relay starts with an empty flow table.
            chan = chan or self._channel()
            if chan is None:
                continue  # the guest is unreachable: the datagram is lost, as on a wire
            with self._lock:
                flow, new = self._flows.flow_for((str(peer[0]), int(peer[1])), self._clock())
                evicted = self._flows.overflow()
            if new:
                log.debug("%s: new flow %d from %s", self._label, flow, peer[:2])
            batch += [encode(FrameKind.CLOSE, gone) for gone in evicted]
            batch.append(encode(FrameKind.DATA, flow, data))
            size += len(batch[-1])
            if size >= BATCH:
                if not self._send(chan, b"".join(batch)):
                    chan = None  # the next datagram opens a new one
                batch, size = [], 0
        if chan is not None and batch:
            self._send(chan, b"".join(batch))

    def _channel(self) -> paramiko.Channel | None:
        """The relay's channel, opened now if there is none; None if it cannot be."""
        with self._lock:
            chan = self._chan
        if chan is not None and not chan.closed:
            return chan
        try:
            chan = self._open_relay(self.forward)
        except _OPEN_ERRORS as e:
            log.warning("%s: cannot reach the guest: %s", self._label, e)
            return None
        reader = threading.Thread(
            target=self._replies,
            args=(chan,),
            name=f"pyd-forward-udp{self.forward.host_port}-replies",
            daemon=True,
        )
        with self._lock:
            if self._closing.is_set():
                chan.close()
                return None
            self._flows.clear()  # a new relay knows none of the old flows' sockets
            self._chan = chan
            self._readers = [t for t in self._readers if t.is_alive()] + [reader]
        reader.start()
        return chan

    def _send(self, chan: paramiko.Channel, frames: bytes) -> bool:
        """False when the channel failed (and is dropped)."""
        try:
            chan.sendall(frames)
        except LINK_ERRORS as e:
            if not self._closing.is_set():
                log.info("%s: the relay's channel failed: %s", self._label, e)
            self._drop(chan)
            return False
        return True

    def _drop(self, chan: paramiko.Channel) -> None:
        with self._lock:
            if self._chan is chan:
                self._chan = None
        with contextlib.suppress(*LINK_ERRORS):
            chan.close()

    # --- guest -> host peers ----------------------------------------------------------------

    def _replies(self, chan: paramiko.Channel) -> None:
        """Sends each reply the relay frames back to its flow's peer, until the channel ends."""
        sock = self._sock
        assert sock is not None
        reader = FrameReader()
        try:
            while True:
                data = chan.recv(MAX_PAYLOAD + 7)
                if not data:
                    break
                for frame in reader.feed(data):
                    with self._lock:
                        peer = self._flows.peer_of(frame.flow, self._clock())
                    if peer is not None:
                        self._reply(sock, frame.payload, peer)
        except _READ_ERRORS as e:
            if not self._closing.is_set():
                log.info("%s: the relay's channel failed: %s", self._label, e)
        finally:
            if not self._closing.is_set() and chan.exit_status_ready():
                status = chan.recv_exit_status()
                if status != 0:
                    err = ""
                    if chan.recv_stderr_ready():
                        err = chan.recv_stderr(4096).decode(errors="replace").strip()
                    log.warning("%s: the guest's relay ended (%d): %s", self._label, status, err)
            self._drop(chan)

    def _reply(self, sock: socket.socket, payload: bytes, peer: Peer) -> None:
        try:
            sock.sendto(payload, peer)
        except BlockingIOError:
            pass  # the host's buffer is full: dropped, as a router would
        except OSError as e:
            if not self._closing.is_set():
                log.debug("%s: reply to %s: %s", self._label, peer, e)
