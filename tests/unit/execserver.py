"""An SSH server on loopback TCP that runs "exec" requests with a real local shell, the way
sshd does: `SHELL -c COMMAND` in a new session (its own process group), stdout and stderr
as the channel's two streams, stdin until EOF, and a PTY (with TERM and window changes) when
the client asks for one; exit-status at the end, none when a signal killed the shell (sshd
sends exit-signal then, which paramiko clients drop). Built on tests/unit/sshserver.py."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import paramiko
from paramiko.common import MSG_CHANNEL_SUCCESS

from pyd.ssh.streamlocal import KIND as STREAMLOCAL
from tests.unit.sshserver import AllowAnyone, SSHServer

BUFSIZE = 64 * 1024

# Runs in the child: makes the PTY (already its stdin) its controlling terminal, so that
# Ctrl-C typed there becomes SIGINT for its process group, then becomes the shell.
_CTTY = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


@dataclass
class PtyRequest:
    term: str
    columns: int
    rows: int
    master: int | None = None
    resized: list[tuple[int, int]] = field(default_factory=list)
    resize_seen: threading.Event = field(default_factory=threading.Event)


class ExecInterface(AllowAnyone):
    """Session channels with exec and pty requests; each exec starts a process at once."""

    def __init__(self, server: ExecSSHServer) -> None:
        self._server = server
        self._ptys: dict[int, PtyRequest] = {}

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        if kind == STREAMLOCAL and self._server.unix_socket is not None:
            self._server.unix_channels.add(chanid)  # whatever its path: one service here
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(
        self,
        channel: paramiko.Channel,
        term: bytes,
        width: int,
        height: int,
        pixelwidth: int,
        pixelheight: int,
        modes: bytes,
    ) -> bool:
        self._ptys[channel.get_id()] = PtyRequest(term.decode(), width, height)
        return True

    def check_channel_window_change_request(
        self, channel: paramiko.Channel, width: int, height: int, pw: int, ph: int
    ) -> bool:
        pty = self._ptys.get(channel.get_id())
        if pty is None or pty.master is None:
            return False
        _set_size(pty.master, width, height)
        pty.resized.append((width, height))
        pty.resize_seen.set()
        return True

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        pty = self._ptys.get(channel.get_id())
        self._server.commands.append(command)
        if pty is None:
            self._server.track(_run_piped(channel, command, self._server))
        else:
            self._server.ptys.append(pty)
            self._server.track(_run_in_pty(channel, command, self._server, pty))
        return True


class ExecSSHServer:
    """Listens on 127.0.0.1:`port`; commands run with `shell` and environment `env`. With
    `unix_socket`, a direct-streamlocal channel (to any path) is served by it in a thread."""

    def __init__(
        self,
        shell: str = "/bin/sh",
        env: Mapping[str, str] | None = None,
        unix_socket: Callable[[paramiko.Channel], None] | None = None,
    ) -> None:
        self.shell = shell
        self.env = dict(os.environ if env is None else env)
        self.unix_socket = unix_socket
        self.unix_channels: set[int] = set()  # ids of the streamlocal channels opened
        self.commands: list[bytes] = []  # what the clients asked to run, in order
        self.sessions: list[paramiko.Channel] = []  # held: see _serve_unix
        self.ptys: list[PtyRequest] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._servers: list[SSHServer] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # until close() closes the listener
            while True:
                conn, _ = self._listener.accept()
                # Session channels need no handler: each exec request starts its own process.
                server = SSHServer(_RepliesCounted(conn), ExecInterface(self), self._serve_unix)
                self._servers.append(server)

    def _serve_unix(self, chan: paramiko.Channel) -> None:
        if self.unix_socket is not None and chan.get_id() in self.unix_channels:
            self.unix_socket(chan)
        else:
            # paramiko's transport holds its channels weakly, and a Channel closes itself when
            # collected: a session must outlive this thread until its exec request comes (two
            # concurrent execs lost one in two runs, "Channel closed").
            self.sessions.append(chan)

    def track(self, proc: subprocess.Popen[bytes]) -> None:
        self._procs.append(proc)

    def close(self) -> None:
        self._listener.close()
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for server in self._servers:
            server.close()


class _RepliesCounted(paramiko.Transport):  # type: ignore[misc]
    """A server Transport that counts the CHANNEL_SUCCESS replies it has sent per channel.

    paramiko replies to an exec request after check_channel_exec_request returns, and our
    command may be over by then: closing the channel before the reply has gone out would
    make the client's exec_command fail ("Channel closed"). sshd always replies first; this
    lets the test server wait for its reply too. (Overrides a paramiko internal: test-only.)
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._replied: dict[int, int] = {}
        self._replies = threading.Condition()

    def _send_user_message(self, data: paramiko.Message) -> None:
        super()._send_user_message(data)
        m = paramiko.Message(data.asbytes())
        if m.get_byte()[0] == MSG_CHANNEL_SUCCESS:
            with self._replies:
                chanid = m.get_int()
                self._replied[chanid] = self._replied.get(chanid, 0) + 1
                self._replies.notify_all()

    def wait_replied(self, chan: paramiko.Channel, count: int, timeout: float = 30) -> None:
        with self._replies:
            self._replies.wait_for(
                lambda: self._replied.get(chan.remote_chanid, 0) >= count, timeout
            )


