"""The agent's exec socket: `pyd docker` clients have their command run on the agent's open
SSH connection, saving each command the SSH handshake (slow with an emulated guest). The
protocol is in pyd.guestdocker.exec_protocol; the session is the same one `pyd docker` runs
when it connects by itself (pyd.guestdocker.run), here reading and writing the client's own
stdin, stdout and stderr, passed over the socket.

Both modes of the protocol on the same endpoint, as the request says: the client's
descriptors (POSIX), or its streams as frames (pyd.guestdocker.exec_frames; Windows, and
POSIX clients that cannot pass descriptors). A framed command's session writes pipes of
this process that threads copy to frames, and takes its stdin from a queue of the client's
frames (pyd.guestdocker.run.QueuedStdin: no pipe whose read could outlast the command).

Who may connect is decided as for the Docker API: 0600 in the instance's private socket
directory (pyd.relay.unix_socket), or a named pipe whose DACL admits the current user only
(pyd.relay.named_pipe).
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
from pyd.guestdocker import terminal
from pyd.guestdocker.exec_frames import (
    FRAME_HEADER,
    MAX_FRAME,
    STDIN_CREDIT,
    TO_AGENT,
    Kind,
    ack_frame,
    exit_frame,
    frame,
    parse_closed,
    parse_number,
    parse_window,
    read_frame,
)
from pyd.guestdocker.exec_protocol import (
    HEADER,
    STREAM_FDS,
    ExecEndpoint,
    ExecRequest,
    ProtocolError,
    decode_message,
    decode_request,
    exit_message,
    request_length,
    started_message,
)
from pyd.guestdocker.run import HUNG_UP, GuestSession, QueuedStdin, held_by_client
from pyd.guestdocker.streams import PAUSE_SIGNALS, HostStreams, taken_signals
from pyd.host.fd_io import daemon_thread
from pyd.host.threads import Deadline, join_threads
from pyd.relay.connections import ConnectionThreads, ServedForward
from pyd.relay.named_pipe import NamedPipeListener
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


STOP_WAIT = 5.0  # the agent stopping: for a framed client's last output, then it is cut
# After the exit code is sent: for the client to read the rest and hang up, then it is cut.
# Bounded, so a client that never closes cannot hold the connection's thread.
CLOSE_WAIT = 2.0


def exec_server(where: Path | ExecEndpoint, transport: GetTransport) -> ServedForward:
    """The exec endpoint (not started): the Unix socket at a path, or `where`'s kind; each
    command runs on `transport()`."""
    if isinstance(where, Path):
        where = ExecEndpoint("unix", str(where))
    conns = _ExecConnections(where.address, transport)
    if where.kind == "pipe":
        return NamedPipeListener(where.address, conns)
    return UnixSocketListener(Path(where.address), conns)


class _ExecConnections(ConnectionThreads):
    def __init__(self, label: str, transport: GetTransport) -> None:
        super().__init__(label, "exec")
        self._transport = transport

    def _serve(self, stream: HostStream) -> None:
        with contextlib.closing(stream):
            try:
                request, streams = _read_request(stream)
            except (ProtocolError, OSError) as e:
                log.warning("exec socket: request refused: %s", e)
                return
            if streams is None:
                command: _Command = _FramedCommand(stream, request, self._transport)
            else:
                command = _Command(stream, request, streams, self._transport)
            self._track(command)
            command.run()


def _read_request(conn: HostStream) -> tuple[ExecRequest, HostStreams | None]:
    """The request and the client's three descriptors (ours to close), or None for them
    when the request is framed; all of it within REQUEST_TIMEOUT (on a socket: a pipe has
    no timeouts, and only the user can open it)."""
    deadline = time.monotonic() + REQUEST_TIMEOUT
    fds: list[int] = []
    if isinstance(conn, socket.socket):
        conn.settimeout(REQUEST_TIMEOUT)
    if isinstance(conn, socket.socket) and sys.platform != "win32":
        header, fds, _flags, _addr = socket.recv_fds(
            conn, HEADER.size, STREAM_FDS, _CMSG_CLOEXEC
        )
    else:
        header = b""
    try:
        if fds and len(fds) != STREAM_FDS:
            raise ProtocolError(f"{len(fds)} file descriptors instead of {STREAM_FDS}")
        header += _recv_exactly(conn, HEADER.size - len(header), deadline)
        request = decode_request(_recv_exactly(conn, request_length(header), deadline))
        if request.framed == bool(fds):
            raise ProtocolError(
                "descriptors with a framed request" if fds else "no descriptors passed"
            )
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    if isinstance(conn, socket.socket):
        conn.settimeout(None)
    return request, HostStreams(*fds) if fds else None


def _recv_exactly(conn: HostStream, n: int, deadline: float) -> bytes:
    parts = []
    while n > 0:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProtocolError(f"no whole request within {REQUEST_TIMEOUT:.0f} s")
        if isinstance(conn, socket.socket):
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

    NOTE = ""  # in the log line of its end

    def __init__(
        self,
        conn: HostStream,
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
            code, error, hint = self._outcome()
        finally:
            # Before the client learns the code: whoever reads its output has all of it,
            # and sees the end, once the client exits.
            self._end_streams()
        with contextlib.suppress(OSError):
            self._reply(code, error, hint)
        self._hang_up()
        log.info(
            "exec socket: a docker command ended with %d after %.1f s%s",
            code,
            time.monotonic() - started,
            self.NOTE,
        )

    def _hang_up(self) -> None:
        """Ends the connection without losing what the client has yet to read. Cutting it
        at once would: a named pipe's DisconnectNamedPipe discards the unread bytes (the
        last output, the exit frame; pyd issue 17). So this end stops writing first (a
        pipe's flush waits until the client has read everything, hence its own thread),
        and the client hangs up once it has the exit code; the thread reading the client
        sees that. Only a client that has not within CLOSE_WAIT is cut."""
        reader = self._follower or daemon_thread(self._drain, "pyd-exec-drain")
        writing_shut = daemon_thread(self._shut_writing, "pyd-exec-shut-writing")
        if not join_threads([writing_shut, reader], Deadline(CLOSE_WAIT)):
            with contextlib.suppress(OSError):
                self._conn.shutdown(socket.SHUT_RDWR)  # wakes the reader, and a pipe's flush
            # Before the connection is closed, so its zero-length write cannot outlive it.
            writing_shut.join(CLOSE_WAIT)
        # At once now: the connection's thread, which the server joins, outlives it.
        reader.join()

    def _shut_writing(self) -> None:
        with contextlib.suppress(OSError):  # the client has gone, or it was cut
            self._conn.shutdown(socket.SHUT_WR)

    def _drain(self) -> None:
        """The client's end, when no thread follows it (the session never started)."""
        with contextlib.suppress(OSError):
            while self._conn.recv(MAX_FRAME):
                pass

    # What differs between the two modes: how the streams end, what is said, who follows.

    def _end_streams(self) -> None:
        for fd in self._streams.fds():
            with contextlib.suppress(OSError):
                os.close(fd)

    def _reply(self, code: int, error: str, hint: str) -> None:
        self._conn.sendall(exit_message(code, error, hint))

    def _tell_started(self) -> None:
        """The command runs: an interactive client puts its terminal in raw mode now."""
        with contextlib.suppress(OSError):
            self._conn.sendall(started_message())

    def _window(self) -> tuple[int, int]:
        return terminal.size(self._streams.stdout)

    def _queued_stdin(self) -> QueuedStdin | None:
        """Where the session's stdin comes from, when not from the client's descriptor."""
        return None

    def _outcome(self) -> tuple[int, str, str]:
        """The exit code, and pyd's error and hint when it is not docker's."""
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
        return code, error, hint

    def _run_session(self) -> int:
        session = GuestSession(
            self._transport(),
            self._request.command,
            self._streams,
            self._request.term,
            held_by_client(self._tell_started),
            self._window,
            self._queued_stdin(),
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

    def _follow_client(self, session: GuestSession) -> None:
        """The client's signals, until it hangs up (which ends the command if it still runs:
        nobody is left to see it)."""
        assert isinstance(self._conn, socket.socket)
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


_NO_STDIN_FD = -1  # a framed command's stdin comes as pieces (QueuedStdin), not from a descriptor


class _FramedCommand(_Command):
    """A command whose client sends and takes its streams as frames: the session writes
    pipes of this process, which threads copy to frames (pyd.guestdocker.exec_frames), and
    takes its stdin from a queue the frames fill (no pipe: see QueuedStdin). What is held
    at any time is bounded: STDIN_CREDIT of stdin, one read of each output."""

    NOTE = " (framed)"

    def __init__(self, conn: HostStream, request: ExecRequest, transport: GetTransport) -> None:
        (self._out_r, out_w), (self._err_r, err_w) = os.pipe(), os.pipe()
        super().__init__(conn, request, HostStreams(_NO_STDIN_FD, out_w, err_w), transport)
        self._send_lock = threading.Lock()  # one frame at a time on the connection
        self._size = request.window or terminal.DEFAULT_SIZE
        self._stdin = QueuedStdin(self._ack)
        self._credit_lock = threading.Lock()
        self._unacked = 0  # stdin bytes received and not yet taken by the session
        self._closed: set[int] = set()  # outputs whose client side went away (CLOSED)
        self._copies = [
            daemon_thread(lambda: self._copy_output(self._out_r, Kind.STDOUT, 1), "pyd-exec-out"),
            daemon_thread(lambda: self._copy_output(self._err_r, Kind.STDERR, 2), "pyd-exec-err"),
        ]

    def _send(self, *parts: bytes) -> None:
        with self._send_lock:
            for part in parts:
                self._conn.sendall(part)

    def _end_streams(self) -> None:
        """The session's ends of the output pipes close, so the copies send what is left and
        end (the session has stopped its stdin)."""
        for fd in (self._streams.stdout, self._streams.stderr):
            with contextlib.suppress(OSError):
                os.close(fd)
        cut: Deadline | None = None
        while not join_threads(self._copies, Deadline(0.5)):
            if self._stopping:
                # The agent stops and the client reads no more (a stopped client): cut it.
                cut = cut or Deadline(STOP_WAIT)
                if cut.passed():
                    with contextlib.suppress(OSError):
                        self._conn.shutdown(socket.SHUT_RDWR)

    def _reply(self, code: int, error: str, hint: str) -> None:
        self._send(exit_frame(code, error, hint))

    def _tell_started(self) -> None:
        with contextlib.suppress(OSError):
            self._send(frame(Kind.STARTED))

    def _window(self) -> tuple[int, int]:
        return self._size

    def _queued_stdin(self) -> QueuedStdin | None:
        return self._stdin

    def _copy_output(self, fd: int, kind: Kind, which: int) -> None:
        """One output pipe to frames until it ends; after the client's CLOSED for it, the
        pipe is closed, and the session's next write fails as a closed pipe's would."""
        sending = True
        try:
            while data := os.read(fd, MAX_FRAME):
                if which in self._closed:
                    return
                if sending:
                    try:
                        self._send(FRAME_HEADER.pack(kind, len(data)), data)
                    except OSError:
                        sending = False  # the client has gone: drain, so the session ends
        except OSError:
            pass
        finally:
            os.close(fd)

    def _ack(self, n: int) -> None:
        """The session took `n` bytes of stdin: the client may send as many more."""
        with self._credit_lock:
            self._unacked -= n
        with contextlib.suppress(OSError):  # the client has gone
            self._send(ack_frame(n))

    def _follow_client(self, session: GuestSession) -> None:
        """The client's frames, until it hangs up or breaks the protocol: either ends the
        command if it still runs."""
        ended = False
        try:
            while (got := read_frame(self._conn.recv, TO_AGENT)) is not None:
                kind, payload = got
                if kind is Kind.STDIN:
                    if ended:
                        raise ProtocolError("stdin after its end")
                    with self._credit_lock:
                        self._unacked += len(payload)
                        over = self._unacked > STDIN_CREDIT
                    if over:
                        raise ProtocolError("stdin beyond the credit given")
                    self._stdin.put(payload)
                elif kind is Kind.STDIN_EOF:
                    if not ended:
                        ended = True
                        self._stdin.end()
                elif kind is Kind.WINDOW:
                    self._size = parse_window(payload)
                    session.resize()
                elif kind is Kind.SIGNAL:
                    signum = parse_number(payload)
                    if signum in _ACCEPTED_SIGNALS:
                        session.deliver(signum)
                elif kind is Kind.CLOSED:
                    self._closed.add(parse_closed(payload))
        except ProtocolError as e:
            log.warning("exec socket: a framed client broke the protocol: %s", e)
            with contextlib.suppress(OSError):
                self._conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._stdin.end()  # the client has gone: so has its stdin
        session.hang_up()
