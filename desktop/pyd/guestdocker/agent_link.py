r"""`pyd docker` through the host agent: the command runs on the agent's open SSH connection
(pyd.agent.exec_server), so no handshake is made for it. This process hands over its stdin,
stdout and stderr, keeps its terminal in raw mode for an interactive command once the guest's
PTY exists, passes on the signals it receives (Ctrl-Z pauses the command's streams while it
is stopped), gives up on the third Ctrl-C, and waits for the exit code.

Two ways of handing the streams over (pyd.guestdocker.exec_protocol): their descriptors
(POSIX), or their bytes as frames (pyd.guestdocker.exec_frames) on Windows, where the agent
serves the named pipe `\\.\pipe\pyd-NAME.exec`, on a POSIX host whose descriptor passing
fails, and with PYD_EXEC_FRAMED=1 (what tests and the bench use to run it here). The pipe
is used only when the agent serves it (pyd.guestdocker.pipe_identity): its name is anyone's
to take.

Imports neither paramiko nor the SSH session: a short command's time is mostly Python's
start-up once the handshake is gone.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pyd.errors import PydError
from pyd.guestdocker import terminal
from pyd.guestdocker.exec_frames import (
    MAX_FRAME,
    STDIN_CREDIT,
    TO_CLIENT,
    Kind,
    closed_frame,
    frame,
    parse_exit,
    parse_number,
    read_frame,
    signal_frame,
    window_frame,
)
from pyd.guestdocker.exec_protocol import (
    ExecEndpoint,
    ExecRequest,
    ProtocolError,
    decode_message,
    encode_request,
    signal_message,
)
from pyd.guestdocker.pipe_identity import (
    PIPE_CLIENT_SQOS,
    agent_pid_record,
    pipe_server_trusted,
    recorded_agent_pid,
    untrusted_pipe_warning,
)
from pyd.guestdocker.remote import GuestCommand
from pyd.guestdocker.streams import (
    INTERRUPTS_TO_GIVE_UP,
    PAUSE_SIGNALS,
    HostStreams,
    signals_to,
    taken_signals,
)
from pyd.host.fd_io import daemon_thread, write_all

SUPPORTED = True  # every host: descriptors or frames
PASSING = sys.platform != "win32" and hasattr(socket, "send_fds")
FRAMED_SWITCH = "PYD_EXEC_FRAMED"  # "1": frames even where descriptors could be passed
WINDOW_POLL = terminal.WINDOW_POLL  # between two looks at a Windows console's size
FLUSH_WAIT = 1.0  # Ctrl-Z: for the agent to have the pause before this process stops


class HostStream(Protocol):
    """The connection to the agent: a socket, or the pipe's adapter (as pyd.relay.pump's,
    not imported: that would import paramiko)."""

    def recv(self, bufsize: int, /) -> bytes: ...
    def sendall(self, data: bytes, /) -> None: ...
    def close(self) -> None: ...


class AgentCommandError(PydError):
    """The agent could not get docker's exit code; `exit_code` is what it chose instead."""

    def __init__(self, message: str, hint: str, exit_code: int) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code


def use_frames(endpoint: ExecEndpoint, env: Mapping[str, str], passing: bool = PASSING) -> bool:
    """Whether the streams go as frames: on a pipe, without descriptor passing, or asked."""
    return endpoint.kind == "pipe" or not passing or env.get(FRAMED_SWITCH) == "1"


def run_through_agent(
    where: Path | ExecEndpoint, command: GuestCommand, streams: HostStreams
) -> int | None:
    """docker's exit code for `command` run by the agent serving `where` (a Unix socket's
    path, or an endpoint), or None when no agent serves it (an agent from an older pyd):
    the caller then connects by itself."""
    endpoint = ExecEndpoint("unix", os.fspath(where)) if isinstance(where, Path) else where
    framed = use_frames(endpoint, os.environ)
    conn = _connect(endpoint)
    if conn is None:
        return None
    interactive = streams.interactive()
    raw = terminal.RawTerminal(streams.stdin) if interactive else None
    if interactive:
        terminal.wait_for_foreground(streams.stdin)
    term = terminal.term_name(os.environ) if interactive else None
    try:
        if not framed:
            assert isinstance(conn, socket.socket)
            try:
                return _run(_Link(conn, raw), ExecRequest(command, term), streams, interactive)
            except _PassingFailed:
                conn.close()
                again = _connect(endpoint)
                if again is None:
                    return None
                conn = again
        window = terminal.size(streams.stdout) if interactive else None
        request = ExecRequest(command, term, framed=True, window=window)
        link = _FramedLink(conn, raw, streams, interactive)
        return _run(link, request, streams, interactive)
    finally:
        conn.close()
        if raw is not None:
            raw.leave()


