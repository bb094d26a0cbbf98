"""`pyd ssh` runs the system's OpenSSH client with the instance key and the pinned guest
host key: a real terminal, agent-free, and no trust-on-first-use."""

from __future__ import annotations

import shlex
from pathlib import Path

from pyd.ssh.keys import pinned_host_key

GUEST_HOST = "127.0.0.1"  # QEMU forwards the guest's SSH from host loopback only


def known_hosts_line(port: int, host_public_key: str) -> str:
    return pinned_host_key(GUEST_HOST, port, host_public_key).known_hosts_line


def ssh_argv(
    ssh: str, port: int, key: Path, known_hosts: Path, command: list[str], tty: bool
) -> list[str]:
    argv = [
        ssh,
        "-p",
        str(port),
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "PasswordAuthentication=no",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
    ]
    if tty:
        argv.append("-t")
    argv.append(f"root@{GUEST_HOST}")
    if command:
        argv.append(remote_command(command))
    return argv


def remote_command(words: list[str]) -> str:
    """One word is a shell line (`pyd ssh -- 'ls | wc -l'`); several are quoted so the
    guest sees the same argv."""
    return words[0] if len(words) == 1 else " ".join(shlex.quote(w) for w in words)