def _run_piped(
    chan: paramiko.Channel, command: bytes, server: ExecSSHServer
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [server.shell, "-c", command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server.env,
        start_new_session=True,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    _daemon(lambda: _channel_to_fd(chan, stdin.fileno(), stdin.close))
    out = _daemon(lambda: _fd_to_channel(stdout.fileno(), chan.sendall, stdout.close))
    err = _daemon(lambda: _fd_to_channel(stderr.fileno(), chan.sendall_stderr, stderr.close))
    _daemon(lambda: _finish(chan, proc, [out, err], replies=1))
    return proc


def _run_in_pty(
    chan: paramiko.Channel, command: bytes, server: ExecSSHServer, pty: PtyRequest
) -> subprocess.Popen[bytes]:
    master, slave = os.openpty()
    _set_size(master, pty.columns, pty.rows)
    pty.master = master
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTTY, server.shell, "-c", command],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**server.env, "TERM": pty.term},
        start_new_session=True,
    )
    os.close(slave)
    typed = _daemon(lambda: _channel_to_fd(chan, master, lambda: None))
    out = _daemon(lambda: _fd_to_channel(master, chan.sendall, lambda: None))

    def close_master() -> None:
        typed.join()  # ends once the channel is closed: then nobody writes to the fd
        os.close(master)

    _daemon(lambda: _finish(chan, proc, [out], 2, close_master))  # pty-req and exec
    return proc


def _channel_to_fd(chan: paramiko.Channel, fd: int, at_eof: Callable[[], None]) -> None:
    try:
        while data := chan.recv(BUFSIZE):
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
    except OSError:
        pass  # the process stopped reading
    finally:
        with contextlib.suppress(OSError):
            at_eof()


def _fd_to_channel(fd: int, send: Callable[[bytes], None], at_end: Callable[[], None]) -> None:
    try:
        while data := os.read(fd, BUFSIZE):
            send(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass  # EIO: the PTY's last user is gone; or the client closed the channel or the link
    finally:
        at_end()  # closing our end makes a writer that goes on get SIGPIPE, as with sshd


def _finish(
    chan: paramiko.Channel,
    proc: subprocess.Popen[bytes],
    readers: list[threading.Thread],
    replies: int,
    after_close: Callable[[], None] = lambda: None,
) -> None:
    for t in readers:
        t.join()
    code = proc.wait()
    transport = chan.get_transport()
    assert isinstance(transport, _RepliesCounted)
    transport.wait_replied(chan, replies)
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        chan.shutdown_write()
        if code >= 0:
            chan.send_exit_status(code)
        chan.close()
    after_close()


def _set_size(fd: int, columns: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def _daemon(target: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t
