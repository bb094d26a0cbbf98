"""A reconnecting share's host side (pyd.mounts.sshfs says why): a socket on the host that
gives every connection its own SFTP server process, and the OpenSSH session that binds the
share's socket in the guest to it (`ssh -R GUEST_SOCKET:HOST_SOCKET`) for as long as it runs.

Each connection is the server's stdin and stdout (the built-in `python -m
pyd.mounts.sftp_serve`, or a confined sftp-server: pyd.mounts.sftp_host), so no byte of a
share passes through the agent, as with pyd.mounts.openssh_link. The host socket lives in a
directory only this user may enter: whoever connects reads and writes the share.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence

from pyd.host.threads import Deadline, join_threads
from pyd.mounts.openssh_link import STDERR_KEPT, STOP_WAIT


class ShareSocket:
    """Listens on a fresh Unix socket; each connection gets `server_argv` with the connection
    as its stdin and stdout. A thread owner (pyd.host.threads): `start()` listens, `close()`
    stops listening and ends the servers, `join(deadline)` reaps them."""

    path: str
    _argv: list[str]
    _dir: str
    _sock: socket.socket
    _servers: list[subprocess.Popen[bytes]]
    _lock: threading.Lock
    _closed: bool
    _thread: threading.Thread

    def __init__(self, server_argv: Sequence[str]) -> None:
        if sys.platform == "win32":  # worker.reconnects() keeps Windows on slave mounts
            raise OSError("no Unix sockets a server process can take as its stdio")
        self._argv = list(server_argv)
        self._dir = tempfile.mkdtemp(prefix="pyd-share-")  # 0700: this user's only
        self.path = os.path.join(self._dir, "sftp.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._servers = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="share socket", daemon=True)

    def start(self) -> None:
        self._sock.bind(self.path)
        self._sock.listen(8)
        self._thread.start()

    def connections(self) -> int:
        """How many servers ran so far (each connection, each reconnect, gets one)."""
        with self._lock:
            return len(self._servers)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            servers = list(self._servers)
        # shutdown wakes accept(); close alone would not on Linux.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for proc in servers:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.terminate()

    def join(self, deadline: Deadline) -> bool:
        ended = join_threads([self._thread], deadline)
        with self._lock:
            servers = list(self._servers)
        for proc in servers:
            try:
                proc.wait(timeout=deadline.left())
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                ended = False
        shutil.rmtree(self._dir, ignore_errors=True)
        return ended

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            with conn, self._lock:
                if self._closed:
                    return
                # Servers that ended (their connection did) are reaped as new ones come.
                self._servers = [p for p in self._servers if p.poll() is None]
                try:
                    proc = subprocess.Popen(
                        self._argv, stdin=conn.fileno(), stdout=conn.fileno(), close_fds=True
                    )
                except OSError:
                    continue  # sshfs sees the connection end and says EIO; next one tries again
                self._servers.append(proc)


class ForwardedSession:
    """`ssh -R GUEST:HOST … COMMAND`: reads the command's output a line at a time, keeps the
    end of ssh's and the command's messages, and ends when closed (the command's stdin
    ends) or when the connection does. A thread owner: `start()`, `close()`, `join()`."""

    def __init__(self, ssh_argv: Sequence[str]) -> None:
        self._argv = list(ssh_argv)
        self._stderr = bytearray()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            self._argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
        )
        self._reader = threading.Thread(target=self._keep_stderr, daemon=True)
        self._reader.start()

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self._proc is not None, "not started"
        return self._proc

    def readline(self) -> str | None:
        """The command's next output line; None once it ended."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        return line.decode(errors="replace").strip() if line else None

    def wait(self) -> int:
        code = self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=STOP_WAIT)
        return code

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ended(self) -> str:
        code = self.proc.poll()
        text = " ".join(bytes(self._stderr).decode(errors="replace").split())[-300:]
        how = f"ssh exited with status {code}" if code is not None else "ssh is running"
        return f"{how}: {text}" if text else how

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(OSError):
                self._proc.terminate()

    def join(self, deadline: Deadline) -> bool:
        if self._proc is None:
            return True
        ended = True
        try:
            self._proc.wait(timeout=deadline.left())
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            ended = False
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if self._reader is not None:
            ended = join_threads([self._reader], deadline) and ended
        return ended

    def _keep_stderr(self) -> None:
        assert self.proc.stderr is not None
        with self.proc.stderr as err:
            for chunk in iter(lambda: os.read(err.fileno(), 4096), b""):
                self._stderr += chunk
                del self._stderr[:-STDERR_KEPT]