def _connect(endpoint: ExecEndpoint) -> HostStream | None:
    """A connection to the agent; None when nobody answers there (none, a stale socket, a
    path too long: nothing is lost)."""
    if endpoint.kind == "pipe":
        if sys.platform != "win32":
            return None
        return _PipeConn.connect(endpoint.address)
    if sys.platform == "win32":  # no AF_UNIX in CPython there
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(endpoint.address)
    except OSError:
        sock.close()
        return None
    return sock


def _served_by_agent(conn: HostStream, pipe: str, server_pid: int | None) -> HostStream | None:
    """`conn` when the process serving `pipe` is the instance's agent as it recorded itself;
    else None, with `conn` closed and a warning: the command then goes over SSH, and
    neither it nor its stdin reaches whoever else took the pipe's name (pyd issue 17)."""
    record = agent_pid_record(pipe)
    agent_pid = recorded_agent_pid(record) if record is not None else None
    if pipe_server_trusted(server_pid, agent_pid):
        return conn
    conn.close()
    print(untrusted_pipe_warning(pipe, server_pid, agent_pid), file=sys.stderr, flush=True)
    return None


def _run(link: _Signals, request: ExecRequest, streams: HostStreams, interactive: bool) -> int:
    try:
        with signals_to(link.on_signal, [*taken_signals(interactive), *_STOP]):
            link.send_request(encode_request(request), streams.fds())
            return link.exit_code()
    except _GaveUp:
        return 128 + signal.SIGINT


_STOP = PAUSE_SIGNALS[:1]  # SIGTSTP; SIGCONT is sent once this process is continued


class _GaveUp(Exception):
    """Ctrl-C pressed INTERRUPTS_TO_GIVE_UP times: stop waiting (the agent is stuck)."""


class _PassingFailed(Exception):
    """The descriptors could not be passed (nothing was sent): frames on a new connection."""


class _Signals:
    """The client's side of one command, whichever way its streams go. Signal handlers run
    in the main thread, between two steps of whatever it does: what they send waits until
    the request has gone."""

    def __init__(self, raw: terminal.RawTerminal | None) -> None:
        self._raw = raw
        self._sent = False
        self._started = False
        self._pending: list[int] = []
        self._interrupts = 0

    def send_request(self, request: bytes, fds: list[int]) -> None:
        raise NotImplementedError

    def exit_code(self) -> int:
        raise NotImplementedError

    def _send(self, signum: int) -> None:
        raise NotImplementedError

    def _request_sent(self) -> None:
        self._sent = True
        pending, self._pending = self._pending, []
        for signum in pending:
            self.on_signal(signum)

    def on_signal(self, signum: int) -> None:
        if not self._sent:
            self._pending.append(signum)
            return
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts >= INTERRUPTS_TO_GIVE_UP:
                raise _GaveUp()
        if signum in _STOP:
            self._stop()
            return
        self._send(signum)

    def _stop(self) -> None:
        """Ctrl-Z: the agent pauses the command's streams, and this process stops (with
        its terminal as it found it) until continued."""
        if sys.platform == "win32":  # no Ctrl-Z signal there (PAUSE_SIGNALS)
            raise NotImplementedError
        self._send(signal.SIGTSTP)
        self._flush()
        if self._raw is not None:
            self._raw.leave()
        os.kill(os.getpid(), signal.SIGSTOP)
        if self._raw is not None and self._started:
            self._raw.enter()
        self._send(signal.SIGCONT)

    def _flush(self) -> None:
        """Returns once what _send() was given has gone to the agent."""
        raise NotImplementedError


class _Link(_Signals):
    """Descriptor passing: the agent reads and writes this process's descriptors."""

    def __init__(self, sock: socket.socket, raw: terminal.RawTerminal | None) -> None:
        super().__init__(raw)
        self._sock = sock

    def send_request(self, request: bytes, fds: list[int]) -> None:
        if sys.platform == "win32":  # never made there (SUPPORTED)
            raise NotImplementedError
        try:
            sent = socket.send_fds(self._sock, [request], fds)
        except (BrokenPipeError, ConnectionResetError):
            sent = len(request)  # the agent hung up early: what it said, if anything, is next
        except OSError as e:
            raise _PassingFailed() from e
        try:
            if sent < len(request):
                self._sock.sendall(request[sent:])
        except (BrokenPipeError, ConnectionResetError):
            pass
        self._request_sent()

    def _send(self, signum: int) -> None:
        with contextlib.suppress(OSError):  # the agent has gone: exit_code() says so
            self._sock.sendall(signal_message(signum))

    def _flush(self) -> None:
        """What _send() sent has gone (it sends at once)."""

    def exit_code(self) -> int:
        with self._sock.makefile("rb") as lines:
            for line in lines:
                try:
                    message = decode_message(line)
                except ProtocolError:
                    continue
                if message.get("started"):
                    # The guest's PTY exists now: keys go to it raw from here on, and a
                    # Ctrl-C before this point still reached pyd (as with `ssh -t`).
                    self._started = True
                    if self._raw is not None:
                        self._raw.enter()
                    continue
                code = message.get("exit")
                if not isinstance(code, int):
                    continue
                if message.get("error"):
                    raise AgentCommandError(
                        str(message["error"]), str(message.get("hint", "")), code
                    )
                return code
        raise _no_exit_code()


