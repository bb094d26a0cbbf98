"""A stand-in guest for `pyd docker` tests: an SSH server on loopback (tests/unit/execserver.py)
whose commands run in a real local shell, with a `docker` first on its PATH that runs its
arguments as a command (`docker sh -c 'exit 3'`), so every test sees exactly what a docker
CLI in the guest would have been given."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko

from pyd.ssh.connect import SSHTarget, connect
from pyd.ssh.keys import generate_keypair, write_private
from tests.unit.execserver import ExecSSHServer
from tests.unit.sshserver import host_keypair

FAKE_DOCKER = '#!/bin/sh\nexec "$@"\n'


@dataclass
class Guest:
    server: ExecSSHServer
    bin: Path  # first on the guest's PATH
    home: Path
    key: Path

    def connect(self) -> paramiko.SSHClient:
        return connect(
            SSHTarget(
                "127.0.0.1", self.server.port, "root", self.key, host_keypair().public_openssh
            )
        )


def make_guest(tmp: Path, shell: str = "/bin/sh") -> Guest:
    bin_dir, home = tmp / "bin", tmp / "home"
    bin_dir.mkdir()
    home.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    key = tmp / "id_ed25519"
    write_private(key, generate_keypair("test").private_openssh)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home), "LC_ALL": "C.UTF-8"}
    return Guest(ExecSSHServer(shell, env), bin_dir, home, key)


@contextlib.contextmanager
def running_guest(tmp: Path, shell: str = "/bin/sh") -> Iterator[Guest]:
    g = make_guest(tmp, shell)
    try:
        yield g
    finally:
        g.server.close()


@contextlib.contextmanager
def connected(guest: Guest, watchdog: float | None = None) -> Iterator[paramiko.Transport]:
    """A connection to `guest`, cut after `watchdog` seconds (a test that hangs ends)."""
    client = guest.connect()
    transport = client.get_transport()
    assert transport is not None
    timer = threading.Timer(watchdog, client.close) if watchdog else None
    if timer is not None:
        timer.start()
    try:
        yield transport
    finally:
        if timer is not None:
            timer.cancel()
        client.close()
