"""The host's side of a share: who answers sshfs's SFTP requests, and how it is confined.

Every server runs as a process whose stdin and stdout carry SFTP (piped straight to the
share's OpenSSH session, or relayed on the agent's connection), and none can reach anything
outside its share, whatever links the guest makes:
- "builtin" (the default but on Linux): pyd's own server, `python -m pyd.mounts.sftp_serve`,
  which walks every path from a descriptor of the share with O_NOFOLLOW
  (pyd.mounts.sftp_server says how, and what it cannot close on Windows).
- "openssh" (the default on Linux, see default_server): OpenSSH's `sftp-server` (what Lima
  runs, in C, with `-R` for read-only shares) works by path and follows symlinks, so it
  runs only where the OS confines it: on Linux in a mount namespace whose root holds only
  the share (pyd.mounts.confine_linux; root, or a user namespace), on macOS under
  sandbox-exec (pyd.mounts.sandbox_macos). Elsewhere (Windows, or a Linux without
  namespaces for this user) the built-in server answers instead, and the agent log says so.

PYD_SFTP_SERVER picks: "builtin", "openssh" (the system's sftp-server), or the path of an
OpenSSH-compatible sftp-server.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

BUILTIN = "builtin"
OPENSSH = "openssh"
ENV = "PYD_SFTP_SERVER"

# How a server is kept inside its share.
WALK = "walk"  # the built-in server's own descriptor walk
NAMESPACE = "namespace"  # Linux: a mount namespace holding only the share
SANDBOX = "sandbox"  # macOS: sandbox-exec

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


@dataclass(frozen=True)
class SftpServer:
    """The chosen server: `program` is BUILTIN or an sftp-server's path; `note` says why it is
    not the one asked for (empty when it is)."""

    program: str
    confinement: str
    note: str = ""

    @property
    def builtin(self) -> bool:
        return self.program == BUILTIN

    def argv(self, location: str, writable: bool) -> list[str]:
        """The command that serves the share at `location` on its stdin and stdout."""
        if self.builtin:
            ro = () if writable else ("--read-only",)
            return [sys.executable, "-m", "pyd.mounts.sftp_serve", location, *ro]
        server = [self.program, "-e", *(() if writable else ("-R",))]
        if self.confinement == NAMESPACE:
            ro = () if writable else ("--read-only",)
            return [sys.executable, "-m", "pyd.mounts.confine_linux", location, *ro, "--", *server]
        if self.confinement == SANDBOX:
            from pyd.mounts.sandbox_macos import sandbox_argv

            paths = [os.path.abspath(location), os.path.realpath(location)]
            return sandbox_argv(paths, writable, self.program, server[1:])
        raise ValueError(f"unconfined server {self.program}")

    def for_share(self, location: str) -> SftpServer:
        """This server for one share, or the built-in one (with a note) for a share the
        namespace cannot hold: "/" itself, or one that overlaps /etc, /dev, /usr, /lib*, ..."""
        if self.confinement == NAMESPACE and sys.platform == "linux":
            from pyd.mounts.confine_linux import collision

            taken = collision(location, self.program)
            if taken is not None:
                why = f"{self.program} cannot be confined to {location} (it overlaps {taken})"
                return SftpServer(BUILTIN, WALK, why)
        return self

    def describe(self) -> str:
        if self.builtin:
            return "pyd's built-in SFTP server"
        how = {NAMESPACE: "a mount namespace", SANDBOX: "sandbox-exec"}[self.confinement]
        return f"{self.program} confined by {how}"


def system_server(platform: str, exists: Callable[[str], bool] = os.path.exists) -> str | None:
    key = "linux" if platform.startswith("linux") else platform
    return next((p for p in _SYSTEM_SERVERS.get(key, ()) if exists(p)), None)


def default_server(platform: str) -> str:
    """What PYD_SFTP_SERVER means when unset: on Linux the system's sftp-server in its
    namespace (C, faster than the built-in server's Python, above all on small files;
    bench/mounts.py compares them), elsewhere the built-in server (macOS's sandbox profile
    has not been tried on a Mac; Windows cannot confine at all)."""
    return OPENSSH if platform.startswith("linux") else BUILTIN


def choose_server(
    platform: str,
    env: Mapping[str, str],
    exists: Callable[[str], bool] = os.path.exists,
    can_confine: Callable[[str], bool] | None = None,
) -> SftpServer:
    """The server PYD_SFTP_SERVER asks for (default_server when unset), if it can be
    confined here; else the built-in one, with a note why. `can_confine(platform)` tells
    whether the OS can confine a process to a share (default: `confinable`)."""
    asked = env.get(ENV, "").strip()
    wanted = asked or default_server(platform)
    if wanted == BUILTIN:
        return SftpServer(BUILTIN, WALK)
    by = f"{ENV}={asked}: " if asked else ""
    program = system_server(platform, exists) if wanted == OPENSSH else wanted
    if program is None:
        return SftpServer(BUILTIN, WALK, f"{by}no OpenSSH sftp-server here")
    check = can_confine or confinable
    if platform.startswith("linux") and check(platform):
        return SftpServer(program, NAMESPACE)
    if platform == "darwin" and check(platform):
        return SftpServer(program, SANDBOX)
    return SftpServer(BUILTIN, WALK, f"{by}{program} cannot be confined to a share on this host")


def confinable(platform: str) -> bool:
    """Whether this host can confine sftp-server: a namespace can be made (Linux; tried in a
    child process), or sandbox-exec exists (macOS). Never on Windows."""
    if platform.startswith("linux"):
        probe = [sys.executable, "-m", "pyd.mounts.confine_linux", "--probe"]
        try:
            done = subprocess.run(probe, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0
    if platform == "darwin":
        from pyd.mounts.sandbox_macos import SANDBOX_EXEC

        return os.path.exists(SANDBOX_EXEC)
    return False


def remote_path(location: str, platform: str) -> str:
    """The share's path as sshfs asks the SFTP server for it. Windows' OpenSSH names
    `C:\\Users\\me` as `/C:/Users/me`; POSIX paths are themselves."""
    if platform == "win32":
        return "/" + location.replace("\\", "/")
    return location


class ProcessStream:
    """An SFTP server process as the relay's host side (pyd.relay.pump.HostStream):
    recv reads its stdout, sendall writes its stdin, shutdown ends its stdin."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True
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