def _no_exit_code(why: str = "") -> AgentCommandError:
    return AgentCommandError(
        f"the instance's agent ended before docker did (no exit code came back{why})",
        "`pyd status` shows the instance's state; the command may have run or not",
        1,
    )


_Outgoing = bytes | threading.Event | None  # a frame, a flush marker, the end


class _FramedLink(_Signals):
    """Frames: this process copies its stdin to the agent (within the credit the agent
    gives back as it writes), and the agent's output to its stdout and stderr. One thread
    sends every frame, in order; the main thread reads the agent's."""

    def __init__(
        self,
        conn: HostStream,
        raw: terminal.RawTerminal | None,
        streams: HostStreams,
        interactive: bool,
    ) -> None:
        super().__init__(raw)
        self._conn = conn
        self._streams = streams
        self._interactive = interactive
        self._outgoing: queue.SimpleQueue[_Outgoing] = queue.SimpleQueue()  # put is reentrant
        self._credit = STDIN_CREDIT
        self._credit_changed = threading.Condition()
        self._done = threading.Event()
        self._closed: set[int] = set()  # our outputs that went away (CLOSED told)

    def send_request(self, request: bytes, fds: list[int]) -> None:
        with contextlib.suppress(OSError):  # the agent hung up early: what it said is next
            self._conn.sendall(request)
        daemon_thread(self._send_frames, "pyd-docker-send")
        daemon_thread(self._copy_stdin, "pyd-docker-in")
        if terminal.window_polled(sys.platform) and self._interactive:
            daemon_thread(self._poll_window, "pyd-docker-window")
        self._request_sent()

    def _send(self, signum: int) -> None:
        if sys.platform != "win32" and signum == signal.SIGWINCH:
            self._outgoing.put(window_frame(*terminal.size(self._streams.stdout)))
        else:
            self._outgoing.put(signal_frame(signum))

    def _flush(self) -> None:
        sent = threading.Event()
        self._outgoing.put(sent)
        sent.wait(FLUSH_WAIT)

    def _send_frames(self) -> None:
        try:
            while (item := self._outgoing.get()) is not None:
                if isinstance(item, threading.Event):
                    item.set()
                else:
                    self._conn.sendall(item)
        except OSError:
            pass  # the agent has gone: exit_code() says so

    def _copy_stdin(self) -> None:
        """Within the credit, like ssh's window; only its end when stdin is a terminal the
        command does not use (as `ssh -n`: nothing typed for the shell is taken)."""
        fd = self._streams.stdin
        try:
            if self._interactive or not os.isatty(fd):
                while True:
                    with self._credit_changed:
                        self._credit_changed.wait_for(lambda: self._credit or self._done.is_set())
                        if self._done.is_set():
                            return
                        n = min(self._credit, MAX_FRAME)
                    data = os.read(fd, n)
                    if not data:
                        break
                    with self._credit_changed:
                        self._credit -= len(data)
                    self._outgoing.put(frame(Kind.STDIN, data))
        except OSError:
            pass  # stdin failed (a terminal that hung up): its end, as for ssh
        self._outgoing.put(frame(Kind.STDIN_EOF))

    def _poll_window(self) -> None:
        """A Windows console says nothing when resized: look every WINDOW_POLL."""
        terminal.poll_window(
            lambda: terminal.size(self._streams.stdout),
            lambda size: self._outgoing.put(window_frame(*size)),
            self._done,
            WINDOW_POLL,
        )

    def exit_code(self) -> int:
        try:
            return self._read_frames()
        except ProtocolError as e:
            raise _no_exit_code(f": {e}") from None
        finally:
            self._done.set()
            with self._credit_changed:
                self._credit_changed.notify_all()
            self._outgoing.put(None)

    def _read_frames(self) -> int:
        outputs = {Kind.STDOUT: 1, Kind.STDERR: 2}
        fds = {1: self._streams.stdout, 2: self._streams.stderr}
        try:
            while (got := read_frame(self._conn.recv, TO_CLIENT)) is not None:
                kind, payload = got
                which = outputs.get(kind)
                if which is not None:
                    if which not in self._closed:
                        try:
                            write_all(fds[which], payload)
                        except OSError:
                            # Its reader went away (`| head`): the command's next write
                            # fails as it would here.
                            self._closed.add(which)
                            self._outgoing.put(closed_frame(which))
                elif kind is Kind.STDIN_ACK:
                    with self._credit_changed:
                        self._credit += parse_number(payload)
                        self._credit_changed.notify()
                elif kind is Kind.STARTED:
                    # As with descriptors: raw from here on (see _Link.exit_code).
                    self._started = True
                    if self._raw is not None:
                        self._raw.enter()
                else:  # EXIT
                    code, error, hint = parse_exit(payload)
                    if error:
                        raise AgentCommandError(error, hint, code)
                    return code
        except (ConnectionResetError, BrokenPipeError):
            pass
        raise _no_exit_code()


