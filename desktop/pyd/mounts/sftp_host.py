"""The host's side of a share: who answers sshfs's SFTP requests.

The system's OpenSSH `sftp-server` where there is one (what Lima runs, in C, with `-R` for
read-only shares), else pyd's built-in server (pyd.mounts.sftp_server), which also confines
every request to the share. PYD_SFTP_SERVER picks one: "builtin", or the path of a server.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Mapping

BUILTIN = "builtin"
ENV = "PYD_SFTP_SERVER"

# Where OpenSSH keeps it: Debian/Ubuntu, Fedora/RHEL, Arch/Alpine, macOS, Windows' OpenSSH.
_SYSTEM_SERVERS = {
    "linux": (
        "/usr/lib/openssh/sftp-server",
        "/usr/libexec/openssh/sftp-server",
        "/usr/lib/ssh/sftp-server",
    ),
    "darwin": ("/usr/libexec/sftp-server",),
    "win32": (r"C:\Windows\System32\OpenSSH\sftp-server.exe",),
}


def choose_server(
    platform: str, env: Mapping[str, str], exists: Callable[[str], bool] = os.path.exists
) -> str:
    """The sftp-server program to run, or BUILTIN."""
    wanted = env.get(ENV, "").strip()
    if wanted:
        return wanted
    key = "linux" if platform.startswith("linux") else platform
    return next((p for p in _SYSTEM_SERVERS.get(key, ()) if exists(p)), BUILTIN)


def remote_path(location: str, platform: str) -> str:
    """The share's path as sshfs asks the SFTP server for it. Windows' OpenSSH names
    `C:\\Users\\me` as `/C:/Users/me`; POSIX paths are themselves."""
    if platform == "win32":
        return "/" + location.replace("\\", "/")
    return location


def server_argv(program: str, writable: bool) -> list[str]:
    """-e: errors to stderr, which is the agent's log. -R: the server refuses writes."""
    return [program, "-e", *(() if writable else ("-R",))]


class ProcessStream:
    """An SFTP server process as the relay's host side (pyd.forward.relay.HostStream):
    recv reads its stdout, sendall writes its stdin, shutdown ends its stdin."""

    def __init__(self, program: str, writable: bool) -> None:
        self.proc = subprocess.Popen(
            server_argv(program, writable),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()

    def recv(self, bufsize: int, /) -> bytes:
        return os.read(self._out, bufsize)

    def sendall(self, data: bytes, /) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._in, view) :]

    def shutdown(self, how: int, /) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            self.proc.wait(timeout=5)  # it exits at the end of its stdin
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
