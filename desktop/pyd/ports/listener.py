"""A host TCP port whose connections are relayed to a TCP port in the guest over SSH: what
makes `docker run -p 8080:80` answer on the host's port 8080, and `pyd port add`.

Each accepted connection gets a direct-tcpip channel from the owner, opened with the peer's
address as its origin, and a relay (pyd/relay/pump.py). The owner opens the channel, so
it can swap the SSH connection underneath after a reconnect without restarting forwards.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import sys
from collections.abc import Callable

import paramiko

from pyd.errors import PydError
from pyd.host.loopback import address_text
from pyd.ports.forwards import Forward, describe
from pyd.ports.holder import port_holder
from pyd.relay.connections import Connections
from pyd.relay.listening import ListeningForward
from pyd.relay.pump import HostStream

log = logging.getLogger("pyd.relay")

OpenTcpChannel = Callable[[Forward, tuple[str, int]], paramiko.Channel]
"""(forward, origin) -> a channel to (forward.guest_ip, forward.guest_port); origin is the
host peer's (address, port)."""

BACKLOG = 128
_WSAEADDRINUSE = 10048
# Windows: WSAEACCES on bind is what an excluded port range (Hyper-V, WSL, Docker reserve
# them) or another program's exclusive use of the port looks like.
_WSAEACCES = 10013


class PortBindError(PydError):
    """The host listener of a forward cannot be opened."""

    def __init__(self, message: str, address: tuple[str, int], hint: str = "") -> None:
        super().__init__(message, hint)
        self.address = address


class PortInUseError(PortBindError):
    """Something else already listens on the host address; `holder` says what, if known."""

    def __init__(self, message: str, address: tuple[str, int], holder: str | None) -> None:
        super().__init__(
            message,
            address,
            hint="stop it or choose another host port (e.g. `-p 8081:80`)",
        )
        self.holder = holder


def bind_listener(host_ip: str, port: int, platform: str = sys.platform) -> socket.socket:
    """A listening TCP socket on exactly `host_ip`:`port`. Raises PortInUseError (naming
    what holds the port when that can be found out) or PortBindError.

    An IPv6 listener never takes the IPv4 side too (V6ONLY: "::" and "0.0.0.0" are separate
    forwards). SO_REUSEADDR lets a restarted agent bind its ports again while connections of
    the previous one linger in TIME_WAIT, but only where it cannot take a port from a live
    listener: on Linux it never can. On Windows it can, so never there; SO_EXCLUSIVEADDRUSE
    instead keeps others from binding the port under us. On macOS (BSD) it lets a specific
    address be bound beside another program's wildcard listener, taking that address's
    connections from it; so there it is used only when the plain bind failed and no listener
    can be found on the port (lsof sees other users' sockets only as root: best effort).
    """
    address = (host_ip, port)
    reuse = platform not in ("win32", "darwin")
    try:
        return _listen(address, platform, reuse)
    except OSError as e:
        if platform != "darwin" or not _in_use(e):
            raise bind_error(address, e, platform) from e
        holder = port_holder(host_ip, port)
        if holder is not None:
            raise _in_use_error(address, holder) from e
    try:
        return _listen(address, platform, reuse=True)
    except OSError as e:
        raise bind_error(address, e, platform) from e


