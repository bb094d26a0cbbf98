"""QEMU's monitor (QMP) for the direct-QEMU backend: one small client over any connected
stream, and the transport that reaches it, chosen by a pure function of the platform.

- POSIX: a Unix socket in the instance directory, 0600 (the user's alone).
- Windows: CPython has no AF_UNIX there, so loopback TCP with mutual TLS (qmp_tls.py): QEMU's
  `tls-creds-x509` with `verify-peer=on` on a `127.0.0.1` chardev, and a per-instance CA
  that signs one server and one client certificate. Only the holder of the client key (a
  0600 file of the user's) completes a handshake; another local user who connects gets no
  monitor. Not a named pipe: QEMU creates its pipe with the default DACL, which lets
  Everyone read it. Not plain TCP: anyone local could send `migrate "exec:..."`, that is
  run commands as the user. What TLS does not stop: QEMU's chardev serves one client at a
  time, so another local user who connects and never finishes a handshake holds the
  monitor; `pyd stop` then ends QEMU by its process identity after the timeout.

PYD_QMP=tls forces the TLS transport on POSIX (tests run the Windows path here)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

QMP_HOST = "127.0.0.1"
QMP_TIMEOUT = 2.0  # the monitor takes one client at a time: a probe must not hang behind one
TLS_CREDS_ID = "pydqmptls"
CHARDEV_ID = "pydqmp"
NUDGE_AFTER = 0.05


class QmpTransport(Enum):
    UNIX = "unix"
    TLS = "tls"  # loopback TCP, mutual TLS


def qmp_transport(platform: str, environ: Mapping[str, str]) -> QmpTransport:
    """Pure: the transport a new QEMU gets on `platform` (sys.platform's values)."""
    forced = environ.get("PYD_QMP", "")
    if forced == "tls" or platform == "win32":
        return QmpTransport.TLS
    return QmpTransport.UNIX


@dataclass(frozen=True)
class QmpEndpoint:
    """Where one QEMU's monitor is: a Unix socket, or a loopback port with the directory
    of its TLS credentials."""

    transport: QmpTransport
    sock: Path | None = None
    port: int = 0
    tls_dir: Path | None = None


def qmp_argv(endpoint: QmpEndpoint) -> list[str]:
    """Pure: QEMU's options that open its monitor at `endpoint`."""
    if endpoint.transport is QmpTransport.UNIX:
        assert endpoint.sock is not None
        return ["-qmp", f"unix:{_escape(str(endpoint.sock))},server=on,wait=off"]
    assert endpoint.tls_dir is not None and endpoint.port > 0
    return [
        "-object",
        f"tls-creds-x509,id={TLS_CREDS_ID},endpoint=server,"
        f"dir={_escape(str(endpoint.tls_dir))},verify-peer=on",
        "-chardev",
        f"socket,id={CHARDEV_ID},host={QMP_HOST},port={endpoint.port},"
        f"server=on,wait=off,tls-creds={TLS_CREDS_ID}",
        "-mon",
        f"chardev={CHARDEV_ID},mode=control",
    ]


def _escape(value: str) -> str:
    """QEMU option values use ',' as separator; a literal comma is written twice."""
    return value.replace(",", ",,")


# QEMU's words (util/qemu-sockets.c) when its listening socket cannot be had, after the
# option that asked for it. The first is EADDRINUSE on every OS (strerror's text after it
# differs by C library, so it is not matched); the second is any other bind error, which on
# Windows includes WSAEACCES for a port someone holds exclusively or the OS has reserved.
_PORT_TAKEN = ("Failed to find an available port", "Failed to bind socket")


def monitor_port_taken(output: str, endpoint: QmpEndpoint) -> bool:
    """Pure: QEMU's `output` (stderr, or its log when detached) says it exited because the
    loopback port chosen for this TLS monitor could not be bound: another process took it
    between pyd's choice and QEMU's bind, and a fresh port will do."""
    if endpoint.transport is not QmpTransport.TLS:
        return False
    option = f"id={CHARDEV_ID},host={QMP_HOST},port={endpoint.port},"
    return any(
        option in line and any(words in line for words in _PORT_TAKEN)
        for line in output.splitlines()
    )


class QmpError(OSError):
    """The monitor could not be reached or did not speak QMP (an OSError: callers treat
    it as an unreachable monitor)."""


class QmpCommandError(QmpError):
    """QEMU answered a command with an error: its class ("GenericError", "CommandNotFound",
    ...) and its description, as QEMU worded them. A QmpError still: a caller that only
    needs an answer treats it as none, one that acts on it says what QEMU said."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"QEMU refused {command}: {desc} ({error_class})")
        self.command = command
        self.error_class = error_class
        self.desc = desc


def command_error(command: str, reply: Mapping[str, Any]) -> QmpCommandError | None:
    """Pure: the error QEMU's `reply` to `command` carries; None for a success."""
    if "error" not in reply:
        return None
    error = reply["error"]
    if not isinstance(error, dict):
        return QmpCommandError(command, "?", str(error)[:200])
    return QmpCommandError(
        command, str(error.get("class", "?")), str(error.get("desc", "no description"))
    )


class Stream(Protocol):
    """What QmpClient needs of a connected socket (plain, Unix or TLS)."""

    def sendall(self, data: bytes, /) -> None: ...
    def recv(self, size: int, /) -> bytes: ...
    def settimeout(self, value: float | None, /) -> None: ...


class QmpClient:
    """QMP over a connected stream: the greeting, capabilities negotiation, then commands,
    each answered by one reply after any asynchronous events.

    `nudge`: QEMU 7.2 holds a TLS monitor's output until more bytes arrive from the client
    (seen here: each reply came after the next command). A client that waits `NUDGE_AFTER`
    for a line sends a newline, which QMP's JSON parser skips as whitespace."""

    def __init__(self, stream: Stream, timeout: float = QMP_TIMEOUT, nudge: bool = False) -> None:
        self.stream = stream
        self.timeout = timeout
        self.nudge = nudge
        self._buffer = b""
        greeting = _parse(self._readline())
        if not isinstance(greeting, dict) or "QMP" not in greeting:
            raise QmpError(f"not a QMP monitor: {str(greeting)[:80]}")
        self.execute("qmp_capabilities")

    def execute(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        fds: Sequence[int] = (),
    ) -> dict[str, Any]:
        """QEMU's reply to `command`; QmpCommandError when QEMU answers with an error.
        `fds` go along with the command (SCM_RIGHTS), as `getfd` and `add-fd` expect:
        only over a Unix socket, and QEMU keeps them for this connection only."""
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = dict(arguments)
        data = json.dumps(request).encode() + b"\n"
        if fds:
            self._send_with_fds(data, fds)
        else:
            self.stream.sendall(data)
        reply = qmp_reply(self._readline)
        error = command_error(command, reply)
        if error is not None:
            raise error
        return reply

    def _send_with_fds(self, data: bytes, fds: Sequence[int]) -> None:
        stream = self.stream
        if (
            sys.platform == "win32"
            or not isinstance(stream, socket.socket)
            or stream.family != socket.AF_UNIX
        ):
            raise QmpError("file descriptors can be passed to QEMU only over a Unix-socket monitor")
        sent = socket.send_fds(stream, [data], list(fds))
        if sent < len(data):  # the fds went with the first bytes; the rest is plain
            stream.sendall(data[sent:])

    def _readline(self) -> bytes:
        """The next line; b"" when the monitor closed. QmpError after `timeout`."""
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpError(f"QEMU's monitor did not answer within {self.timeout:g} s")
            self.stream.settimeout(min(left, NUDGE_AFTER) if self.nudge else left)
            try:
                chunk = self.stream.recv(65536)
            except TimeoutError:
                if self.nudge:
                    self.stream.sendall(b"\n")
                continue
            if not chunk:
                return b""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line + b"\n"


def _parse(line: bytes) -> object:
    if not line:
        raise QmpError("QEMU's monitor closed the connection")
    try:
        return json.loads(line)
    except ValueError:
        raise QmpError(f"not a QMP message: {line[:80]!r}") from None


def qmp_reply(readline: Callable[[], bytes]) -> dict[str, Any]:
    """The next reply on a QMP stream, past the asynchronous events QEMU sends meanwhile."""
    while True:
        line = readline()
        if not line:
            raise QmpError("QEMU's monitor closed the connection")
        message = _parse(line) if line.strip() else None
        if isinstance(message, dict) and ("return" in message or "error" in message):
            return message


def vm_paused(reply: Mapping[str, Any]) -> bool:
    """Pure: a `query-status` reply says the guest is paused (QMP `stop`, or `virsh
    suspend`'s equivalent), as opposed to running or on its way down."""
    status = reply.get("return")
    return (
        isinstance(status, dict)
        and not status.get("running", True)
        and (status.get("status") == "paused")
    )


def connect(endpoint: QmpEndpoint, timeout: float = QMP_TIMEOUT) -> socket.socket:
    """A socket connected to the monitor at `endpoint` (TLS done, for the TLS transport)."""
    if endpoint.transport is QmpTransport.TLS:
        from pyd.vm.backends.qmp_tls import client_context

        assert endpoint.tls_dir is not None
        context = client_context(endpoint.tls_dir)
        raw = socket.create_connection((QMP_HOST, endpoint.port), timeout=timeout)
        try:
            return context.wrap_socket(raw, server_hostname=QMP_HOST)
        except (ssl.SSLError, OSError):
            raw.close()
            raise
    assert endpoint.sock is not None
    return _unix_connect(endpoint.sock, timeout)


def _unix_connect(path: Path, timeout: float) -> socket.socket:
    if sys.platform == "win32":
        raise QmpError("no unix sockets on this system: QEMU's monitor is reached over TLS")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(str(path))
    except OSError:
        s.close()
        raise
    return s


@contextlib.contextmanager
def qmp_session(endpoint: QmpEndpoint, timeout: float = QMP_TIMEOUT) -> Iterator[QmpClient]:
    """One connection to the monitor at `endpoint`, negotiated, for several commands: what
    a command binds to its connection (getfd's descriptor) lasts while the session does.
    `timeout`: per reply."""
    with connect(endpoint, timeout) as s:
        yield QmpClient(s, timeout, nudge=endpoint.transport is QmpTransport.TLS)


def qmp_run(endpoint: QmpEndpoint, *commands: str) -> dict[str, Any]:
    """Runs `commands` in one session; the last one's reply. QmpCommandError at the first
    that QEMU refuses (the rest are not sent)."""
    with qmp_session(endpoint) as client:
        reply: dict[str, Any] = {}
        for command in commands:
            reply = client.execute(command)
        return reply
