"""A share's SSH session through the system's OpenSSH client, as Lima runs it: `ssh … sshfs
-o slave` with its stdin and stdout tied by OS pipes to the share's SFTP server process (the
built-in `python -m pyd.mounts.sftp_serve`, or a confined sftp-server: pyd.mounts.sftp_host),
so no byte of a share passes through the agent.

Why not the agent's own paramiko connection (still the fallback): in a small-file walk every
SFTP request crosses paramiko's transport thread and two relay threads: agent CPU, and a later
reply, while on a fast (hvf, kvm) guest the host's reply time is most of each round trip
(sshfs makes two or three per small file). The cost: one more SSH connection and one ssh
process per share.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyd.host.programs import Exists, find_ssh, is_executable
from pyd.host.threads import Deadline, join_threads
from pyd.ssh.openssh import ssh_argv

ENV = "PYD_SHARE_SSH"  # "agent": shares ride on the agent's connection even with ssh here
STDERR_KEPT = 4096  # the end of ssh's and sshfs's messages, for the reason a mount ended
STOP_WAIT = 5.0  # seconds ssh and the server get to exit after SIGTERM before SIGKILL


@dataclass(frozen=True)
class OpenSSHEndpoint:
    """How the agent reaches the guest with the system's ssh: the instance's key and the
    guest's pinned host key (known_hosts), never the user's ssh config or agent."""

    ssh: str
    port: int
    key: Path
    known_hosts: Path

    def argv(self, command: str) -> list[str]:
        argv = ssh_argv(self.ssh, self.port, self.key, self.known_hosts, [command], False)
        # -F none: a ControlMaster, ProxyCommand or Host * block in ~/.ssh/config must not
        # apply to the guest. -T -x -a: no terminal, X11 or agent for a byte stream. Alive
        # checks end a connection whose guest is gone for a minute, so the worker mounts
        # again rather than wait on it for ever. OpenSSH's own cipher choice stays: in an
        # emulated guest chacha20-poly1305 costs least for small packets, and as little as
        # any for large ones.
        options = ["-F", "none", "-T", "-x", "-a"]
        options += ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        return [argv[0], *options, *argv[1:]]

    def forward_argv(self, command: str, guest_socket: str, host_socket: str) -> list[str]:
        """argv() with the guest's `guest_socket` forwarded to the host's `host_socket` for
        as long as the session lasts. sshd binds it before it runs `command`."""
        argv = self.argv(command)
        return [argv[0], "-R", f"{guest_socket}:{host_socket}", *argv[1:]]


def find_endpoint(
    port: int,
    key: Path,
    known_hosts: Path,
    env: Mapping[str, str],
    system: str = sys.platform,
    exists: Exists = is_executable,
) -> OpenSSHEndpoint | None:
    """The endpoint when an OpenSSH client is installed (host.programs.find_ssh: PATH, and
    Windows' OpenSSH folder), else None (the agent's connection carries the shares)."""
    if env.get(ENV, "").strip() == "agent":
        return None
    ssh = find_ssh(system, env, exists)
    if ssh is None:
        return None
    return OpenSSHEndpoint(ssh, port, key, known_hosts)


class OpenSSHLink:
    """`ssh … COMMAND` and an SFTP server process, each one's stdout the other's stdin (the
    server's stderr is the agent's, i.e. its log). A thread owner (pyd.host.threads):
    `start()` runs both processes, `close()` asks both to end, `join(deadline)` reaps them."""

    def __init__(self, ssh_argv: Sequence[str], server_argv: Sequence[str]) -> None:
        self._ssh_argv = list(ssh_argv)
        self._server_argv = list(server_argv)
        self._stderr = bytearray()
        self._procs: tuple[subprocess.Popen[bytes], ...] = ()  # once started: server, ssh
        self._reader: threading.Thread | None = None

    @property
    def server(self) -> subprocess.Popen[bytes]:
        assert self._procs, "not started"
        return self._procs[0]

    @property
    def ssh(self) -> subprocess.Popen[bytes]:
        assert self._procs, "not started"
        return self._procs[1]

    def start(self) -> None:
        """Starts the server, then ssh; raises OSError (leaving nothing behind) when either
        cannot be run."""
        server = subprocess.Popen(
            self._server_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
        )
        assert server.stdin is not None and server.stdout is not None
        try:
            ssh = subprocess.Popen(
                self._ssh_argv,
                stdin=server.stdout,
                stdout=server.stdin,
                stderr=subprocess.PIPE,
                close_fds=True,
            )
        except OSError:
            _terminate(server)
            _reap(server, Deadline(STOP_WAIT))
            raise
        self._procs = (server, ssh)
        # Only the two children hold the pipes now: either one's exit ends the other's input.
        server.stdin.close()
        server.stdout.close()
        self._reader = threading.Thread(target=self._keep_stderr, daemon=True)
        self._reader.start()

    def wait(self) -> int:
        """Blocks until ssh exits (the connection or sshfs ended); its exit status."""
        code = self.ssh.wait()
        if self._reader is not None:
            self._reader.join(timeout=STOP_WAIT)  # ssh's last words, for ended()
        return code

    def running(self) -> bool:
        return self.ssh.poll() is None

    def ended(self) -> str:
        """Why the session ended, in a line: ssh's exit status and the last words of ssh
        and sshfs."""
        code = self.ssh.poll()
        text = " ".join(bytes(self._stderr).decode(errors="replace").split())[-300:]
        how = f"ssh exited with status {code}" if code is not None else "ssh is running"
        return f"{how}: {text}" if text else how

    def close(self) -> None:
        """Asks both processes to end (no wait): sshfs in the guest sees the end of its
        input and unmounts."""
        for proc in self._procs:
            _terminate(proc)

    def join(self, deadline: Deadline) -> bool:
        """Reaps both processes, killing what is still running at `deadline`; True when they
        ended by themselves and the stderr reader with them."""
        ended = all([_reap(proc, deadline) for proc in self._procs])
        if self._reader is not None:
            ended = join_threads([self._reader], deadline) and ended
        return ended

    def _keep_stderr(self) -> None:
        assert self.ssh.stderr is not None
        with self.ssh.stderr as err:
            for chunk in iter(lambda: os.read(err.fileno(), 4096), b""):
                self._stderr += chunk
                del self._stderr[:-STDERR_KEPT]


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(OSError):  # it ended just now
            proc.terminate()


def _reap(proc: subprocess.Popen[bytes], deadline: Deadline) -> bool:
    """Waits for `proc` until `deadline`, then kills it; True when it ended in time."""
    try:
        proc.wait(timeout=deadline.left())
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False