def port_socket(host_ip: str, kind: socket.SocketKind, platform: str) -> socket.socket:
    """A socket of `host_ip`'s family that binds that family alone (IPv6 never takes the
    IPv4 side too: V6ONLY), and on Windows keeps others off its port (SO_EXCLUSIVEADDRUSE)."""
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if platform == "win32":
            exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE")  # noqa: B009 (Windows only)
            sock.setsockopt(socket.SOL_SOCKET, exclusive, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def _listen(address: tuple[str, int], platform: str, reuse: bool) -> socket.socket:
    sock = port_socket(address[0], socket.SOCK_STREAM, platform)
    try:
        if reuse and platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _in_use(e: OSError) -> bool:
    return e.errno == errno.EADDRINUSE or getattr(e, "winerror", None) == _WSAEADDRINUSE


def _in_use_error(address: tuple[str, int], holder: str | None) -> PortInUseError:
    where = address_text(address[0], address[1])
    by = f" by {holder}" if holder else ""
    return PortInUseError(f"cannot listen on {where}: it is already in use{by}", address, holder)


def bind_error(address: tuple[str, int], e: OSError, platform: str = sys.platform) -> PortBindError:
    """The PydError for a failed bind of `address`: what holds the port, or what to do."""
    host_ip, port = address
    where = address_text(host_ip, port)
    if _in_use(e):
        return _in_use_error(address, port_holder(host_ip, port))
    if e.errno == errno.EACCES or getattr(e, "winerror", None) == _WSAEACCES:
        return PortBindError(
            f"cannot listen on {where}: permission denied", address, _denied_hint(address, platform)
        )
    if e.errno == errno.EADDRNOTAVAIL:
        return PortBindError(
            f"cannot listen on {where}: {host_ip} is not an address of this host",
            address,
            hint="use 127.0.0.1, 0.0.0.0, ::1, :: or one of this host's own addresses",
        )
    return PortBindError(f"cannot listen on {where}: {e.strerror or e}", address)


def _denied_hint(address: tuple[str, int], platform: str) -> str:
    host_ip, port = address
    if platform == "win32":
        return (
            "another program may hold the port for itself, or Windows reserves it (Hyper-V "
            "and WSL reserve ranges: `netsh interface ipv4 show excludedportrange "
            "protocol=tcp` lists them); choose another port"
        )
    if port >= 1024:
        return ""
    if platform == "darwin":
        if host_ip in ("0.0.0.0", "::"):
            return "ports below 1024 need root on this macOS; use a port from 1024 up"
        return (
            f"on macOS, binding {host_ip} below port 1024 needs root but every interface "
            f"(0.0.0.0:{port}) does not; or use a port from 1024 up"
        )
    return (
        f"ports below 1024 need root: run pyd as root, or allow them to everyone with "
        f"`sudo sysctl net.ipv4.ip_unprivileged_port_start={port}`, or use a port from 1024 up"
    )


class _PeerConnections(Connections):
    """Connections whose channel is opened with the connection's peer address as its origin."""

    def __init__(self, label: str, name: str, forward: Forward, open_tcp: OpenTcpChannel) -> None:
        super().__init__(label, name, self._unused_opener)
        self._forward = forward
        self._open_tcp = open_tcp

    @staticmethod
    def _unused_opener() -> paramiko.Channel:
        raise AssertionError("_channel_for opens every channel of a TCP port")

    def _channel_for(self, stream: HostStream) -> paramiko.Channel:
        return self._open_tcp(self._forward, peer_address(stream))


def peer_address(stream: HostStream) -> tuple[str, int]:
    """The client's (address, port); ("0.0.0.0", 0) when unknown (already reset by it)."""
    if isinstance(stream, socket.socket):
        with contextlib.suppress(OSError):
            peer = stream.getpeername()
            return (str(peer[0]), int(peer[1]))
    return ("0.0.0.0", 0)


class TcpPortForward(ListeningForward):
    """Listens on `forward.host_ip`:`forward.host_port`; each connection gets a channel from
    `open_channel(forward, peer_address)` (called per connection) and is relayed to it."""

    def __init__(self, forward: Forward, open_channel: OpenTcpChannel) -> None:
        self.forward = forward
        self._label = describe(forward)
        name = f"tcp{forward.host_port}"
        super().__init__(_PeerConnections(self._label, name, forward, open_channel))

    @property
    def address(self) -> tuple[str, int]:
        """The address listened on (the port the OS chose when host_port is 0)."""
        if self._listener is None:
            return (self.forward.host_ip, self.forward.host_port)
        host, port = self._listener.getsockname()[:2]
        return (str(host), int(port))

    def start(self) -> None:
        """Binds the host address and serves it in a thread. Raises PortInUseError (naming
        the holder when it can be found) or PortBindError."""
        self._serve(bind_listener(self.forward.host_ip, self.forward.host_port))
        log.debug("listening for %s", self._label)

    def _prepare(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
