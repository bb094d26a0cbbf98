"""Opening the SSH connection to a guest, with its host key pinned.

pyd generates the guest's host key and puts it on the seed, so the key is known before
the first connection: anything else answering on the port is refused, never trusted.

Everything the host sends to or fetches from the guest (the Docker API, published ports)
goes through this one connection, so its algorithms are chosen for throughput. Under software
emulation the guest's sshd is what runs out first, and there aes128-ctr is its fastest
cipher and hmac-sha2-512 its fastest MAC (no SHA extensions are emulated, so SHA-256 is
slow; the AEAD ciphers are slower than CTR). So aes128-ctr with hmac-sha2-512-etm comes
first; paramiko's own order follows for any server that lacks them. The host side matters
too, since QEMU's vCPUs and the agent share the host's cores: see _PacketSocket.
bench/port_forward.py measures both.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from pyd.errors import PydError
from pyd.ssh.keys import PinnedHostKey, pinned_host_key
from pyd.ssh.link_errors import LINK_ERRORS


class HostKeyMismatchError(PydError):
    """The guest presented a host key other than the one pyd generated for it."""


# Preferred first; paramiko's remaining algorithms keep their own order after these.
PREFERRED_CIPHERS = ("aes128-ctr", "aes128-gcm@openssh.com")
PREFERRED_MACS = ("hmac-sha2-512-etm@openssh.com", "hmac-sha2-512")


@dataclass(frozen=True)
class SSHTarget:
    host: str
    port: int
    user: str
    key_file: Path
    host_public_key: str  # "ssh-ed25519 AAAA… [comment]"


def pinned_client(pin: PinnedHostKey) -> paramiko.SSHClient:
    """A client that trusts `pin` alone: any other key, or host, is refused."""
    client = paramiko.SSHClient()
    key = paramiko.PKey.from_type_string(pin.kind, base64.b64decode(pin.key_base64))
    client.get_host_keys().add(pin.host_pattern, pin.kind, key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def _preferred(first: tuple[str, ...], available: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in first if n in available) + tuple(n for n in available if n not in first)


class _PacketSocket:
    """The connection's socket as paramiko's Transport uses it, woken once per SSH packet
    rather than once per TCP segment.

    paramiko's transport thread reads each packet with exact recv(n) calls: a first block,
    then the rest. Under emulation the guest's data reaches the host in small pieces, and each
    wake-up of that thread costs far more Python than the bytes it brings. With SO_RCVLOWAT set
    to the bytes still missing, the kernel wakes the thread once they are all there; one large
    read takes whatever else has arrived too, and later reads are served from it (less CPU
    for the forwarding process; bench/port_forward.py shows it). Only exact reads may wait:
    the banner is read with recv(128) before the protocol starts, so `exact_reads()` switches
    this on after the handshake. Without SO_RCVLOWAT (Windows) only the read-ahead remains.
    Everything else (send, settimeout, close, _closed) is the socket's own.
    """

    READ_AHEAD = 256 * 1024
    MAX_LOWAT = 64 * 1024  # the kernel grows the receive buffer to twice this if needed

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray(self.READ_AHEAD)
        self._view = memoryview(self._buf)
        self._start = self._end = 0  # unread bytes: _buf[_start:_end]
        self._exact = False
        self._lowat = 1
        self.last_recv = time.monotonic()  # when bytes last came: proof of life (heartbeat)

    def exact_reads(self) -> None:
        """From now on every recv(n) asks for bytes the server is bound to send."""
        self._exact = hasattr(socket, "SO_RCVLOWAT")

    def recv(self, n: int) -> bytes:
        if self._start < self._end:
            k = min(n, self._end - self._start)
            out = bytes(self._view[self._start : self._start + k])
            self._start += k
            return out
        if self._exact:
            self._wake_at(min(n, self.MAX_LOWAT))
        got = self._sock.recv_into(self._buf)
        if got:
            self.last_recv = time.monotonic()
        k = min(n, got)
        self._start, self._end = k, got
        return bytes(self._view[:k])

    def _wake_at(self, n: int) -> None:
        if n == self._lowat:
            return
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, n)
        except OSError:
            self._exact = False
            return
        self._lowat = n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _transport(sock: _PacketSocket, **kwargs: object) -> paramiko.Transport:
    """paramiko's Transport with our algorithm order (SSHClient's transport_factory)."""
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    options.ciphers = _preferred(PREFERRED_CIPHERS, options.ciphers)
    options.digests = _preferred(PREFERRED_MACS, options.digests)
    return transport


def _tcp_connect(host: str, port: int, timeout: float) -> _PacketSocket:
    sock = socket.create_connection((host, port), timeout=timeout)
    # Small messages (a request line, a window adjust) go out at once, never held back by
    # Nagle's algorithm waiting for the guest's (delayed) ACK of the previous one.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _PacketSocket(sock)


def connect(
    target: SSHTarget,
    timeout: float = 10.0,
    connect_timeout: float | None = None,
    on_socket: Callable[[socket.socket], None] | None = None,
) -> paramiko.SSHClient:
    """One connection attempt. Raises HostKeyMismatchError or OSError/SSHException.
    `connect_timeout` bounds the TCP connect alone (default `timeout`): a reconnect gives up
    on a dropped SYN at once and tries a fresh socket, rather than wait on TCP's backoff.
    `on_socket` gets the connected socket before the handshake (to cut an attempt short)."""
    tcp_timeout = timeout if connect_timeout is None else connect_timeout
    sock = _tcp_connect(target.host, target.port, tcp_timeout)
    if on_socket is not None:
        on_socket(sock._sock)
    pin = pinned_host_key(target.host, target.port, target.host_public_key)
    host_id = pin.host_pattern
    client = pinned_client(pin)
    try:
        client.connect(
            target.host,
            port=target.port,
            username=target.user,
            key_filename=str(target.key_file),
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
            sock=sock,
            transport_factory=_transport,
        )
    except paramiko.BadHostKeyException as e:
        client.close()
        sock.close()
        raise HostKeyMismatchError(
            f"the guest at {host_id} presented a different host key than the one pyd "
            f"generated for it ({e.key.get_name()} {e.key.get_base64()[:20]}…); refusing to "
            "connect",
            hint="another machine may be answering on that port, or the instance's disk "
            "was swapped; check `pyd status` and the port before trusting it",
        ) from None
    except BaseException:
        client.close()
        sock.close()
        raise
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(15)
    sock.exact_reads()
    return client


def banner_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """True once sshd itself answers. QEMU's port forward accepts connections before the
    guest listens, so a TCP connect proves nothing; reading the banner does, and costs the
    guest nothing, unlike a full SSH handshake."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def wait_for_ssh(
    target: SSHTarget,
    deadline: float,
    poll: float = 0.2,
    handshake: float = 10.0,
    cancelled: threading.Event | None = None,
    guest_up: bool = False,
) -> paramiko.SSHClient:
    """Retries `connect` until it works or `deadline` (time.monotonic()) passes, or until
    `cancelled` is set (a PydError either way). A host key mismatch is final and raised at
    once. `handshake` bounds one attempt: a booting guest under emulation can take seconds
    to answer a new connection, and an attempt cut short only starts the wait over.
    `guest_up`: the guest runs and its sshd with it (a VM just restored from its save), so
    the first attempt is a handshake, without the banner probe, which costs the guest a
    whole sshd process (~0.2 s under emulation); probing starts if it fails."""
    stop = cancelled if cancelled is not None else threading.Event()
    last: Exception | None = None
    probe = not guest_up
    while time.monotonic() < deadline and not stop.is_set():
        if probe and not banner_ready(target.host, target.port):
            stop.wait(poll)
            continue
        try:
            return connect(target, timeout=handshake)
        except HostKeyMismatchError:
            raise
        except LINK_ERRORS as e:
            last, probe = e, True
            stop.wait(poll)
    if stop.is_set():
        raise PydError("the wait for SSH was cancelled")
    raise PydError(
        f"SSH to {target.host}:{target.port} did not answer in time ({last})",
        hint="see the guest console log",
    )


def ssh_while_booting(
    target: SSHTarget,
    timeout: float,
    check_alive: Callable[[], None],
    cancelled: threading.Event | None = None,
    guest_up: bool = False,
) -> paramiko.SSHClient:
    """wait_for_ssh for a guest that is booting: `check_alive` is called every ~2 s and
    raises when the VM is gone, so a crashed boot fails at once instead of at the timeout.
    `cancelled` (the agent stopping) ends the wait within a poll, not at the next 2 s.
    `guest_up`: as wait_for_ssh's."""
    deadline = time.monotonic() + timeout
    while True:
        check_alive()
        try:
            # The 2 s bounds the wait for the banner; a handshake once begun gets its time.
            return wait_for_ssh(
                target,
                min(deadline, time.monotonic() + 2),
                cancelled=cancelled,
                guest_up=guest_up,
            )
        except HostKeyMismatchError:
            raise
        except PydError:
            if time.monotonic() >= deadline or (cancelled is not None and cancelled.is_set()):
                check_alive()
                raise
