"""A share's SSH session through the system's OpenSSH client, as Lima runs it: `ssh … sshfs
-o slave` with its stdin and stdout tied by OS pipes to the share's SFTP server process (the
built-in `python -m pyd.mounts.sftp_serve`, or a confined sftp-server: pyd.mounts.sftp_host),
so no byte of a share passes through the agent.

Why not the agent's own paramiko connection (still the fallback): in a small-file walk every
SFTP request crosses paramiko's transport thread and two relay threads. Measured here
(bench/mounts.py, a 1,000-file walk): 1.0-1.4 s of agent CPU against 0.4 s for ssh +
sftp-server, and a median 0.48 ms from request to reply on the host
against 0.18 ms (tcpdump on the loopback). On a fast (hvf, kvm) guest that reply time is most
of each round trip, and sshfs makes two or three per small file. The cost: one more SSH
connection and one ssh process (a few MB) per share.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyd.ssh.openssh import ssh_argv

ENV = "PYD_SHARE_SSH"  # "agent": shares ride on the agent's connection even with ssh here
STDERR_KEPT = 4096  # the end of ssh's and sshfs's messages, for the reason a mount ended


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
        # again rather than wait on it for ever. OpenSSH's own cipher choice stays: in the
        # guest (openssl speed, TCG) chacha20-poly1305 costs least for small packets (36 MB/s
        # at 128 bytes; aes128-gcm 17, hmac-sha2-512 alone 10) and as little as any for 32 KiB.
        options = ["-F", "none", "-T", "-x", "-a"]
        options += ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        return [argv[0], *options, *argv[1:]]


def find_endpoint(
    port: int, key: Path, known_hosts: Path, env: Mapping[str, str]
) -> OpenSSHEndpoint | None:
    """The endpoint when an OpenSSH client is on PATH, else None (the agent's connection
    carries the shares)."""
    ssh = shutil.which("ssh")
    if not ssh or env.get(ENV, "").strip() == "agent":
        return None
    return OpenSSHEndpoint(ssh, port, key, known_hosts)


class OpenSSHLink:
    """`ssh … COMMAND` and an SFTP server process, each one's stdout the other's stdin (the
    server's stderr is the agent's, i.e. its log)."""

    def __init__(self, ssh_argv: Sequence[str], server_argv: Sequence[str]) -> None:
        self._stderr = bytearray()
        self.server = subprocess.Popen(
            list(server_argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
        )
        assert self.server.stdin is not None and self.server.stdout is not None
        try:
            self.ssh = subprocess.Popen(
                list(ssh_argv),
                stdin=self.server.stdout,
                stdout=self.server.stdin,
                stderr=subprocess.PIPE,
                close_fds=True,
            )
        except OSError:
            self._end(self.server)
            raise
        # Only the two children hold the pipes now: either one's exit ends the other's input.
        self.server.stdin.close()
        self.server.stdout.close()
        self._reader = threading.Thread(target=self._keep_stderr, daemon=True)
        self._reader.start()

    def wait(self) -> int:
        """Blocks until ssh exits (the connection or sshfs ended); its exit status."""
        code = self.ssh.wait()
        self._reader.join(timeout=5)
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
        """Ends both processes: sshfs in the guest sees the end of its input and unmounts."""
        self._end(self.ssh)
        self._end(self.server)

    def _keep_stderr(self) -> None:
        assert self.ssh.stderr is not None
        with self.ssh.stderr as err:
            for chunk in iter(lambda: os.read(err.fileno(), 4096), b""):
                self._stderr += chunk
                del self._stderr[:-STDERR_KEPT]

    @staticmethod
    def _end(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
