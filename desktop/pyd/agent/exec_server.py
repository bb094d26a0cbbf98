"""The agent's exec socket: `pyd docker` clients have their command run on the agent's open
SSH connection, saving each command the SSH handshake (slow with an emulated guest). The
protocol is in pyd.guestdocker.exec_protocol; the session is the same one `pyd docker` runs
when it connects by itself (pyd.guestdocker.run), here reading and writing the client's own
stdin, stdout and stderr, passed over the socket.

Who may connect is decided as for the Docker socket: 0600 in the instance's private socket
directory (pyd.relay.unix_socket). POSIX hosts only: Windows has no descriptor passing, and
`pyd docker` there connects by itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

from pyd.errors import PydError
from pyd.guestdocker.exec_protocol import (
    HEADER,
    STREAM_FDS,
    ExecRequest,
    ProtocolError,
    decode_message,
    decode_request,
    exit_message,
    request_length,
    started_message,
)
from pyd.guestdocker.run import HUNG_UP, GuestSession, held_by_client
from pyd.guestdocker.streams import PAUSE_SIGNALS, HostStreams, taken_signals
from pyd.relay.connections import ConnectionThreads
from pyd.relay.pump import HostStream
from pyd.relay.unix_socket import UnixSocketListener
from pyd.ssh.link_errors import LINK_ERRORS

log = logging.getLogger("pyd.agent")

REQUEST_TIMEOUT = 10.0  # a client sends its request at once; one that does not is dropped
_ACCEPTED_SIGNALS = frozenset(int(s) for s in (*taken_signals(True), *PAUSE_SIGNALS))
MAX_MESSAGE = 4096  # a client's signal message is a few bytes
_CMSG_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)  # Linux: no window for a fork to leak them
_SSH_ERRORS = LINK_ERRORS

GetTransport = Callable[[], paramiko.Transport]


def exec_server(path: Path, transport: GetTransport) -> UnixSocketListener:
    """The exec socket at `path` (not started); each command runs on `transport()`."""
    return UnixSocketListener(path, _ExecConnections(str(path), transport))


class _ExecConnections(ConnectionThreads):
    def __init__(self, label: str, transport: GetTransport) -> None:
        super().__init__(label, "exec")
        self._transport = transport

    def _serve(self, stream: HostStream) -> None:
        assert isinstance(stream, socket.socket)
        with stream:
            try:
                request, streams = _read_request(stream)
            except (ProtocolError, OSError) as e:
                log.warning("exec socket: request refused: %s", e)
                return
            command = _Command(stream, request, streams, self._transport)
            self._track(command)
            command.run()


def _read_request(conn: socket.socket) -> tuple[ExecRequest, HostStreams]:
    """The request and the client's three descriptors (ours to close); all of it within
    REQUEST_TIMEOUT."""
    if sys.platform == "win32":  # the agent serves no exec socket there (no descriptor passing)
        raise ProtocolError("no descriptor passing on Windows")
    deadline = time.monotonic() + REQUEST_TIMEOUT
    conn.settimeout(REQUEST_TIMEOUT)
    header, fds, _flags, _addr = socket.recv_fds(conn, HEADER.size, STREAM_FDS, _CMSG_CLOEXEC)
    try:
        if len(fds) != STREAM_FDS:
            raise ProtocolError(f"{len(fds)} file descriptors instead of {STREAM_FDS}")
        header += _recv_exactly(conn, HEADER.size - len(header), deadline)
        request = decode_request(_recv_exactly(conn, request_length(header), deadline))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    conn.settimeout(None)
    return request, HostStreams(*fds)


def _recv_exactly(conn: socket.socket, n: int, deadline: float) -> bytes:
    parts = []
    while n > 0:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProtocolError(f"no whole request within {REQUEST_TIMEOUT:.0f} s")
        conn.settimeout(left)
        data = conn.recv(min(n, 1 << 20))
        if not data:
            raise ProtocolError("the client hung up mid-request")
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


class _Command:
    """One client's command: its session in the guest, the client's signals passed on, and
    the exit code (or pyd's error) sent back."""

    def __init__(
        self,
        conn: socket.socket,
        request: ExecRequest,
        streams: HostStreams,
        transport: GetTransport,
    ) -> None:
        self._conn = conn
        self._request = request
        self._streams = streams
        self._transport = transport
        self._lock = threading.Lock()
        self._session: GuestSession | None = None
        self._stopping = False
        self._follower: threading.Thread | None = None  # the client's signals

    def abort(self) -> None:
        """The agent is stopping: the command ends as if the connection were lost."""
        with self._lock:
            self._stopping = True
            session = self._session
        if session is not None:
            session.hang_up()

    def run(self) -> None:
        """Runs the command and answers; the client's descriptors are closed either way."""
        started = time.monotonic()
        try:
            code, reply = self._outcome()
        finally:
            # Before the client learns the code: whoever reads its output has all of it,
            # and sees the end, once the client exits.
            for fd in self._streams.fds():
                with contextlib.suppress(OSError):
                    os.close(fd)
        with contextlib.suppress(OSError):
            self._conn.sendall(reply)
        with contextlib.suppress(OSError):
            # Ends the client-following thread too, whatever the client does next.
            self._conn.shutdown(socket.SHUT_RDWR)
        if self._follower is not None:
            # At once (its socket is shut down): the connection's thread, which the server
            # joins, outlives it.
            self._follower.join()
        log.info(
            "exec socket: a docker command ended with %d after %.1f s",
            code,
            time.monotonic() - started,
        )

    def _outcome(self) -> tuple[int, bytes]:
        """The exit code, and the message that tells it to the client."""
        try:
            code = self._run_session()
            error, hint = "", ""
        except PydError as e:
            code, error, hint = e.exit_code, e.message, e.hint
        except _SSH_ERRORS as e:
            code, error = 1, f"the agent's SSH connection to the guest failed: {e}"
            hint = "`pyd status` shows the instance's state; the command may have run or not"
        except Exception as e:  # a bug: the client must still hear of it, not wait for ever
            log.exception("exec socket: the command failed")
            code, error = 1, f"the instance's agent failed to run the command: {e}"
            hint = "the agent's log (`pyd logs`) has the details; please report it"
        if self._stopping and (error or code == HUNG_UP):
            error = "the instance's agent stopped while the command ran"
            hint = "`pyd status` shows the instance's state; `pyd start` starts it again"
        return code, exit_message(code, error, hint)

    def _run_session(self) -> int:
        session = GuestSession(
            self._transport(),
            self._request.command,
            self._streams,
            self._request.term,
            held_by_client(self._tell_started),
        )
        with self._lock:
            self._session = session
            stopping = self._stopping
        if stopping:
            session.hang_up()
        self._follower = threading.Thread(
            target=self._follow_client, args=(session,), name="pyd-exec-client", daemon=True
        )
        self._follower.start()
        return session.run()

    def _tell_started(self) -> None:
        """The command runs: an interactive client puts its terminal in raw mode now."""
        with contextlib.suppress(OSError):
            self._conn.sendall(started_message())

    def _follow_client(self, session: GuestSession) -> None:
        """The client's signals, until it hangs up (which ends the command if it still runs:
        nobody is left to see it)."""
        try:
            with self._conn.makefile("rb") as lines:
                while line := lines.readline(MAX_MESSAGE):
                    if not line.endswith(b"\n"):
                        raise ProtocolError("a message too long")
                    signum = decode_message(line).get("signal")
                    if isinstance(signum, int) and signum in _ACCEPTED_SIGNALS:
                        session.deliver(signum)
        except (OSError, ProtocolError):
            pass
        session.hang_up()