if sys.platform == "win32":
    import _winapi
    import ctypes
    import functools
    from ctypes import wintypes

    _PIPE_CLOSED = (109, 232, 233)  # ERROR_BROKEN_PIPE, ERROR_NO_DATA, ERROR_PIPE_NOT_CONNECTED
    _WAIT_SLICE = 100  # ms: the main thread waits in slices, so Ctrl-C's handler runs

    class _PipeConn:
        """The client end of the agent's pipe, overlapped: a read waiting in one thread
        must not hold up a write from another (a synchronous handle serialises them)."""

        def __init__(self, handle: int) -> None:
            self._handle = handle

        @classmethod
        def connect(cls, name: str) -> HostStream | None:
            """The agent's pipe, or None: nobody serves it, or not the agent."""
            access = _winapi.GENERIC_READ | _winapi.GENERIC_WRITE
            # Identification only: whoever serves the name cannot act as this user.
            flags = _winapi.FILE_FLAG_OVERLAPPED | PIPE_CLIENT_SQOS
            for _ in range(2):
                try:
                    handle = _winapi.CreateFile(
                        name, access, 0, _winapi.NULL, _winapi.OPEN_EXISTING, flags, _winapi.NULL
                    )
                except OSError as e:
                    if getattr(e, "winerror", None) != _winapi.ERROR_PIPE_BUSY:
                        return None  # no agent (or not ours: the DACL refused us)
                    with contextlib.suppress(OSError):
                        _winapi.WaitNamedPipe(name, 1000)
                    continue
                return _served_by_agent(cls(handle), name, _server_pid(handle))
            return None

        def _finish(self, ov: _winapi.Overlapped, err: int) -> int:
            try:
                if err == _winapi.ERROR_IO_PENDING:
                    while (
                        _winapi.WaitForMultipleObjects([ov.event], False, _WAIT_SLICE)
                        == _winapi.WAIT_TIMEOUT
                    ):
                        pass
            except BaseException:  # a signal handler's exception (giving up): cancel it
                ov.cancel()
                with contextlib.suppress(OSError):
                    ov.GetOverlappedResult(True)
                raise
            n, _err = ov.GetOverlappedResult(True)
            return n

        def recv(self, bufsize: int, /) -> bytes:
            try:
                ov, err = _winapi.ReadFile(self._handle, bufsize, overlapped=True)
                n = self._finish(ov, err)
            except OSError as e:
                if getattr(e, "winerror", None) in _PIPE_CLOSED:
                    return b""
                raise
            # A zero-byte read is the agent's zero-length message: its end of writing.
            return (ov.getbuffer() or b"")[:n]

        def sendall(self, data: bytes, /) -> None:
            view = memoryview(data)
            while view:
                ov, err = _winapi.WriteFile(self._handle, view, overlapped=True)
                view = view[self._finish(ov, err) :]

        def shutdown(self, how: int, /) -> None:
            """Nothing to half-close on the client's side: close() ends it."""

        def close(self) -> None:
            if self._handle:
                _winapi.CloseHandle(self._handle)
                self._handle = 0

    @functools.cache
    def _get_server_pid() -> Any:
        k32 = ctypes.WinDLL("kernel32", use_last_error=True)
        f = k32.GetNamedPipeServerProcessId
        f.restype = wintypes.BOOL
        f.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.ULONG)]
        return f

    def _server_pid(handle: int) -> int | None:
        """The pid of the process serving the pipe at the other end of `handle`."""
        pid = wintypes.ULONG()
        if not _get_server_pid()(handle, ctypes.byref(pid)):
            return None
        return int(pid.value)

else:

    class _PipeConn:
        """Named pipes exist on Windows only."""

        @classmethod
        def connect(cls, name: str) -> HostStream | None:
            return None
